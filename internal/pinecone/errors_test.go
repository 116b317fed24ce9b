package pinecone

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pinecone-io/go-pinecone/v5/pinecone"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

func TestPermanentReason(t *testing.T) {
	cases := []struct {
		err    error
		reason string
		perm   bool
	}{
		{status.Error(codes.Unavailable, "x"), "", false},
		{status.Error(codes.ResourceExhausted, "x"), "", false},
		{status.Error(codes.DeadlineExceeded, "x"), "", false},
		{status.Error(codes.Internal, "x"), "", false},
		{status.Error(codes.Unknown, "x"), "", false},
		{fmt.Errorf("wrapped: %w", status.Error(codes.InvalidArgument, "x")), worker.ReasonPermanentError, true},
		{status.Error(codes.NotFound, "x"), worker.ReasonIndexNotFound, true},
		{status.Error(codes.Unauthenticated, "x"), worker.ReasonUnauthorized, true},
		{status.Error(codes.PermissionDenied, "x"), worker.ReasonUnauthorized, true},
		{&pinecone.PineconeError{Code: 404, Msg: errors.New("x")}, worker.ReasonIndexNotFound, true},
		{&pinecone.PineconeError{Code: 401, Msg: errors.New("x")}, worker.ReasonUnauthorized, true},
		{&pinecone.PineconeError{Code: 403, Msg: errors.New("x")}, worker.ReasonUnauthorized, true},
		{&pinecone.PineconeError{Code: 400, Msg: errors.New("x")}, worker.ReasonPermanentError, true},
		{&pinecone.PineconeError{Code: 429, Msg: errors.New("x")}, "", false},
		{&pinecone.PineconeError{Code: 503, Msg: errors.New("x")}, "", false},
		{errors.New("dial tcp: connection refused"), "", false},
	}
	for _, c := range cases {
		reason, perm := permanentReason(c.err)
		if reason != c.reason || perm != c.perm {
			t.Errorf("permanentReason(%v) = %q %v, want %q %v", c.err, reason, perm, c.reason, c.perm)
		}
	}
}

func TestRetryHonoursRetryInfo(t *testing.T) {
	st, err := status.New(codes.ResourceExhausted, "slow down").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(300 * time.Millisecond)})
	if err != nil {
		t.Fatal(err)
	}
	if got := retryHint(st.Err()); got != 300*time.Millisecond {
		t.Fatalf("retryHint = %v, want 300ms", got)
	}
	if got := retryHint(status.Error(codes.Unavailable, "x")); got != 0 {
		t.Fatalf("retryHint without details = %v", got)
	}
	// Through the policy: the second attempt may not start before the hint.
	p := retryPolicy{maxRetries: 3, maxTime: time.Minute, base: time.Millisecond, max: time.Millisecond, timeout: time.Second, rnd: func() float64 { return 0 }}
	var calls []time.Time
	var retries atomic.Int64
	err = p.do(context.Background(), "test", &retries, func(context.Context) error {
		calls = append(calls, time.Now())
		if len(calls) == 1 {
			return st.Err()
		}
		return nil
	})
	if err != nil || len(calls) != 2 || retries.Load() != 1 {
		t.Fatalf("err %v after %d calls, %d retries", err, len(calls), retries.Load())
	}
	if gap := calls[1].Sub(calls[0]); gap < 300*time.Millisecond {
		t.Fatalf("retried after %v, before the server's 300ms", gap)
	}
}

func TestBackoffGrowsAndCaps(t *testing.T) {
	base, maxB := 10*time.Millisecond, 100*time.Millisecond
	for attempt, full := range []time.Duration{10, 20, 40, 80, 100, 100} {
		full *= time.Millisecond
		if lo, hi := backoff(attempt, base, maxB, 0), backoff(attempt, base, maxB, 0.999999); lo != full/2 || hi > full || hi < full*99/100 {
			t.Errorf("attempt %d: [%v, %v], want [%v, %v]", attempt, lo, hi, full/2, full)
		}
	}
}
