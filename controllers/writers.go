package controllers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// The writers record: which runs started writing under an index and id prefix, kept in a Lease
// (one per prefixKey) in the manager's namespace. The peers found in the cache only show runs
// that still exist: a newer run deleted while an older one waits at its sync step (or created
// and deleted while the older one was still writing) would leave no trace, and the older run
// would delete the vectors it wrote. The record outlives the run objects, so an older run at its
// sync step sees every newer writer, gone or not. A Lease, because the manager already keeps its
// leader and UI-session Leases there (same RBAC); only its annotation is used.

// writersAnnotation holds the JSON list of writers, newest first.
const writersAnnotation = "ingestion.vectordb.io/writers"

// maxWriters bounds the record: a run older than the newest writer dropped from it has at least
// maxWriters newer writers and is superseded without looking further.
const maxWriters = 64

// writer is one run that started writing under the prefix: enough to order it against another
// run (newerThan) and to decide whether they may share a namespace (sharesNamespace).
type writer struct {
	UID             types.UID `json:"uid"`
	Namespace       string    `json:"ns"`
	Name            string    `json:"name"`
	Created         time.Time `json:"created"`
	Host            string    `json:"host,omitempty"`
	TargetNamespace string    `json:"targetNamespace,omitempty"`
	NamespaceColumn string    `json:"namespaceColumn,omitempty"`
}

// writers is the record: the newest maxWriters, and the newest dropped one per target.
type writers struct {
	List []writer `json:"writers"`
	// Dropped holds, per target a dropped writer wrote to (host, namespace, routed by column),
	// the newest writer that no longer fits in List: per target, so that newer writers to other
	// namespaces (one per tenant under a shared prefix) never supersede a run. Beyond
	// maxWriters targets they collapse into one entry that shares every namespace.
	Dropped []writer `json:"dropped,omitempty"`
	// Deleters are the runs whose sync step claimed the prefix to delete; a writer that records
	// itself after such a claim holds its chunks while the claimant is not terminal.
	Deleters []writer `json:"deleters,omitempty"`
}

func writerOf(o *v1alpha1.CsvIngestion) writer {
	t := o.Spec.Target.Pinecone
	return writer{UID: o.UID, Namespace: o.Namespace, Name: o.Name, Created: o.CreationTimestamp.Time,
		Host: t.Host, TargetNamespace: t.Namespace, NamespaceColumn: o.Spec.Mapping.NamespaceColumn}
}

// ingestion rebuilds the fields of the run newerThan and sharesNamespace read.
func (w writer) ingestion() *v1alpha1.CsvIngestion {
	o := &v1alpha1.CsvIngestion{}
	o.UID, o.Namespace, o.Name, o.CreationTimestamp = w.UID, w.Namespace, w.Name, metav1.NewTime(w.Created)
	o.Spec.Target.Pinecone.Host, o.Spec.Target.Pinecone.Namespace = w.Host, w.TargetNamespace
	o.Spec.Mapping.NamespaceColumn = w.NamespaceColumn
	return o
}

// add records w (once), keeps the newest maxWriters and reports whether the record changed.
func (ws *writers) add(w writer) bool {
	if slices.ContainsFunc(ws.List, func(e writer) bool { return e.UID == w.UID }) {
		return false
	}
	ws.List = append(ws.List, w)
	slices.SortStableFunc(ws.List, func(a, b writer) int {
		switch {
		case newerThan(a.ingestion(), b.ingestion()):
			return -1
		case newerThan(b.ingestion(), a.ingestion()):
			return 1
		}
		return 0
	})
	if len(ws.List) > maxWriters {
		ws.drop(ws.List[maxWriters])
		ws.List = slices.Clip(ws.List[:maxWriters])
	}
	return true
}

// anyNamespace marks the collapsed dropped entry: routed by column, it shares every namespace.
const anyNamespace = "*"

// drop keeps d as the newest dropped writer of its target.
func (ws *writers) drop(d writer) {
	target := func(w writer) [3]string {
		return [3]string{w.Host, w.TargetNamespace, fmt.Sprint(w.NamespaceColumn != "")}
	}
	i := slices.IndexFunc(ws.Dropped, func(e writer) bool { return target(e) == target(d) })
	switch {
	case i < 0:
		ws.Dropped = append(ws.Dropped, d)
	case newerThan(d.ingestion(), ws.Dropped[i].ingestion()):
		ws.Dropped[i] = d
	}
	if len(ws.Dropped) > maxWriters {
		// Too many targets to keep apart: the newest of them stands for all (conservative: a
		// run older than it is superseded whatever its namespace).
		n := ws.Dropped[0]
		for _, e := range ws.Dropped[1:] {
			if newerThan(e.ingestion(), n.ingestion()) {
				n = e
			}
		}
		n.Host, n.NamespaceColumn = "", anyNamespace
		ws.Dropped = []writer{n}
	}
}

// newer names a writer newer than obj that may write to a namespace obj's sync step deletes in:
// its vectors may be ones obj's older file lacks. live are the peers the cache shows; the others
// were deleted since (or are too new for the cache): they are marked so. "" when there is none.
// A dropped writer to a namespace obj shares counts like one in the list.
func (ws writers) newer(obj *v1alpha1.CsvIngestion, live map[types.UID]bool) string {
	var names []string
	for _, w := range ws.List {
		o := w.ingestion()
		if w.UID == obj.UID || !newerThan(o, obj) || !sharesNamespace(&o.Spec, &obj.Spec) {
			continue
		}
		name := w.Namespace + "/" + w.Name
		if !live[w.UID] {
			name += " (deleted since)"
		}
		names = append(names, name)
	}
	for _, d := range ws.Dropped {
		o := d.ingestion()
		if d.UID != obj.UID && newerThan(o, obj) && sharesNamespace(&o.Spec, &obj.Spec) {
			names = append(names, fmt.Sprintf("%s/%s (no longer in the record, which keeps the newest %d writers)", d.Namespace, d.Name, maxWriters))
		}
	}
	return firstSorted(names)
}

// claim records obj as a deleter (once) and reports whether the record changed.
func (ws *writers) claim(w writer) bool {
	if slices.ContainsFunc(ws.Deleters, func(e writer) bool { return e.UID == w.UID }) {
		return false
	}
	ws.Deleters = append(ws.Deleters, w)
	return true
}

func writersLeaseName(obj *v1alpha1.CsvIngestion) string {
	return "vectordb-writers-" + prefixKey(&obj.Spec)
}

// readWriters reads the record live from the API server (not the cache, which may lag a write
// another pass just made). A missing record is an empty one.
func (r *Reconciler) readWriters(ctx context.Context, obj *v1alpha1.CsvIngestion) (writers, *coordinationv1.Lease, error) {
	var ws writers
	lease := &coordinationv1.Lease{}
	key := client.ObjectKey{Namespace: r.Config.WritersNamespace, Name: writersLeaseName(obj)}
	if err := r.reader().Get(ctx, key, lease); err != nil {
		if apierrors.IsNotFound(err) {
			return ws, nil, nil
		}
		return ws, nil, fmt.Errorf("read the writers record %s: %w", key, err)
	}
	if s := lease.Annotations[writersAnnotation]; s != "" {
		// A damaged record cannot say who wrote: the sync step must not guess.
		if err := json.Unmarshal([]byte(s), &ws); err != nil {
			return ws, lease, damagedRecord{fmt.Errorf("the writers record %s is not valid JSON (%v): delete it to start a new record", key, err)}
		}
		if err := ws.valid(); err != nil {
			return ws, lease, damagedRecord{fmt.Errorf("the writers record %s is damaged (%v): delete it to start a new record", key, err)}
		}
	}
	return ws, lease, nil
}

// damagedRecord is a writers record that cannot be read (edited by hand): like a refused
// write it stops the runs under its prefix, and is their Blocked condition (with an event), not
// only a reconcile error in the manager's log.
type damagedRecord struct{ error }

// valid checks that every entry names a run (a deleter is looked up by name).
func (ws writers) valid() error {
	all := slices.Concat(ws.List, ws.Deleters, ws.Dropped)
	for _, w := range all {
		if w.UID == "" || w.Namespace == "" || w.Name == "" || w.Created.IsZero() {
			return fmt.Errorf("an entry without uid, ns, name or created: %+v", w)
		}
	}
	return nil
}

// refusedRecord is refused for the writers record: the API server refused its read or write,
// or the record is damaged.
func (p *pass) refusedRecord(what string, err error) bool {
	if errors.As(err, new(damagedRecord)) {
		if p.blocked == nil {
			p.blocked = &refusal{what: what, err: err}
		}
		return true
	}
	return p.refused(what, err)
}

// registerWriter records obj in its prefix's writers record before its first chunk Job is
// created (the caller skips it while no peer that deletes is running: see peers.deleter), and
// names an older run that claimed the prefix to delete and is not terminal yet:
// obj writes nothing until it is done (its cache may not show that run deleting yet). Deleters
// that ended are dropped from the record on the way. Conflicting writes (two runs, two
// managers) retry on a fresh read.
func (r *Reconciler) registerWriter(ctx context.Context, obj *v1alpha1.CsvIngestion) (holdFor string, err error) {
	if r.Config.WritersNamespace == "" || obj.Spec.Mapping.IDPrefix == "" || obj.Spec.DryRun {
		return "", nil
	}
	r.mu.Lock()
	done := r.registered[obj.UID]
	r.mu.Unlock()
	if done {
		return "", nil
	}
	err = r.updateWriters(ctx, obj, func(ws *writers) (bool, error) {
		holdFor = ""
		changed := ws.add(writerOf(obj))
		var keep, hold []writer
		for _, d := range ws.Deleters {
			ended, err := r.ended(ctx, d)
			if err != nil {
				return false, err
			}
			switch {
			case ended:
				changed = true
				continue
			case d.UID != obj.UID && newerThan(obj, d.ingestion()) && sharesNamespace(&obj.Spec, &d.ingestion().Spec):
				hold = append(hold, d)
			}
			keep = append(keep, d)
		}
		ws.Deleters = keep
		if len(hold) > 0 {
			var names []string
			for _, d := range hold {
				names = append(names, d.Namespace+"/"+d.Name)
			}
			holdFor = firstSorted(names)
		}
		return changed, nil
	})
	if err != nil || holdFor != "" {
		return holdFor, err
	}
	r.mu.Lock()
	r.registered[obj.UID] = true
	r.mu.Unlock()
	return "", nil
}

// claimDelete records obj as the prefix's deleter right before its sync Job is created, unless
// a newer writer is recorded: then it names it and obj must not delete. Recording the claim in
// the same object the writers record themselves in orders the two: a writer recorded first
// supersedes the claim, a claim recorded first holds the writer.
func (r *Reconciler) claimDelete(ctx context.Context, obj *v1alpha1.CsvIngestion, live map[types.UID]bool) (superseded string, err error) {
	if r.Config.WritersNamespace == "" || obj.Spec.Mapping.IDPrefix == "" {
		return "", nil
	}
	err = r.updateWriters(ctx, obj, func(ws *writers) (bool, error) {
		if superseded = ws.newer(obj, live); superseded != "" {
			return false, nil
		}
		// Claims of runs that ended go here too: runs that never overlap (a schedule with
		// Forbid) register no writer, which would otherwise be the only place they go.
		pruned, err := r.pruneDeleters(ctx, ws)
		if err != nil {
			return false, err
		}
		return ws.claim(writerOf(obj)) || pruned, nil
	})
	if err == nil && superseded == "" {
		r.mu.Lock()
		delete(r.unclaimed, obj.UID)
		r.mu.Unlock()
	}
	return superseded, err
}

// releaseClaim drops obj's claim when its sync step holds before its Job exists (it waits for
// a peer, or spec.suspend holds it): the claim may stand from a pass whose Job the API server
// refused, or that a manager restart cut short. A newer writer recorded after the claim waits
// for it, and this run waits for that writer: neither would ever move. Without its claim this
// run deletes nothing until it claims again, and that claim sees the newer writer. Once per
// run and process (the record is read each time).
func (r *Reconciler) releaseClaim(ctx context.Context, obj *v1alpha1.CsvIngestion) error {
	if r.Config.WritersNamespace == "" || obj.Spec.Mapping.IDPrefix == "" || obj.Spec.DryRun {
		return nil
	}
	r.mu.Lock()
	done := r.unclaimed[obj.UID]
	r.mu.Unlock()
	if done {
		return nil
	}
	err := r.updateWriters(ctx, obj, func(ws *writers) (bool, error) {
		n := len(ws.Deleters)
		ws.Deleters = slices.DeleteFunc(ws.Deleters, func(d writer) bool { return d.UID == obj.UID })
		return len(ws.Deleters) != n, nil
	})
	if err != nil {
		return err
	}
	r.mu.Lock()
	if r.unclaimed == nil {
		r.unclaimed = map[types.UID]bool{}
	}
	r.unclaimed[obj.UID] = true
	r.mu.Unlock()
	return nil
}

// pruneDeleters drops the claims of runs that ended and reports whether any went.
func (r *Reconciler) pruneDeleters(ctx context.Context, ws *writers) (bool, error) {
	keep := ws.Deleters[:0:0]
	for _, d := range ws.Deleters {
		ended, err := r.ended(ctx, d)
		if err != nil {
			return false, err
		}
		if !ended {
			keep = append(keep, d)
		}
	}
	pruned := len(keep) != len(ws.Deleters)
	ws.Deleters = keep
	return pruned, nil
}

// ended reports whether the run d names is terminal or gone (or replaced by another of its name).
func (r *Reconciler) ended(ctx context.Context, d writer) (bool, error) {
	cur := &v1alpha1.CsvIngestion{}
	if err := r.reader().Get(ctx, client.ObjectKey{Namespace: d.Namespace, Name: d.Name}, cur); err != nil {
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, fmt.Errorf("read the deleting ingestion %s/%s: %w", d.Namespace, d.Name, err)
	}
	return cur.UID != d.UID || cur.Status.Phase.Terminal(), nil
}

// updateWriters applies change to a fresh read of obj's record and writes it when it changed,
// retrying on conflicts.
func (r *Reconciler) updateWriters(ctx context.Context, obj *v1alpha1.CsvIngestion, change func(*writers) (bool, error)) error {
	var err error
	for range 5 {
		if err = r.tryUpdateWriters(ctx, obj, change); err == nil || !apierrors.IsConflict(err) && !apierrors.IsAlreadyExists(err) {
			return err
		}
	}
	return err
}

func (r *Reconciler) tryUpdateWriters(ctx context.Context, obj *v1alpha1.CsvIngestion, change func(*writers) (bool, error)) error {
	ws, lease, err := r.readWriters(ctx, obj)
	if err != nil {
		return err
	}
	changed, err := change(&ws)
	if err != nil || !changed {
		return err
	}
	b, err := json.Marshal(ws)
	if err != nil {
		return fmt.Errorf("encode the writers record: %w", err)
	}
	if lease == nil {
		lease = &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: r.Config.WritersNamespace, Name: writersLeaseName(obj),
			Labels: map[string]string{"app.kubernetes.io/managed-by": "vectordb-operator", "app.kubernetes.io/component": "writers-record"}}}
		lease.Annotations = map[string]string{writersAnnotation: string(b)}
		if err := r.Create(ctx, lease); err != nil {
			return fmt.Errorf("create the writers record %s/%s: %w", lease.Namespace, lease.Name, err)
		}
		return nil
	}
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Annotations[writersAnnotation] = string(b)
	if err := r.Update(ctx, lease); err != nil {
		return fmt.Errorf("update the writers record %s/%s: %w", lease.Namespace, lease.Name, err)
	}
	return nil
}

// reader reads past the cache when the manager provides one (tests may leave it unset).
func (r *Reconciler) reader() client.Reader {
	if r.APIReader != nil {
		return r.APIReader
	}
	return r.Client
}
