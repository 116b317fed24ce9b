// Package pinecone is a wire-level fake of Pinecone for tests, the demo and benchmarks: the
// control-plane REST call go-pinecone makes to find an index (DescribeIndex, ListIndexes) and the
// data-plane gRPC VectorService (Upsert, Fetch, Query, DescribeIndexStats, Delete, List), kept in
// memory per namespace. The real go-pinecone client talks to it.
//
// The gRPC service is built at run time from the proto descriptors go-pinecone registers in the
// protobuf global registry, since its generated code is internal to that module.
package pinecone

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
)

// Pinecone's limits on one upsert request.
const (
	MaxUpsertVectors = 1000
	// MaxUpsertBytes is the largest serialized UpsertRequest accepted: Pinecone's 2 MB, decimal.
	MaxUpsertBytes = 2_000_000
	// MaxListLimit is the most ids one List page returns, and its default.
	MaxListLimit = 100
	// MaxDeleteIDs is the most ids one Delete request may carry.
	MaxDeleteIDs = 1000
	// DefaultNamespace is where go-pinecone's default ("" or "__default__") namespace lives.
	DefaultNamespace = "__default__"
	// APIVersion is the API version go-pinecone v5 sends and this fake speaks.
	APIVersion = "2025-10"
)

// Options configure a Server.
type Options struct {
	// Indexes maps index name to dimension (dense, cosine). At least one is required.
	Indexes map[string]int
	// APIKeys are the accepted Api-Key values, on both planes. Empty accepts any non-empty key.
	APIKeys []string
	// ControlAddr is the control plane's listen address; default "127.0.0.1:0".
	ControlAddr string
	// DataAddrs optionally fixes an index's data-plane listen address; default "127.0.0.1:0".
	DataAddrs map[string]string
	// Latency is added to every data-plane call; per index it can be changed with SetLatency.
	Latency time.Duration
	// DiscardValues keeps only ids and metadata, not vector values, so a benchmark of many
	// vectors stays small. Dimensions are still checked; Fetch returns no values and Query
	// fails with FailedPrecondition.
	DiscardValues bool
}

// Server is a running fake: one control-plane HTTP server and one gRPC server per index, as
// Pinecone gives each index its own host.
type Server struct {
	keys    map[string]struct{}
	indexes map[string]*Index
	names   []string

	ctlLn  net.Listener
	ctlSrv *http.Server

	closeOnce sync.Once
	closeErr  error

	verMu      sync.Mutex
	lastAPIVer string
}

// Start starts the control plane and a data plane for each index.
func Start(opts Options) (*Server, error) {
	if len(opts.Indexes) == 0 {
		return nil, errors.New("fake pinecone: no indexes configured")
	}
	sch, err := loadSchema()
	if err != nil {
		return nil, fmt.Errorf("fake pinecone: %w", err)
	}
	s := &Server{keys: map[string]struct{}{}, indexes: map[string]*Index{}}
	for _, k := range opts.APIKeys {
		s.keys[k] = struct{}{}
	}
	s.names = slices.Sorted(maps.Keys(opts.Indexes))
	for _, name := range s.names {
		dim := opts.Indexes[name]
		if name == "" || dim <= 0 {
			_ = s.Close()
			return nil, fmt.Errorf("fake pinecone: index %q: need a name and a positive dimension, got %d", name, dim)
		}
		idx, err := startIndex(s, sch, name, dim, opts.DataAddrs[name], opts)
		if err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("fake pinecone: index %q: %w", name, err)
		}
		s.indexes[name] = idx
	}
	addr := opts.ControlAddr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("fake pinecone: control plane: listen on %s: %w", addr, err)
	}
	s.ctlLn = ln
	s.ctlSrv = &http.Server{Handler: http.HandlerFunc(s.serveControl), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.ctlSrv.Serve(ln) }()
	return s, nil
}

// ControlURL is the control plane's URL, for go-pinecone's NewClientParams.Host.
func (s *Server) ControlURL() string { return "http://" + s.ctlLn.Addr().String() }

// Index returns the named index, or nil.
func (s *Server) Index(name string) *Index { return s.indexes[name] }

// IndexNames lists the configured indexes, sorted.
func (s *Server) IndexNames() []string { return slices.Clone(s.names) }

// LastAPIVersion is the X-Pinecone-Api-Version of the last request on either plane.
func (s *Server) LastAPIVersion() string {
	s.verMu.Lock()
	defer s.verMu.Unlock()
	return s.lastAPIVer
}

func (s *Server) sawAPIVersion(v string) {
	if v == "" {
		return
	}
	s.verMu.Lock()
	s.lastAPIVer = v
	s.verMu.Unlock()
}

func (s *Server) keyOK(key string) bool {
	if key == "" {
		return false
	}
	if len(s.keys) == 0 {
		return true
	}
	_, ok := s.keys[key]
	return ok
}

// Close stops every listener.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.ctlSrv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := s.ctlSrv.Shutdown(ctx); err != nil {
				errs = append(errs, err, s.ctlSrv.Close())
			}
			cancel()
		}
		for _, idx := range s.indexes {
			idx.stop()
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("fake pinecone: close: %w", err)
		}
	})
	return s.closeErr
}

func startIndex(s *Server, sch *schema, name string, dim int, addr string, opts Options) (*Index, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("data plane: listen on %s: %w", addr, err)
	}
	idx := &Index{
		srv:        s,
		sch:        sch,
		name:       name,
		dim:        dim,
		latency:    opts.Latency,
		namespaces: map[string]map[string]stored{},
		calls:      map[string]int64{},
		byCode:     map[string]int64{},
		ln:         ln,
	}
	idx.discard.Store(opts.DiscardValues)
	// Accept requests well over the 2 MB limit so that an oversized upsert gets Pinecone's
	// InvalidArgument from the handler rather than a transport error.
	idx.grpc = grpc.NewServer(grpc.MaxRecvMsgSize(64 << 20))
	idx.grpc.RegisterService(sch.serviceDesc(), idx)
	go func() { _ = idx.grpc.Serve(ln) }()
	return idx, nil
}
