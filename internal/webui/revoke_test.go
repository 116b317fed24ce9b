package webui

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Past maxRevoked sign-outs the set stays bounded, but a signed-out session never becomes valid
// again: one key's holder signing out over and over must not push another's sign-out out of the
// set (a copied cookie of it would work again). What it costs is bounded to the victim's key:
// its sessions that expire no later than the one signed out; a later sign-in is unaffected.
func TestRevocationFloodUndoesNoSignOut(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	r := MemoryRevocations(func() time.Time { return now })
	victim, victimExp := fmt.Sprintf("%032x", 1), now.Add(time.Hour)
	if err := r.Revoke(ctx, "victim", victim, victimExp); err != nil {
		t.Fatal(err)
	}
	for i := range maxRevoked + 10 {
		now = now.Add(time.Second) // sessions signed in later expire later
		if err := r.Revoke(ctx, "flooder", fmt.Sprintf("f%031x", i), now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		what     string
		key, sid string
		exp      time.Time
		want     bool
	}{
		{"the signed-out session", "victim", victim, victimExp, true},
		{"a later session of the same key", "victim", fmt.Sprintf("%032x", 2), now.Add(time.Hour), false},
		{"another key's session", "bystander", fmt.Sprintf("%032x", 3), victimExp, false},
		{"the flood's newest sign-out", "flooder", fmt.Sprintf("f%031x", maxRevoked+9), now.Add(time.Hour), true},
	} {
		if got, err := r.Revoked(ctx, c.key, c.sid, c.exp); err != nil || got != c.want {
			t.Errorf("%s: revoked=%v (%v), want %v", c.what, got, err, c.want)
		}
	}
	set := r.(*memRevocations).set
	if n := len(set.Sessions); n > maxRevoked {
		t.Errorf("%d sessions listed, want at most %d", n, maxRevoked)
	}
	// Sized for the Lease annotation (256 KiB for all of a Lease's annotations).
	if b, _ := json.Marshal(set); len(b) > 200<<10 {
		t.Errorf("the full set is %d bytes as JSON, too close to the annotation limit", len(b))
	}
	// Once the cookies would have expired anyway, nothing is kept.
	now = now.Add(2 * time.Hour)
	set.prune(now)
	if len(set.Sessions)+len(set.Keys) != 0 {
		t.Errorf("after every cookie expired: %d sessions and %d key floors kept", len(set.Sessions), len(set.Keys))
	}
}

// A replica whose clock is behind the one that prunes still accepts a cookie until its own clock
// says it expired: a sign-out is kept a while past the cookie's expiry, so pruning on a fast clock
// does not make it valid on a slow one.
func TestRevocationOutlivesClockSkew(t *testing.T) {
	exp := time.Date(2026, 1, 1, 13, 0, 0, 0, time.UTC)
	set := newRevokedSet()
	set.add("k", fmt.Sprintf("%032x", 1), exp, exp.Add(-time.Hour))
	set.prune(exp.Add(time.Minute)) // a replica one minute ahead writes the Lease
	slow := exp.Add(-time.Minute)   // one a minute behind still takes the cookie as live
	if !set.revoked("k", fmt.Sprintf("%032x", 1), exp, slow) {
		t.Error("a sign-out pruned by a clock a minute ahead is not revoked on a clock a minute behind")
	}
	set.prune(exp.Add(revocationSkew + time.Second))
	if len(set.Sessions) != 0 {
		t.Errorf("%d sessions kept past the skew allowance", len(set.Sessions))
	}
}

// hangingReader is an API server that never answers (until the caller gives up).
type hangingReader struct{ client.Reader }

func (hangingReader) Get(ctx context.Context, _ client.ObjectKey, _ client.Object, _ ...client.GetOption) error {
	<-ctx.Done()
	return ctx.Err()
}

// Reading the Lease is bounded: an API server that hangs fails the session check (closed) instead
// of holding every sign-in check of the replica behind the lock for as long as the caller's
// context lives (a stream's lives as long as the page).
func TestRevocationReadIsBounded(t *testing.T) {
	r := LeaseRevocations(hangingReader{}, nil, "default", "hanging", time.Second).(*leaseRevocations)
	r.timeout = 10 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, err := r.Revoked(context.Background(), "k", fmt.Sprintf("%032x", 1), time.Now().Add(time.Hour))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Error("Revoked with an API server that never answers: no error, want one (sessions refused)")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Revoked with a context that never ends did not return: the Lease read is unbounded")
	}
}

// racingWriter lets another replica create the Lease just before this one does.
type racingWriter struct {
	client.Writer
	first func()
}

func (w *racingWriter) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	if f := w.first; f != nil {
		w.first = nil
		f()
	}
	return w.Writer.Create(ctx, obj, opts...)
}

// The first two sign-outs of a fresh install, on two replicas at once, both create the Lease: the
// one that loses is retried as an update (as a conflict is), not answered with 503.
func TestRevocationLeaseCreatedByTwoReplicas(t *testing.T) {
	ctx := context.Background()
	const ns, name = "default", "ui-sessions-created-twice"
	other := LeaseRevocations(cluster.Client, cluster.Client, ns, name, time.Millisecond)
	t.Cleanup(func() {
		_ = cluster.Client.Delete(ctx, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}})
	})
	w := &racingWriter{Writer: cluster.Client, first: func() {
		if err := other.Revoke(ctx, "k", fmt.Sprintf("%032x", 1), time.Now().Add(time.Hour)); err != nil {
			t.Errorf("the other replica's sign-out: %v", err)
		}
	}}
	r := LeaseRevocations(cluster.Client, w, ns, name, time.Millisecond)
	if err := r.Revoke(ctx, "k", fmt.Sprintf("%032x", 2), time.Now().Add(time.Hour)); err != nil {
		t.Fatalf("a sign-out racing another replica's first: %v", err)
	}
	for i := 1; i <= 2; i++ {
		if got, err := r.Revoked(ctx, "k", fmt.Sprintf("%032x", i), time.Now().Add(time.Hour)); err != nil || !got {
			t.Errorf("session %d: revoked=%v (%v), want true", i, got, err)
		}
	}
}
