package pinecone

import (
	"context"
	"errors"
	"fmt"

	// Linking go-pinecone registers its data-plane proto files and message types in the protobuf
	// global registry; the fake serves VectorService from those descriptors.
	_ "github.com/pinecone-io/go-pinecone/v5/pinecone"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
)

// schema holds the VectorService descriptors and every message type and field the fake reads or
// writes, resolved once so that a change in go-pinecone's proto fails Start with a clear error.
type schema struct {
	svc   protoreflect.ServiceDescriptor
	types map[protoreflect.FullName]protoreflect.MessageType

	// Vector
	vecID, vecValues, vecMetadata protoreflect.FieldDescriptor
	// ScoredVector
	svID, svScore, svValues, svMetadata protoreflect.FieldDescriptor
	// UpsertRequest / UpsertResponse
	upVectors, upNamespace, upCount protoreflect.FieldDescriptor
	// FetchRequest / FetchResponse
	feIDs, feNamespace, feRespVectors, feRespNamespace, feRespUsage protoreflect.FieldDescriptor
	// QueryRequest / QueryResponse
	quNamespace, quTopK, quFilter, quIncludeValues, quIncludeMetadata, quQueries, quVector, quSparse, quID protoreflect.FieldDescriptor
	quRespMatches, quRespNamespace, quRespUsage                                                            protoreflect.FieldDescriptor
	// DeleteRequest
	deIDs, deAll, deNamespace, deFilter protoreflect.FieldDescriptor
	// ListRequest / ListResponse / ListItem / Pagination
	liPrefix, liLimit, liToken, liNamespace                       protoreflect.FieldDescriptor
	liRespVectors, liRespPagination, liRespNamespace, liRespUsage protoreflect.FieldDescriptor
	itemID, pagNext                                               protoreflect.FieldDescriptor
	// DescribeIndexStatsRequest / Response / NamespaceSummary
	stFilter                                                                              protoreflect.FieldDescriptor
	stNamespaces, stDimension, stFullness, stTotal, stMetric, stVectorType, nsVectorCount protoreflect.FieldDescriptor
	// Usage
	usReadUnits protoreflect.FieldDescriptor
}

// methods served, by name; the others answer Unimplemented.
var methods = []string{"Upsert", "Fetch", "Query", "Delete", "List", "DescribeIndexStats"}

func loadSchema() (*schema, error) {
	d, err := protoregistry.GlobalFiles.FindDescriptorByName("VectorService")
	if err != nil {
		return nil, fmt.Errorf("find VectorService in the proto registry (is go-pinecone linked?): %w", err)
	}
	svc, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return nil, fmt.Errorf("VectorService is a %T, not a service", d)
	}
	s := &schema{svc: svc, types: map[protoreflect.FullName]protoreflect.MessageType{}}
	var errs []error
	msg := func(name protoreflect.FullName) protoreflect.MessageDescriptor {
		mt, err := protoregistry.GlobalTypes.FindMessageByName(name)
		if err != nil {
			errs = append(errs, fmt.Errorf("message %s: %w", name, err))
			return nil
		}
		s.types[name] = mt
		return mt.Descriptor()
	}
	field := func(md protoreflect.MessageDescriptor, name protoreflect.Name) protoreflect.FieldDescriptor {
		if md == nil {
			return nil
		}
		fd := md.Fields().ByName(name)
		if fd == nil {
			errs = append(errs, fmt.Errorf("field %s.%s not found", md.FullName(), name))
		}
		return fd
	}
	for _, m := range methods {
		md := svc.Methods().ByName(protoreflect.Name(m))
		if md == nil {
			errs = append(errs, fmt.Errorf("method VectorService.%s not found", m))
			continue
		}
		msg(md.Input().FullName())
		msg(md.Output().FullName())
	}

	vec := msg("Vector")
	s.vecID, s.vecValues, s.vecMetadata = field(vec, "id"), field(vec, "values"), field(vec, "metadata")
	sv := msg("ScoredVector")
	s.svID, s.svScore, s.svValues, s.svMetadata = field(sv, "id"), field(sv, "score"), field(sv, "values"), field(sv, "metadata")

	up, upR := msg("UpsertRequest"), msg("UpsertResponse")
	s.upVectors, s.upNamespace, s.upCount = field(up, "vectors"), field(up, "namespace"), field(upR, "upserted_count")

	fe, feR := msg("FetchRequest"), msg("FetchResponse")
	s.feIDs, s.feNamespace = field(fe, "ids"), field(fe, "namespace")
	s.feRespVectors, s.feRespNamespace, s.feRespUsage = field(feR, "vectors"), field(feR, "namespace"), field(feR, "usage")

	qu, quR := msg("QueryRequest"), msg("QueryResponse")
	s.quNamespace, s.quTopK, s.quFilter = field(qu, "namespace"), field(qu, "top_k"), field(qu, "filter")
	s.quIncludeValues, s.quIncludeMetadata = field(qu, "include_values"), field(qu, "include_metadata")
	s.quQueries, s.quVector, s.quSparse, s.quID = field(qu, "queries"), field(qu, "vector"), field(qu, "sparse_vector"), field(qu, "id")
	s.quRespMatches, s.quRespNamespace, s.quRespUsage = field(quR, "matches"), field(quR, "namespace"), field(quR, "usage")

	de := msg("DeleteRequest")
	s.deIDs, s.deAll, s.deNamespace, s.deFilter = field(de, "ids"), field(de, "delete_all"), field(de, "namespace"), field(de, "filter")

	li, liR := msg("ListRequest"), msg("ListResponse")
	s.liPrefix, s.liLimit, s.liToken, s.liNamespace = field(li, "prefix"), field(li, "limit"), field(li, "pagination_token"), field(li, "namespace")
	s.liRespVectors, s.liRespPagination = field(liR, "vectors"), field(liR, "pagination")
	s.liRespNamespace, s.liRespUsage = field(liR, "namespace"), field(liR, "usage")
	s.itemID, s.pagNext = field(msg("ListItem"), "id"), field(msg("Pagination"), "next")

	st, stR := msg("DescribeIndexStatsRequest"), msg("DescribeIndexStatsResponse")
	s.stFilter = field(st, "filter")
	s.stNamespaces, s.stDimension, s.stFullness = field(stR, "namespaces"), field(stR, "dimension"), field(stR, "index_fullness")
	s.stTotal, s.stMetric, s.stVectorType = field(stR, "total_vector_count"), field(stR, "metric"), field(stR, "vector_type")
	s.nsVectorCount = field(msg("NamespaceSummary"), "vector_count")

	s.usReadUnits = field(msg("Usage"), "read_units")
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("go-pinecone's VectorService proto is not what the fake expects: %w", err)
	}
	return s, nil
}

// newMessage returns an empty message of the named type.
func (s *schema) newMessage(name protoreflect.FullName) protoreflect.Message {
	return s.types[name].New()
}

// serviceDesc describes VectorService to grpc-go with handlers that decode each request into its
// registered message type and hand it to the Index.
func (s *schema) serviceDesc() *grpc.ServiceDesc {
	desc := &grpc.ServiceDesc{
		ServiceName: string(s.svc.FullName()),
		// The Index is not a generated server interface; any type satisfies this.
		HandlerType: (*any)(nil),
		Metadata:    s.svc.ParentFile().Path(),
	}
	for _, m := range methods {
		md := s.svc.Methods().ByName(protoreflect.Name(m))
		in := s.types[md.Input().FullName()]
		name := m
		full := "/" + string(s.svc.FullName()) + "/" + m
		desc.Methods = append(desc.Methods, grpc.MethodDesc{
			MethodName: m,
			Handler: func(srv any, ctx context.Context, dec func(any) error, icpt grpc.UnaryServerInterceptor) (any, error) {
				req := in.New().Interface()
				if err := dec(req); err != nil {
					return nil, err
				}
				idx := srv.(*Index)
				call := func(ctx context.Context, req any) (any, error) {
					return idx.handle(ctx, name, req.(proto.Message).ProtoReflect())
				}
				if icpt == nil {
					return call(ctx, req)
				}
				return icpt(ctx, req, &grpc.UnaryServerInfo{Server: srv, FullMethod: full}, call)
			},
		})
	}
	return desc
}
