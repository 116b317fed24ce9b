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
	limit       string // the 429's limit type ("requests", "tokens"), for x-ratelimit-reset-*
	// split: the request is too large as a whole (a 429 "Request too large" for the TPM limit,
	// or more tokens than one request takes); halves may succeed, waiting cannot help.
	split bool
	// refused: a 400 about the inputs; halves isolate the input(s) the API refuses.
	refused bool
}

// apiErr is what the classification reads from go-openai's two error types.
type apiErr struct {
	status           int
	typ, code, param string
	message          string
}

// apiStatus extracts the HTTP status, error type, code, param and message of an API error.
func apiStatus(err error) (apiErr, bool) {
	var ae *openai.APIError
	if errors.As(err, &ae) {
		a := apiErr{status: ae.HTTPStatusCode, typ: ae.Type, message: ae.Message}
		if ae.Code != nil {
			a.code = fmt.Sprint(ae.Code)
		}
		if ae.Param != nil {
			a.param = *ae.Param
		}
		return a, true
	}
	var reqErr *openai.RequestError
	if errors.As(err, &reqErr) {
		return apiErr{status: reqErr.HTTPStatusCode}, true
	}
	return apiErr{}, false
}

// requestParams are the request's parameters other than the inputs: a 400 naming one of them is
// about the request as a whole and stays fatal.
var requestParams = map[string]bool{"model": true, "dimensions": true, "encoding_format": true, "user": true}

// aboutInputs reports whether a 400 concerns the inputs (one of them too long, refused, or an
// invalid "$.input"), so isolating the culprit helps. A 400 that names another parameter, or
// says nothing recognisable, is about the request and stays permanent.
func aboutInputs(a apiErr) bool {
	if requestParams[a.param] {
		return false
	}
	if strings.HasPrefix(a.param, "input") {
		return true
	}
	switch a.code {
	case "context_length_exceeded", "invalid_input", "invalid_prompt", "content_policy_violation":
		return true
	}
	m := strings.ToLower(a.message)
	return strings.Contains(m, "$.input") || strings.Contains(m, "maximum context length") || strings.Contains(m, "input")
}

// classify decides whether a failed attempt is permanent. Anything that is not recognisably
// permanent (connection errors, timeouts, malformed responses, 408/409/429/5xx) is retried.
func classify(err error) verdict {
	var perm *PermanentError
	if errors.As(err, &perm) {
		return verdict{permanent: true, reason: perm.Reason}
	}
	a, isHTTP := apiStatus(err)
	if !isHTTP {
		return verdict{} // transport error, timeout, decode error of a truncated body
	}
	status, typ, code := a.status, a.typ, a.code
	switch {
	case typ == "insufficient_quota" || code == "insufficient_quota":
		// OpenAI sends an exhausted quota as a 429: retrying only burns time.
		return verdict{permanent: true, reason: worker.ReasonQuotaExceeded}
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return verdict{permanent: true, reason: worker.ReasonUnauthorized}
	case code == "model_not_found" || status == http.StatusNotFound:
		return verdict{permanent: true, reason: worker.ReasonModelNotFound}
	case status == http.StatusTooManyRequests && strings.Contains(strings.ToLower(a.message), "request too large"):
		// More tokens than the TPM limit in one request: OpenAI refuses it without Retry-After.
		return verdict{split: true}
	case status == http.StatusTooManyRequests:
		return verdict{rateLimited: true, limit: typ}
	case status == http.StatusRequestTimeout || status == http.StatusConflict || status >= 500:
		return verdict{}
	case status == http.StatusBadRequest && (code == "max_tokens_per_request" || strings.Contains(strings.ToLower(a.message), "tokens per request")):
		return verdict{split: true}
	case status == http.StatusBadRequest && aboutInputs(a):
		return verdict{refused: true}
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

// apiMessage is the API's own message for a refused input, for the dead letter: no status or
// type noise, no key, bounded.
func apiMessage(err error, apiKey string) string {
	msg := describe(err, apiKey)
	var ae *openai.APIError
	if errors.As(err, &ae) && ae.Message != "" {
		msg = ae.Message
		if apiKey != "" {
			msg = strings.ReplaceAll(msg, apiKey, "[redacted]")
		}
	}
	if len(msg) > 1024 {
		msg = msg[:1024] + "..."
	}
	return msg
}
