package embedding

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"

	openai "github.com/sashabaranov/go-openai"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// PermanentError is a failure that retrying cannot fix; it is the worker contract's type, so
// the embedder maps it to the permanent exit code without knowing which client failed.
type PermanentError = worker.PermanentError

// RetryExhaustedError is a transient failure (429, 5xx, timeout, connection error) that outlived
// the retry budget. Re-running the chunk later may succeed.
type RetryExhaustedError struct {
	Attempts int
	Err      error
}

func (e *RetryExhaustedError) Error() string {
	return fmt.Sprintf("embeddings request failed after %d attempts: %v", e.Attempts, e.Err)
}
func (e *RetryExhaustedError) Unwrap() error { return e.Err }

// Reason is worker.ReasonRetryableError; it lets callers treat both error types alike.
func (e *RetryExhaustedError) Reason() string { return worker.ReasonRetryableError }

// verdict is how one failed attempt is handled.
type verdict struct {
	permanent   bool
	reason      string // for permanent errors
	rateLimited bool   // a 429 that is worth retrying
}

// apiStatus extracts the HTTP status, error type and code from go-openai's two error types.
func apiStatus(err error) (status int, typ, code string, ok bool) {
	var apiErr *openai.APIError
	if errors.As(err, &apiErr) {
		if apiErr.Code != nil {
			code = fmt.Sprint(apiErr.Code)
		}
		return apiErr.HTTPStatusCode, apiErr.Type, code, true
	}
	var reqErr *openai.RequestError
	if errors.As(err, &reqErr) {
		return reqErr.HTTPStatusCode, "", "", true
	}
	return 0, "", "", false
}

// classify decides whether a failed attempt is permanent. Anything that is not recognisably
// permanent (connection errors, timeouts, malformed responses, 408/409/429/5xx) is retried.
func classify(err error) verdict {
	var perm *PermanentError
	if errors.As(err, &perm) {
		return verdict{permanent: true, reason: perm.Reason}
	}
	status, typ, code, isHTTP := apiStatus(err)
	if !isHTTP {
		return verdict{} // transport error, timeout, decode error of a truncated body
	}
	switch {
	case typ == "insufficient_quota" || code == "insufficient_quota":
		// OpenAI sends an exhausted quota as a 429: retrying only burns time.
		return verdict{permanent: true, reason: worker.ReasonQuotaExceeded}
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return verdict{permanent: true, reason: worker.ReasonUnauthorized}
	case code == "model_not_found" || status == http.StatusNotFound:
		return verdict{permanent: true, reason: worker.ReasonModelNotFound}
	case status == http.StatusTooManyRequests:
		return verdict{rateLimited: true}
	case status == http.StatusRequestTimeout || status == http.StatusConflict || status >= 500:
		return verdict{}
	case status >= 400:
		return verdict{permanent: true, reason: worker.ReasonPermanentError}
	}
	return verdict{}
}

// describe renders an SDK error without the API key and without an unbounded body, so it can
// go into logs and the termination message.
func describe(err error, apiKey string) string {
	var msg string
	var apiErr *openai.APIError
	var reqErr *openai.RequestError
	switch {
	case errors.As(err, &apiErr):
		msg = fmt.Sprintf("status %d, type %q, code %v: %s", apiErr.HTTPStatusCode, apiErr.Type, apiErr.Code, apiErr.Message)
	case errors.As(err, &reqErr):
		body := string(reqErr.Body)
		if len(body) > 256 {
			body = body[:256] + "..."
		}
		msg = fmt.Sprintf("status %d: %v: %s", reqErr.HTTPStatusCode, reqErr.Err, body)
	default:
		msg = err.Error()
	}
	if apiKey != "" {
		msg = strings.ReplaceAll(msg, apiKey, "[redacted]")
	}
	return msg
}

// sanitized wraps err's description; the SDK error itself is dropped because its message may
// echo the key (OpenAI masks most of it, a proxy may not).
func sanitized(err error, apiKey string) error {
	var perm *PermanentError
	if errors.As(err, &perm) {
		return err
	}
	for _, sentinel := range []error{context.DeadlineExceeded, context.Canceled} {
		if errors.Is(err, sentinel) {
			return fmt.Errorf("%s: %w", describe(err, apiKey), sentinel)
		}
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return fmt.Errorf("%s: %w", describe(err, apiKey), netErr)
	}
	return errors.New(describe(err, apiKey))
}
