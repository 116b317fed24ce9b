package webui

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	// Revoke ends session sid of the key named key, whose cookie expires at until.
	Revoke(ctx context.Context, key, sid string, until time.Time) error
	// Revoked reports whether session sid of key, expiring at until, was signed out.
	Revoked(ctx context.Context, key, sid string, until time.Time) (bool, error)
}

// maxRevoked bounds the sessions listed one by one. With the default one-hour sessions that is
// 2,000 sign-outs an hour; past it the sessions that expire first are folded into their key's
// floor (revokedSet.Keys), so none of them becomes valid again.
const maxRevoked = 2000

// revocationSkew is how long a sign-out is kept past its cookie's expiry: replicas' clocks differ,
// and one whose clock is behind the pruning one's still takes the cookie as live.
const revocationSkew = 5 * time.Minute

// revokedSet is what a Revocations stores.
type revokedSet struct {
	// Sessions are the signed-out session ids.
	Sessions map[string]revokedSession `json:"sessions"`
	// Keys are floors, by keyTag: every session of the key whose cookie expires at or before the
	// floor (unix seconds) is refused. Sign-outs past maxRevoked end up here: a few sessions of
	// that key signed in before the one signed out end too, which is safe, and the set stays
	// bounded by the number of keys.
	Keys map[string]int64 `json:"keys,omitempty"`
}

type revokedSession struct {
	Key     string `json:"k"` // keyTag of the key's name
	Expires int64  `json:"e"` // unix seconds
}

func newRevokedSet() *revokedSet {
	return &revokedSet{Sessions: map[string]revokedSession{}, Keys: map[string]int64{}}
}

// keyTag names a key in the set: a digest of its name, short and of fixed size, so 2,000 entries
// fit in an annotation (256 KiB for all of an object's annotations) whatever the names.
func keyTag(name string) string {
	h := sha256.Sum256([]byte(name))
	return hex.EncodeToString(h[:8])
}

func (rs *revokedSet) add(key, sid string, until time.Time, now time.Time) {
	rs.Sessions[sid] = revokedSession{Key: keyTag(key), Expires: until.Unix()}
	rs.prune(now)
}

func (rs *revokedSet) revoked(key, sid string, until time.Time, now time.Time) bool {
	// An expired cookie is refused before this is asked (checkSession); the entry is kept a while
	// longer for slower clocks.
	if _, ok := rs.Sessions[sid]; ok {
		return true
	}
	f, ok := rs.Keys[keyTag(key)]
	return ok && until.Unix() <= f
}

// prune drops what expired (revocationSkew ago) and, past maxRevoked, folds the sessions that expire first into
// their key's floor.
func (rs *revokedSet) prune(now time.Time) {
	gone := now.Add(-revocationSkew).Unix()
	for id, e := range rs.Sessions {
		if e.Expires <= gone {
			delete(rs.Sessions, id)
		}
	}
	for k, f := range rs.Keys {
		if f <= gone {
			delete(rs.Keys, k)
		}
	}
	for len(rs.Sessions) > maxRevoked {
		var first string
		for id, e := range rs.Sessions {
			if first == "" || e.Expires < rs.Sessions[first].Expires {
				first = id
			}
		}
		e := rs.Sessions[first]
		rs.Keys[e.Key] = max(rs.Keys[e.Key], e.Expires)
		delete(rs.Sessions, first)
	}
}

// memRevocations keeps the set in memory: one replica (and tests).
type memRevocations struct {
	mu  sync.Mutex
	set *revokedSet
	now func() time.Time
}

// MemoryRevocations is a Revocations of this process only.
func MemoryRevocations(now func() time.Time) Revocations {
	if now == nil {
		now = time.Now
	}
	return &memRevocations{set: newRevokedSet(), now: now}
}

func (r *memRevocations) Revoke(_ context.Context, key, sid string, until time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.set.add(key, sid, until, r.now())
	return nil
}

func (r *memRevocations) Revoked(_ context.Context, key, sid string, until time.Time) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.set.revoked(key, sid, until, r.now()), nil
}

// leaseAnnotation holds the revokedSet of a LeaseRevocations, as JSON.
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
	// timeout bounds each read and write of the Lease: Revoked holds the lock every session check
	// of the replica waits on, and a stream's context lasts as long as its page.
	timeout time.Duration

	mu     sync.Mutex
	cached *revokedSet
	read   time.Time
}

// LeaseRevocations stores the set in Lease name in namespace, read with r (the API server, not
// a cache: the manager caches no Leases) at most every refresh, and written with w.
func LeaseRevocations(r client.Reader, w client.Writer, namespace, name string, refresh time.Duration) Revocations {
	return &leaseRevocations{r: r, w: w, key: types.NamespacedName{Namespace: namespace, Name: name}, refresh: refresh, now: time.Now,
		timeout: 5 * time.Second}
}

func (r *leaseRevocations) load(ctx context.Context) (*coordinationv1.Lease, *revokedSet, error) {
	var l coordinationv1.Lease
	if err := r.r.Get(ctx, r.key, &l); err != nil {
		return nil, nil, err
	}
	m := newRevokedSet()
	if v := l.Annotations[leaseAnnotation]; v != "" {
		if err := json.Unmarshal([]byte(v), m); err != nil {
			return nil, nil, fmt.Errorf("annotation %s of Lease %s: %w", leaseAnnotation, r.key, err)
		}
		if m.Sessions == nil {
			m.Sessions = map[string]revokedSession{}
		}
		if m.Keys == nil {
			m.Keys = map[string]int64{}
		}
	}
	return &l, m, nil
}

func (r *leaseRevocations) Revoke(ctx context.Context, key, sid string, until time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	// Another replica may have written the Lease, or created it, since it was read: read again.
	err := retry.OnError(retry.DefaultRetry, func(err error) bool {
		return apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err)
	}, func() error {
		l, m, err := r.load(ctx)
		if apierrors.IsNotFound(err) {
			l = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: r.key.Namespace, Name: r.key.Name}}
			m, err = newRevokedSet(), nil
		}
		if err != nil {
			return err
		}
		m.add(key, sid, until, r.now())
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

func (r *leaseRevocations) Revoked(ctx context.Context, key, sid string, until time.Time) (bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cached == nil || r.now().Sub(r.read) >= r.refresh {
		lctx, cancel := context.WithTimeout(ctx, r.timeout)
		_, m, err := r.load(lctx)
		cancel()
		switch {
		case apierrors.IsNotFound(err):
			m = newRevokedSet()
		case err != nil:
			if r.cached == nil {
				return false, fmt.Errorf("reading revoked sessions from Lease %s: %w", r.key, err)
			}
			m = r.cached // keep the last known set through an API server hiccup
		}
		r.cached, r.read = m, r.now()
	}
	return r.cached.revoked(key, sid, until, r.now()), nil
}
