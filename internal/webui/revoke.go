package webui

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Revocations is the set of signed-out session ids, until each one's cookie would have expired
// anyway. Every replica serving the UI must see the same set.
type Revocations interface {
	Revoke(ctx context.Context, sid string, until time.Time) error
	Revoked(ctx context.Context, sid string) (bool, error)
}

// maxRevoked bounds the set: past it the entries closest to expiry go first (their cookies die
// soonest anyway). With the default one-hour sessions that is 2,000 sign-outs an hour.
const maxRevoked = 2000

// prune drops expired entries and, past maxRevoked, those that expire first.
func prune(m map[string]int64, now time.Time) {
	for id, exp := range m {
		if exp <= now.Unix() {
			delete(m, id)
		}
	}
	for len(m) > maxRevoked {
		var oldest string
		for id, exp := range m {
			if oldest == "" || exp < m[oldest] {
				oldest = id
			}
		}
		delete(m, oldest)
	}
}

// memRevocations keeps the set in memory: one replica (and tests).
type memRevocations struct {
	mu  sync.Mutex
	m   map[string]int64
	now func() time.Time
}

// MemoryRevocations is a Revocations of this process only.
func MemoryRevocations(now func() time.Time) Revocations {
	if now == nil {
		now = time.Now
	}
	return &memRevocations{m: map[string]int64{}, now: now}
}

func (r *memRevocations) Revoke(_ context.Context, sid string, until time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[sid] = until.Unix()
	prune(r.m, r.now())
	return nil
}

func (r *memRevocations) Revoked(_ context.Context, sid string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	exp, ok := r.m[sid]
	return ok && exp > r.now().Unix(), nil
}

// leaseAnnotation holds the revoked session ids of a LeaseRevocations: {"<id>": <unix expiry>}.
const leaseAnnotation = "ui.vectordb.io/revoked-sessions"

// leaseRevocations keeps the set in an annotation of a Lease in the manager's namespace (the
// leader-election Role already lets the manager get, create and update Leases there), so every
// replica sees a sign-out within refresh.
type leaseRevocations struct {
	r       client.Reader
	w       client.Writer
	key     types.NamespacedName
	refresh time.Duration
	now     func() time.Time

	mu     sync.Mutex
	cached map[string]int64
	read   time.Time
}

// LeaseRevocations stores the set in Lease name in namespace, read with r (the API server, not
// a cache: the manager caches no Leases) at most every refresh, and written with w.
func LeaseRevocations(r client.Reader, w client.Writer, namespace, name string, refresh time.Duration) Revocations {
	return &leaseRevocations{r: r, w: w, key: types.NamespacedName{Namespace: namespace, Name: name}, refresh: refresh, now: time.Now}
}

func (r *leaseRevocations) load(ctx context.Context) (*coordinationv1.Lease, map[string]int64, error) {
	var l coordinationv1.Lease
	if err := r.r.Get(ctx, r.key, &l); err != nil {
		return nil, nil, err
	}
	m := map[string]int64{}
	if v := l.Annotations[leaseAnnotation]; v != "" {
		if err := json.Unmarshal([]byte(v), &m); err != nil {
			return nil, nil, fmt.Errorf("annotation %s of Lease %s: %w", leaseAnnotation, r.key, err)
		}
	}
	return &l, m, nil
}

func (r *leaseRevocations) Revoke(ctx context.Context, sid string, until time.Time) error {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		l, m, err := r.load(ctx)
		if apierrors.IsNotFound(err) {
			l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: r.key.Namespace, Name: r.key.Name}}
			m, err = map[string]int64{}, nil
		}
		if err != nil {
			return err
		}
		m[sid] = until.Unix()
		prune(m, r.now())
		b, err := json.Marshal(m)
		if err != nil {
			return err
		}
		if l.Annotations == nil {
			l.Annotations = map[string]string{}
		}
		l.Annotations[leaseAnnotation] = string(b)
		if l.ResourceVersion == "" {
			return r.w.Create(ctx, l)
		}
		return r.w.Update(ctx, l)
	})
	if err != nil {
		return fmt.Errorf("revoking a session in Lease %s: %w", r.key, err)
	}
	r.mu.Lock()
	r.read = time.Time{} // read it again next time
	r.mu.Unlock()
	return nil
}

func (r *leaseRevocations) Revoked(ctx context.Context, sid string) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cached == nil || r.now().Sub(r.read) >= r.refresh {
		_, m, err := r.load(ctx)
		switch {
		case apierrors.IsNotFound(err):
			m = map[string]int64{}
		case err != nil:
			if r.cached == nil {
				return false, fmt.Errorf("reading revoked sessions from Lease %s: %w", r.key, err)
			}
			m = r.cached // keep the last known set through an API server hiccup
		}
		r.cached, r.read = m, r.now()
	}
	exp, ok := r.cached[sid]
	return ok && exp > r.now().Unix(), nil
}
