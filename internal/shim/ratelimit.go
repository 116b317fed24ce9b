package shim

import (
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"k8s.io/utils/lru"
)

// maxTrackedClients bounds the memory of the limiters. A client pushed out gets a full bucket when
// it comes back, which only matters to someone who can send from this many addresses at once.
const maxTrackedClients = 65536

// limiterSet is one token bucket per identity (API key hash or client address).
type limiterSet struct {
	b  Bucket
	mu sync.Mutex // makes Get-then-Add atomic
	m  *lru.Cache
}

func newLimiterSet(b Bucket) *limiterSet {
	return &limiterSet{b: b, m: lru.New(maxTrackedClients)}
}

// allow takes a token for id, or says how long until one is available.
func (l *limiterSet) allow(id string, now time.Time) (ok bool, retryAfter time.Duration) {
	if l.b.Rate <= 0 {
		return true, 0
	}
	l.mu.Lock()
	var lim *rate.Limiter
	if v, found := l.m.Get(id); found {
		lim = v.(*rate.Limiter)
	} else {
		lim = rate.NewLimiter(rate.Limit(l.b.Rate), l.b.Burst)
		l.m.Add(id, lim)
	}
	l.mu.Unlock()
	r := lim.ReserveN(now, 1)
	if !r.OK() {
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		// Give the token back: a refused request must not push later ones further out.
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// retryAfterSeconds is the Retry-After value: whole seconds, rounded up, at least 1.
func retryAfterSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// clientAddr is the address the per-client bucket is keyed on. Behind hops proxies that append to
// X-Forwarded-For, it is the entry the outermost trusted proxy wrote; entries further left are
// written by the client and could be anything. IPv6 clients are grouped by /64, the block one
// host usually holds.
func clientAddr(r *http.Request, hops int) string {
	addr := remoteHost(r.RemoteAddr)
	if hops > 0 {
		var entries []string
		for _, h := range r.Header.Values("X-Forwarded-For") {
			for _, e := range strings.Split(h, ",") {
				if e = strings.TrimSpace(e); e != "" {
					entries = append(entries, e)
				}
			}
		}
		if len(entries) >= hops {
			if ip := net.ParseIP(remoteHost(entries[len(entries)-hops])); ip != nil {
				addr = ip.String()
			}
		}
	}
	if ip := net.ParseIP(addr); ip != nil && ip.To4() == nil {
		return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
	}
	return addr
}

func remoteHost(hostport string) string {
	if host, _, err := net.SplitHostPort(hostport); err == nil {
		return host
	}
	return hostport
}
