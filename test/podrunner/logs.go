package podrunner

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// The kubelet's log endpoint, so that `kubectl logs` (and client-go's GetLogs) reach the runner's
// processes through the real API server: kube-apiserver proxies
// GET /api/v1/namespaces/{ns}/pods/{pod}/log to https://<node address>:<kubelet port>/containerLogs/{ns}/{pod}/{container}
// using the Node's status.addresses (the harness sets --kubelet-preferred-address-types=InternalIP,
// and the runner's InternalIP is 127.0.0.1) and status.daemonEndpoints.kubeletEndpoint.port.
//
// The server listens on loopback only, with a self-signed certificate (kube-apiserver skips
// verification when it has no --kubelet-certificate-authority) and without authentication, as the
// kubelet's read-only port did: anything on this machine could read the pods' logs.
//
// A container's stdout and stderr share one file, so stream=Stdout/Stderr and timestamps, which
// would need the CRI log format, are refused with 400 rather than answered wrongly.

// followPoll is how often a followed log is checked for new bytes.
const followPoll = 100 * time.Millisecond

// startLogServer listens on a loopback port and serves /containerLogs/ until ctx ends.
func (r *Runner) startLogServer(ctx context.Context) (port int32, wait func(), err error) {
	cert, err := selfSignedCert(r.o.NodeName)
	if err != nil {
		return 0, nil, fmt.Errorf("podrunner: log server certificate: %w", err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort(loopback, "0"))
	if err != nil {
		return 0, nil, fmt.Errorf("podrunner: log server listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", r.serveContainerLogs)
	mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
		http.Error(w, fmt.Sprintf("the pod runner serves only GET /containerLogs/{namespace}/{pod}/{container}, not %s %s",
			req.Method, req.URL.Path), http.StatusNotFound)
	})
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 10 * time.Second,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.ServeTLS(l, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
			r.log.Error(err, "log server stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		// Followed streams end with ctx (BaseContext); Close also drops idle connections.
		_ = srv.Close()
	}()
	return int32(l.Addr().(*net.TCPAddr).Port), func() { <-done }, nil
}

// logQuery is the subset of the kubelet's log options the runner serves.
type logQuery struct {
	follow     bool
	tailLines  int64 // < 0: all
	limitBytes int64 // <= 0: no limit
}

func parseLogQuery(req *http.Request) (logQuery, error) {
	q := req.URL.Query()
	out := logQuery{tailLines: -1}
	var err error
	if v := q.Get("follow"); v != "" {
		if out.follow, err = strconv.ParseBool(v); err != nil {
			return out, fmt.Errorf("follow=%q: %w", v, err)
		}
	}
	if v := q.Get("tailLines"); v != "" {
		if out.tailLines, err = strconv.ParseInt(v, 10, 64); err != nil || out.tailLines < 0 {
			return out, fmt.Errorf("tailLines=%q: want a non-negative integer", v)
		}
	}
	if v := q.Get("limitBytes"); v != "" {
		if out.limitBytes, err = strconv.ParseInt(v, 10, 64); err != nil || out.limitBytes < 1 {
			return out, fmt.Errorf("limitBytes=%q: want a positive integer", v)
		}
	}
	if v := q.Get("timestamps"); v != "" && v != "false" {
		return out, errors.New("timestamps are not supported by the pod runner: it keeps the raw output, without per-line times")
	}
	if q.Get("sinceSeconds") != "" || q.Get("sinceTime") != "" {
		return out, errors.New("sinceSeconds and sinceTime are not supported by the pod runner: it keeps the raw output, without per-line times")
	}
	if v := q.Get("stream"); v != "" && !strings.EqualFold(v, "All") {
		return out, fmt.Errorf("stream=%s is not supported by the pod runner: stdout and stderr share one log", v)
	}
	return out, nil
}

// serveContainerLogs answers as the kubelet does: the container's output as text/plain, streamed
// while the process runs when follow is set.
func (r *Runner) serveContainerLogs(w http.ResponseWriter, req *http.Request) {
	ns, podName, container := req.PathValue("namespace"), req.PathValue("pod"), req.PathValue("container")
	q, err := parseLogQuery(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	key := ns + "/" + podName
	r.mu.Lock()
	st := r.pods[r.byKey[key]]
	r.mu.Unlock()
	if st == nil {
		// The API server has already checked that the pod and container exist and that the pod is
		// bound here. Without a process of this runner, it either has not started yet or ran under
		// an earlier runner whose files are gone.
		if pod, err := r.lister.Pods(ns).Get(podName); err == nil && (isTerminal(pod) || lost(pod)) {
			http.Error(w, fmt.Sprintf("container %q in pod %q has no log on this node: the pod runner that ran it is gone", container, podName), http.StatusNotFound)
			return
		}
		http.Error(w, fmt.Sprintf("container %q in pod %q is waiting to start: ContainerCreating", container, podName), http.StatusBadRequest)
		return
	}
	if container != st.container {
		http.Error(w, fmt.Sprintf("container %s is not valid for pod %s", container, podName), http.StatusBadRequest)
		return
	}
	if v := req.URL.Query().Get("previous"); v == "true" {
		// restartPolicy Never in every pod the runner runs: a container never restarts in place.
		http.Error(w, fmt.Sprintf("previous terminated container %q in pod %q not found", container, podName), http.StatusBadRequest)
		return
	}
	f, err := os.Open(st.logPath)
	if err != nil {
		http.Error(w, fmt.Sprintf("opening the log of %s: %v", key, err), http.StatusInternalServerError)
		return
	}
	defer f.Close()
	if q.tailLines >= 0 {
		if err := seekTail(f, q.tailLines); err != nil {
			http.Error(w, fmt.Sprintf("reading the log of %s: %v", key, err), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)

	var out io.Writer = w
	if q.limitBytes > 0 {
		out = &limitWriter{w: w, n: q.limitBytes}
	}
	flusher, _ := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := out.Write(buf[:n]); werr != nil {
				return // client gone, or limitBytes reached
			}
			if flusher != nil {
				flusher.Flush()
			}
			continue
		}
		if err != nil && !errors.Is(err, io.EOF) {
			r.log.Error(err, "reading pod log", "pod", key)
			return
		}
		if !q.follow {
			return
		}
		// At the end of what was written so far: wait for more, or for the process to exit and
		// then drain what it wrote last.
		select {
		case <-req.Context().Done():
			return
		case <-st.exitedCh:
			if _, err := io.CopyBuffer(out, f, buf); err == nil && flusher != nil {
				flusher.Flush()
			}
			return
		case <-time.After(followPoll):
		}
	}
}

// errLimit ends a response at limitBytes.
var errLimit = errors.New("limitBytes reached")

type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errLimit
	}
	cut := false
	if int64(len(p)) > l.n {
		p, cut = p[:l.n], true
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	if err == nil && (cut || l.n == 0) {
		err = errLimit
	}
	return n, err
}

// seekTail positions f at the start of its last n lines (a last line without a newline counts).
func seekTail(f *os.File, n int64) error {
	info, err := f.Stat()
	if err != nil {
		return err
	}
	size := info.Size()
	if n == 0 {
		_, err := f.Seek(size, io.SeekStart)
		return err
	}
	const block = 32 << 10
	pos := size
	newlines := int64(0)
	buf := make([]byte, block)
	// A trailing newline ends the last line rather than starting an empty one.
	skipTrailing := true
	for pos > 0 {
		step := min(int64(block), pos)
		pos -= step
		if _, err := f.ReadAt(buf[:step], pos); err != nil && !errors.Is(err, io.EOF) {
			return err
		}
		for i := step - 1; i >= 0; i-- {
			if buf[i] != '\n' {
				skipTrailing = false
				continue
			}
			if skipTrailing && pos+i == size-1 {
				skipTrailing = false
				continue
			}
			newlines++
			if newlines == n {
				_, err := f.Seek(pos+i+1, io.SeekStart)
				return err
			}
		}
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}

// selfSignedCert makes a serving certificate for 127.0.0.1 and the node name.
func selfSignedCert(nodeName string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: nodeName + "@podrunner"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.ParseIP(loopback)},
		DNSNames:     []string{nodeName},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
