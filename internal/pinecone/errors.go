package pinecone

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"github.com/pinecone-io/go-pinecone/v5/pinecone"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// PermanentError is a failure that retrying cannot fix; it is the worker contract's type, so
// the embedder maps it to the permanent exit code without knowing which client failed.
type PermanentError = worker.PermanentError

// RetryExhaustedError is a transient failure (unavailable, throttled, timed out) that outlived
// the retry budget. Re-running the chunk later may succeed.
type RetryExhaustedError struct {
	Attempts int
	Err      error
}

func (e *RetryExhaustedError) Error() string {
	return fmt.Sprintf("failed after %d attempts: %v", e.Attempts, e.Err)
}
func (e *RetryExhaustedError) Unwrap() error { return e.Err }

// Reason is worker.ReasonRetryableError; it lets callers treat both error types alike.
func (e *RetryExhaustedError) Reason() string { return worker.ReasonRetryableError }

// permanentReason says whether err, from the control plane (REST) or the data plane (gRPC),
// is permanent and why. Errors without a status (connection refused, reset) are transient.
func permanentReason(err error) (string, bool) {
	var perm *PermanentError
	if errors.As(err, &perm) {
		return perm.Reason, true
	}
	var pe *pinecone.PineconeError
	if errors.As(err, &pe) {
		switch {
		case pe.Code == http.StatusUnauthorized || pe.Code == http.StatusForbidden:
			return worker.ReasonUnauthorized, true
		case pe.Code == http.StatusNotFound:
			return worker.ReasonIndexNotFound, true
		case pe.Code == http.StatusTooManyRequests || pe.Code == http.StatusRequestTimeout || pe.Code >= 500:
			return "", false
		case pe.Code >= 400:
			return worker.ReasonPermanentError, true
		}
		return "", false
	}
	if s, ok := status.FromError(err); ok {
		switch s.Code() {
		case codes.Unauthenticated, codes.PermissionDenied:
			return worker.ReasonUnauthorized, true
		case codes.NotFound:
			return worker.ReasonIndexNotFound, true
		case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange, codes.Unimplemented, codes.AlreadyExists:
			return worker.ReasonPermanentError, true
		}
		// Unavailable, ResourceExhausted, DeadlineExceeded, Internal, Aborted, Unknown,
		// Canceled (by the server or a proxy), DataLoss: transient.
	}
	return "", false
}

// retryPolicy retries transient failures with jittered exponential backoff.
type retryPolicy struct {
	maxRetries int
	maxTime    time.Duration
	base, max  time.Duration
	timeout    time.Duration // per attempt
	log        logr.Logger
	rnd        func() float64
}

// do runs fn until it succeeds, fails permanently, or the retry budget is spent. Each attempt
// gets its own timeout. retries, if not nil, counts the retries.
func (p retryPolicy) do(ctx context.Context, what string, retries *atomic.Int64, fn func(context.Context) error) error {
	start := time.Now()
	for attempt := 0; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, p.timeout)
		err := fn(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if reason, ok := permanentReason(err); ok {
			var perm *PermanentError
			if errors.As(err, &perm) {
				return perm
			}
			return &PermanentError{Reason: reason, Err: err}
		}
		delay := backoff(attempt, p.base, p.max, p.rnd())
		if hint := retryHint(err); hint > delay {
			delay = hint
		}
		if attempt >= p.maxRetries || time.Since(start)+delay > p.maxTime {
			return &RetryExhaustedError{Attempts: attempt + 1, Err: err}
		}
		if retries != nil {
			retries.Add(1)
		}
		p.log.V(1).Info("retrying pinecone call", "call", what, "attempt", attempt+1, "delay", delay, "error", err.Error())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// retryHint is the server's RetryInfo.retry_delay on a gRPC status (the standard way a gRPC
// service says "come back later"), or 0.
func retryHint(err error) time.Duration {
	s, ok := status.FromError(err)
	if !ok {
		return 0
	}
	for _, d := range s.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok && ri.GetRetryDelay() != nil {
			return max(0, ri.GetRetryDelay().AsDuration())
		}
	}
	return 0
}

// backoff is the delay before retry number attempt (0-based): exponential, capped, with
// "equal jitter" (half fixed, half random) so parallel batches spread out.
func backoff(attempt int, base, max time.Duration, rnd float64) time.Duration {
	d := base
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + time.Duration(rnd*float64(d/2))
}
