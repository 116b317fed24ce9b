package embedding

import (
	"context"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// go-openai drops the response headers of a failed request (APIError and RequestError carry no
// headers, and CreateEmbeddings returns a zero response on error), so Retry-After is out of
// reach through the SDK. The workaround: the client's HTTPDoer is wrapped, and each call puts a
// per-attempt holder in the request context where the wrapper leaves the response headers.

type captureKey struct{}

// captured is the response metadata of one attempt and, when decode is set, its embeddings
// decoded from the streaming body (see decode.go).
type captured struct {
	status int
	header http.Header
	decode bool
	resp   *decodedResponse
}

// emptyList is the body go-openai gets after the wrapper decoded the real one.
const emptyList = `{"object":"list","data":[]}`

// capturingDoer records the response headers of requests whose context carries a *captured.
type capturingDoer struct {
	client *http.Client
}

func (d capturingDoer) Do(req *http.Request) (*http.Response, error) {
	resp, err := d.client.Do(req)
	if resp != nil {
		if c, ok := req.Context().Value(captureKey{}).(*captured); ok {
			c.status = resp.StatusCode
			c.header = resp.Header
			if c.decode && resp.StatusCode == http.StatusOK {
				got, derr := decodeEmbeddings(resp.Body)
				_ = resp.Body.Close()
				if derr != nil {
					// A truncated or malformed body: go-openai reports it like a transport
					// error, which is retried.
					return nil, derr
				}
				c.resp = got
				resp.Body = io.NopCloser(strings.NewReader(emptyList))
				resp.ContentLength = int64(len(emptyList))
			}
		}
	}
	return resp, err
}

func withCapture(ctx context.Context) (context.Context, *captured) {
	c := &captured{}
	return context.WithValue(ctx, captureKey{}, c), c
}

// retryAfter reads the server's requested delay: Retry-After-Ms (OpenAI, milliseconds) first,
// then Retry-After as seconds or an HTTP date, then, for a 429 (limit is the refused limit's
// type, "requests" or "tokens", or "" when unknown), OpenAI's x-ratelimit-reset-* headers. Zero
// means none given.
func retryAfter(h http.Header, now time.Time, rateLimited bool, limit string) time.Duration {
	if h == nil {
		return 0
	}
	if d := retryAfterHeaders(h, now); d > 0 || !rateLimited {
		return d
	}
	return resetAfter(h, limit)
}

// resetAfter reads x-ratelimit-reset-requests and x-ratelimit-reset-tokens, the time until the
// limit's window frees up, in OpenAI's Go-duration format ("6m0s", "1s", "20ms"). For a refusal
// of one limit only that limit's header counts; otherwise the later of the two.
func resetAfter(h http.Header, limit string) time.Duration {
	var d time.Duration
	for _, kind := range []string{"requests", "tokens"} {
		if limit != "" && limit != kind && (limit == "requests" || limit == "tokens") {
			continue
		}
		v := strings.TrimSpace(h.Get("X-Ratelimit-Reset-" + kind))
		if v == "" {
			continue
		}
		if r, err := time.ParseDuration(v); err == nil && r > 0 && r < 24*time.Hour {
			d = max(d, r)
		}
	}
	return d
}

func retryAfterHeaders(h http.Header, now time.Time) time.Duration {
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 && !math.IsInf(ms, 0) {
			return time.Duration(ms * float64(time.Millisecond))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s <= 0 || math.IsInf(s, 0) || math.IsNaN(s) {
			return 0
		}
		return time.Duration(s * float64(time.Second))
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// backoff is the delay before retry number attempt (0-based). Without a server hint it is
// exponential with "equal jitter" (half fixed, half random), so concurrent clients spread out
// but never retry almost immediately. A server hint is a floor: the delay is the hint plus up to
// 10% jitter, so a herd told "1s" does not return in the same millisecond.
func backoff(attempt int, base, max, hint time.Duration, rnd float64) time.Duration {
	if hint > 0 {
		return hint + time.Duration(rnd*float64(hint)/10)
	}
	d := base
	for i := 0; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max {
		d = max
	}
	return d/2 + time.Duration(rnd*float64(d/2))
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
