package controllers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/embeddingbudget"
	"github.com/vectordb-io/vectordb-operator/internal/manager"
	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
)

// renewUsing posts one renewal of ns/ing's pod job-pod with the usage counts of use.
func renewUsing(t *testing.T, url string, key []byte, ns, ing, job string, use func(*ratelease.RenewRequest)) ratelease.Lease {
	t.Helper()
	req := ratelease.RenewRequest{Namespace: ns, Ingestion: ing, Job: job, Holder: job + "-pod",
		Model: "text-embedding-3-small", MaxRequestTokens: 8000, RemainingRequests: -1, RemainingTokens: -1}
	if use != nil {
		use(&req)
	}
	body, _ := json.Marshal(req)
	hr, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	hr.Header.Set("Authorization", "Bearer "+ratelease.Credential(key, ns, ing))
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("renew %s/%s: %d %s", ns, ing, resp.StatusCode, buf.String())
	}
	var l ratelease.Lease
	if err := json.Unmarshal(buf.Bytes(), &l); err != nil {
		t.Fatal(err)
	}
	return l
}

func newBudget(name string, spec v1alpha1.EmbeddingBudgetSpec) *v1alpha1.EmbeddingBudget {
	return &v1alpha1.EmbeddingBudget{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

func getBudget(t *testing.T, name string) *v1alpha1.EmbeddingBudget {
	t.Helper()
	var b v1alpha1.EmbeddingBudget
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Name: name}, &b); err != nil {
		t.Fatalf("get EmbeddingBudget %s: %v", name, err)
	}
	return &b
}

// budgetEvents are the reasons of the events about budget name (cluster-scoped: in default).
func budgetEvents(name string) (map[string]string, error) {
	var evs eventsv1.EventList
	if err := cluster.Client.List(context.Background(), &evs, client.InNamespace(metav1.NamespaceDefault)); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, e := range evs.Items {
		if e.Regarding.Kind == "EmbeddingBudget" && e.Regarding.Name == name {
			out[e.Reason] = e.Note
		}
	}
	return out, nil
}

func condition(b *v1alpha1.EmbeddingBudget, typ string) string {
	if c := meta.FindStatusCondition(b.Status.Conditions, typ); c != nil {
		return string(c.Status) + " " + c.Reason + ": " + c.Message
	}
	return "none"
}

// TestEmbeddingBudgetLeasesAndStatus: with the lease service on (and the manager watching one
// namespace: the budgets are cluster-scoped), ingestions claimed by an EmbeddingBudget draw from
// it by key Secret or namespace with the namespace's weight, an unlisted model keeps its
// implicit budget and is named in a condition, the leader writes holders, grants, use and 429s
// into the budget's status, backs off on sustained 429s (event after the write), follows a
// budget edit at the next renewal, and a second budget claiming the same Secret is Conflicting
// and superseded until the older one goes.
func TestEmbeddingBudgetLeasesAndStatus(t *testing.T) {
	ns := newNamespace(t)
	url, key := leaseManager(t, ns)
	ctx := context.Background()
	const small, large = "text-embedding-3-small", "text-embedding-3-large"

	a := create(t, newIngestion(ns, "eb-a", nil)) // key Secret openai: claimed by Secret
	c := create(t, newIngestion(ns, "eb-c", func(o *v1alpha1.CsvIngestion) {
		o.Spec.Embedding.APIKeySecretRef.Name = "openai-2" // claimed through the namespace
	}))
	u := create(t, newIngestion(ns, "eb-u", func(o *v1alpha1.CsvIngestion) { o.Spec.Embedding.Model = large }))
	for _, o := range []*v1alpha1.CsvIngestion{a, c, u} {
		t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), o) })
	}
	older := newBudget("eb-older-"+ns, v1alpha1.EmbeddingBudgetSpec{
		Models:     []v1alpha1.BudgetModel{{Name: small, RequestsPerMinute: 600, TokensPerMinute: 900_000}},
		Secrets:    []v1alpha1.BudgetSecret{{Namespace: ns, Name: "openai"}},
		Namespaces: []v1alpha1.BudgetNamespace{{Name: ns, Weight: 2}},
	})
	if err := cluster.Client.Create(ctx, older); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), older) })
	declaredKey := embeddingbudget.Key(older.Name, small)

	// The lease service sees the budget once the manager's cache has it.
	var la, lc, lu ratelease.Lease
	eventually(t, "a draws from the budget", 15*time.Second, func() (bool, string) {
		la = renewUsing(t, url, key, ns, a.Name, "eb-a-chunk-0", nil)
		return la.Budget == declaredKey, la.Budget
	})
	lc = renewUsing(t, url, key, ns, c.Name, "eb-c-chunk-0", nil)
	lu = renewUsing(t, url, key, ns, u.Name, "eb-u-chunk-0", func(r *ratelease.RenewRequest) { r.Model = large })
	if lc.Budget != declaredKey {
		t.Fatalf("c (another Secret in a listed namespace) draws from %q, want %q", lc.Budget, declaredKey)
	}
	if want := manager.ImplicitBudgetKey(ns, get(t, u).Spec.Embedding); lu.Budget != want {
		t.Fatalf("u (a model the budget does not list) draws from %q, want its implicit budget %q", lu.Budget, want)
	}
	// a and c (equal weights) split the declared budget once both have renewed; a reports use.
	eventually(t, "grants settle at half each", 15*time.Second, func() (bool, string) {
		la = renewUsing(t, url, key, ns, a.Name, "eb-a-chunk-0", func(r *ratelease.RenewRequest) {
			r.UsedRequests, r.UsedTokens = 3, 30_000
		})
		lc = renewUsing(t, url, key, ns, c.Name, "eb-c-chunk-0", nil)
		return math.Abs(la.TPM-450_000) < 1 && math.Abs(lc.TPM-450_000) < 1, fmt.Sprintf("a %g, c %g", la.TPM, lc.TPM)
	})

	var b *v1alpha1.EmbeddingBudget
	eventually(t, "status written", 20*time.Second, func() (bool, string) {
		// Keep the holders live while the leader writes.
		renewUsing(t, url, key, ns, c.Name, "eb-c-chunk-0", nil)
		renewUsing(t, url, key, ns, u.Name, "eb-u-chunk-0", func(r *ratelease.RenewRequest) { r.Model = large })
		la = renewUsing(t, url, key, ns, a.Name, "eb-a-chunk-0", func(r *ratelease.RenewRequest) { r.UsedRequests, r.UsedTokens = 3, 30_000 })
		b = getBudget(t, older.Name)
		ok := len(b.Status.Models) == 1 && b.Status.Models[0].Holders == 2 && len(b.Status.Holders) == 2 &&
			b.Status.Models[0].Used.TokensPerMinute > 0 &&
			meta.IsStatusConditionTrue(b.Status.Conditions, embeddingbudget.ConditionUnlistedModels)
		return ok, fmt.Sprintf("%+v", b.Status)
	})
	m := b.Status.Models[0]
	if m.Name != small || m.Declared.TokensPerMinute != 900_000 || m.Effective.TokensPerMinute != 900_000 || math.Abs(float64(m.Granted.TokensPerMinute)-900_000) > 2 {
		t.Errorf("model status %+v: want the declared 900000 TPM effective and granted", m)
	}
	for _, h := range b.Status.Holders {
		if h.Namespace != ns || (h.Ingestion != a.Name && h.Ingestion != c.Name) || h.Pods != 1 || h.Model != small {
			t.Errorf("holder %+v", h)
		}
	}
	if b.Status.ObservedGeneration != b.Generation || !meta.IsStatusConditionTrue(b.Status.Conditions, embeddingbudget.ConditionReady) ||
		meta.IsStatusConditionTrue(b.Status.Conditions, embeddingbudget.ConditionConflicting) {
		t.Errorf("status %+v: want Ready, not Conflicting, at generation %d", b.Status, b.Generation)
	}
	if msg := condition(b, embeddingbudget.ConditionUnlistedModels); !strings.Contains(msg, ns+"/"+u.Name+" ("+large+")") {
		t.Errorf("UnlistedModels %q must name %s/%s and its model", msg, ns, u.Name)
	}

	// Sustained 429s that both ingestions see (one's alone would cut only its own grant): the
	// budget backs off, the status shows the effective budget and the 429s, and an event
	// follows the write.
	eventually(t, "backed off", 30*time.Second, func() (bool, string) {
		la = renewUsing(t, url, key, ns, a.Name, "eb-a-chunk-0", func(r *ratelease.RenewRequest) { r.UsedRequests, r.RateLimited = 100, 50 })
		renewUsing(t, url, key, ns, c.Name, "eb-c-chunk-0", func(r *ratelease.RenewRequest) { r.UsedRequests, r.RateLimited = 100, 50 })
		b = getBudget(t, older.Name)
		evs, err := budgetEvents(older.Name)
		ok := err == nil && len(b.Status.Models) == 1 && b.Status.Models[0].Effective.TokensPerMinute < 900_000 &&
			b.Status.Models[0].RateLimited >= 50 && evs[embeddingbudget.ReasonBackedOff] != ""
		return ok, fmt.Sprintf("%+v, events %v %v", b.Status.Models, evs, err)
	})

	// An edit reaches the pods at their next renewal.
	b.Spec.Models[0].TokensPerMinute = 90_000
	if err := cluster.Client.Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	eventually(t, "lowered budget granted", 15*time.Second, func() (bool, string) {
		la = renewUsing(t, url, key, ns, a.Name, "eb-a-chunk-0", nil)
		lc = renewUsing(t, url, key, ns, c.Name, "eb-c-chunk-0", nil)
		return la.TPM+lc.TPM <= 90_000+1, fmt.Sprintf("a %g + c %g", la.TPM, lc.TPM)
	})

	// A second budget on the same Secret: the older one keeps it, both say so, the newer one is
	// superseded (its only claim is lost).
	newer := newBudget("eb-newer-"+ns, v1alpha1.EmbeddingBudgetSpec{
		Models:  []v1alpha1.BudgetModel{{Name: small, RequestsPerMinute: 60, TokensPerMinute: 60_000}},
		Secrets: []v1alpha1.BudgetSecret{{Namespace: ns, Name: "openai"}},
	})
	if err := cluster.Client.Create(ctx, newer); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), newer) })
	eventually(t, "conflict surfaced", 20*time.Second, func() (bool, string) {
		bo, bn := getBudget(t, older.Name), getBudget(t, newer.Name)
		evs, err := budgetEvents(newer.Name)
		ok := err == nil && meta.IsStatusConditionTrue(bo.Status.Conditions, embeddingbudget.ConditionConflicting) &&
			meta.IsStatusConditionTrue(bn.Status.Conditions, embeddingbudget.ConditionConflicting) &&
			meta.IsStatusConditionFalse(bn.Status.Conditions, embeddingbudget.ConditionReady) &&
			evs[embeddingbudget.ReasonSharedClaim] != ""
		return ok, fmt.Sprintf("older %s; newer %s / %s; events %v %v", condition(bo, "Conflicting"), condition(bn, "Conflicting"), condition(bn, "Ready"), evs, err)
	})
	if msg := condition(getBudget(t, newer.Name), embeddingbudget.ConditionConflicting); !strings.Contains(msg, "key Secret "+ns+"/openai is also listed by "+older.Name) ||
		!strings.Contains(msg, "budget "+older.Name+" wins (older)") {
		t.Errorf("newer budget's Conflicting %q must name the claim and the winner", msg)
	}
	if la = renewUsing(t, url, key, ns, a.Name, "eb-a-chunk-0", nil); la.Budget != declaredKey {
		t.Fatalf("a draws from %q while the older budget exists, want %q", la.Budget, declaredKey)
	}

	// The older budget deleted: a moves to the newer one at its next renewal; the conflict ends.
	if err := cluster.Client.Delete(ctx, older); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a moves to the newer budget", 15*time.Second, func() (bool, string) {
		la = renewUsing(t, url, key, ns, a.Name, "eb-a-chunk-0", nil)
		return la.Budget == embeddingbudget.Key(newer.Name, small) && la.TPM <= 60_000+1, fmt.Sprintf("%s %g", la.Budget, la.TPM)
	})
	eventually(t, "conflict resolved", 20*time.Second, func() (bool, string) {
		renewUsing(t, url, key, ns, a.Name, "eb-a-chunk-0", nil)
		bn := getBudget(t, newer.Name)
		evs, err := budgetEvents(newer.Name)
		ok := err == nil && meta.IsStatusConditionFalse(bn.Status.Conditions, embeddingbudget.ConditionConflicting) &&
			meta.IsStatusConditionTrue(bn.Status.Conditions, embeddingbudget.ConditionReady) &&
			evs[embeddingbudget.ReasonConflictResolved] != "" && len(bn.Status.Holders) == 1 && bn.Status.Holders[0].Ingestion == a.Name
		return ok, fmt.Sprintf("%s / %s, holders %+v, events %v %v", condition(bn, "Conflicting"), condition(bn, "Ready"), bn.Status.Holders, evs, err)
	})
}

// TestEmbeddingBudgetStatusWriter: one status write per changed budget and pass, none when
// nothing changed; a write refused with a conflict is left to the next pass without events;
// another refusal is returned with the budget's name; events only after a successful write.
// The writer runs against the API server with a real lease server fed by renewals.
func TestEmbeddingBudgetStatusWriter(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	const model = "text-embedding-3-small"
	srv, err := ratelease.NewServer(ratelease.ServerOptions{Key: []byte("writer-test-key-0123456789"),
		Resolver: ratelease.ResolverFunc(func(context.Context, string, string, string) (ratelease.Budget, error) {
			return ratelease.Budget{}, ratelease.ErrNotFound
		})})
	if err != nil {
		t.Fatal(err)
	}
	first, second := "eb-writer-a-"+ns, "eb-writer-b-"+ns
	for _, name := range []string{first, second} {
		b := newBudget(name, v1alpha1.EmbeddingBudgetSpec{
			Models:  []v1alpha1.BudgetModel{{Name: model, RequestsPerMinute: 10, TokensPerMinute: 1000}},
			Secrets: []v1alpha1.BudgetSecret{{Namespace: ns, Name: "openai"}},
		})
		if err := cluster.Client.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), b) })
	}
	winner := first
	if sb, fb := getBudget(t, second), getBudget(t, first); sb.CreationTimestamp.Before(&fb.CreationTimestamp) {
		winner = second
	}
	renew := func(used int64) {
		t.Helper()
		if _, err := srv.Renew(ratelease.RenewRequest{Namespace: ns, Ingestion: "ing", Job: "job", Holder: "pod", Model: model,
			UsedRequests: used, UsedTokens: 10 * used, RemainingRequests: -1, RemainingTokens: -1},
			ratelease.Budget{Key: embeddingbudget.Key(winner, model), Declared: ratebudget.Rates{RPM: 10, TPM: 1000}, Weight: 1}); err != nil {
			t.Fatal(err)
		}
	}
	renew(0)

	rec := events.NewFakeRecorder(100)
	writes := map[string]int{}
	refuse := map[string]error{}
	wc, err := client.NewWithWatch(cluster.Config, client.Options{Scheme: cluster.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	c := interceptor.NewClient(wc, interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, cl client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			writes[obj.GetName()]++
			if err := refuse[obj.GetName()]; err != nil {
				delete(refuse, obj.GetName())
				return err
			}
			if n := len(rec.Events); n != 0 {
				t.Errorf("%d events recorded before the status write", n)
			}
			return cl.SubResource(sub).Update(ctx, obj, opts...)
		},
	})
	w := &controllers.BudgetStatusWriter{Client: c, Recorder: rec, Snapshot: srv.Snapshot}
	drain := func() []string {
		var out []string
		for {
			select {
			case e := <-rec.Events:
				out = append(out, e)
			default:
				return out
			}
		}
	}

	// The first write of the winner is refused with a conflict: no error, no event for it.
	gr := schema.GroupResource{Group: v1alpha1.GroupVersion.Group, Resource: "embeddingbudgets"}
	refuse[winner] = apierrors.NewConflict(gr, winner, errors.New("the object has been modified"))
	if err := w.Pass(ctx); err != nil {
		t.Fatalf("a conflicting write must wait for the next pass, got %v", err)
	}
	evs := drain()
	if writes[first] != 1 || writes[second] != 1 || len(getBudget(t, winner).Status.Conditions) != 0 {
		t.Fatalf("writes %v, winner status %+v: want one attempt each and the winner unwritten", writes, getBudget(t, winner).Status)
	}
	if len(evs) != 1 || !strings.Contains(evs[0], embeddingbudget.ReasonSharedClaim) {
		t.Fatalf("events %v: want one SharedClaim, for the budget written", evs)
	}
	// The next pass writes it, then records its event.
	if err := w.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	b := getBudget(t, winner)
	if writes[winner] != 2 || writes[other(winner, first, second)] != 1 || len(b.Status.Holders) != 1 || b.Status.Holders[0].Namespace != ns {
		t.Fatalf("writes %v, status %+v", writes, b.Status)
	}
	if evs := drain(); len(evs) != 1 || !strings.Contains(evs[0], embeddingbudget.ReasonSharedClaim) {
		t.Fatalf("events %v: want the winner's SharedClaim", evs)
	}
	// Nothing changed: no write at all.
	if err := w.Pass(ctx); err != nil || writes[first]+writes[second] != 3 {
		t.Fatalf("unchanged pass: %v, writes %v", err, writes)
	}
	// A refusal other than a conflict is an error naming the budget, with no event.
	if err := cluster.Client.Delete(ctx, getBudget(t, other(winner, first, second))); err != nil {
		t.Fatal(err)
	}
	refuse[winner] = apierrors.NewForbidden(gr, winner, errors.New("not allowed"))
	err = nil
	eventually(t, "refusal reported", 10*time.Second, func() (bool, string) {
		err = w.Pass(ctx)
		return err != nil, fmt.Sprint(err)
	})
	if !strings.Contains(err.Error(), "EmbeddingBudget "+winner) || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("error %q must name the budget and carry the server's message", err)
	}
	if evs := drain(); len(evs) != 0 {
		t.Fatalf("events %v after a refused write", evs)
	}
	if err := w.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if b := getBudget(t, winner); meta.IsStatusConditionTrue(b.Status.Conditions, embeddingbudget.ConditionConflicting) {
		t.Fatalf("Conflicting after the other budget went: %s", condition(b, embeddingbudget.ConditionConflicting))
	}
	if evs := drain(); len(evs) != 1 || !strings.Contains(evs[0], embeddingbudget.ReasonConflictResolved) {
		t.Fatalf("events %v: want ConflictResolved", evs)
	}
}

func other(x, a, b string) string {
	if x == a {
		return b
	}
	return a
}

// TestEmbeddingBudgetWeights: the resolver gives each ingestion its namespace's weight in the
// budget that claims it (1 for a namespace drawing through spec.secrets only), and the lease
// server divides the budget by those weights: 2:1 between two ingestions.
func TestEmbeddingBudgetWeights(t *testing.T) {
	ctx := context.Background()
	heavy, light := newNamespace(t), newNamespace(t)
	const model = "text-embedding-3-small"
	h := create(t, newIngestion(heavy, "eb-heavy", nil))
	l := create(t, newIngestion(light, "eb-light", nil))
	for _, o := range []*v1alpha1.CsvIngestion{h, l} {
		t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), o) })
	}
	b := newBudget("eb-weights-"+heavy, v1alpha1.EmbeddingBudgetSpec{
		Models:     []v1alpha1.BudgetModel{{Name: model, RequestsPerMinute: 300, TokensPerMinute: 900_000}},
		Secrets:    []v1alpha1.BudgetSecret{{Namespace: light, Name: "openai"}},
		Namespaces: []v1alpha1.BudgetNamespace{{Name: heavy, Weight: 2}},
	})
	if err := cluster.Client.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), b) })

	res := manager.DeclaredBudgets(cluster.Client, logr.Discard())
	bh, err := res.Resolve(ctx, heavy, h.Name, model)
	if err != nil {
		t.Fatal(err)
	}
	bl, err := res.Resolve(ctx, light, l.Name, model)
	if err != nil {
		t.Fatal(err)
	}
	key := embeddingbudget.Key(b.Name, model)
	if bh.Key != key || bl.Key != key || bh.Weight != 2 || bl.Weight != 1 || bh.Declared.TPM != 900_000 || bh.MaxHolders != 4 {
		t.Fatalf("heavy %+v, light %+v: want both on %s, weights 2 and 1, 900000 TPM, 4 holders (parallelism)", bh, bl, key)
	}
	srv, err := ratelease.NewServer(ratelease.ServerOptions{Key: []byte("weights-test-key-0123456789"), Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	var gh, gl ratelease.Lease
	for range 3 { // a newcomer reaches its share once the others have renewed
		if gh, err = srv.Renew(ratelease.RenewRequest{Namespace: heavy, Ingestion: h.Name, Job: "j", Holder: "p", Model: model}, bh); err != nil {
			t.Fatal(err)
		}
		if gl, err = srv.Renew(ratelease.RenewRequest{Namespace: light, Ingestion: l.Name, Job: "j", Holder: "p", Model: model}, bl); err != nil {
			t.Fatal(err)
		}
	}
	if math.Abs(gh.TPM-600_000) > 1 || math.Abs(gl.TPM-300_000) > 1 {
		t.Fatalf("grants %g and %g TPM, want 600000 and 300000 (weights 2:1)", gh.TPM, gl.TPM)
	}
}

// TestEmbeddingBudgetStatusWriterWarmup: a new leader's lease server knows no holder until the
// pods have renewed with it. Its writer must not write the budget empty meanwhile (holders 0,
// then back a pass later, at every leader change): it writes nothing within Warmup of Start,
// and the relearned holders after it (clock injected).
func TestEmbeddingBudgetStatusWriterWarmup(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	const model = "text-embedding-3-small"
	name := "eb-warmup-" + ns
	b := newBudget(name, v1alpha1.EmbeddingBudgetSpec{
		Models:     []v1alpha1.BudgetModel{{Name: model, RequestsPerMinute: 10, TokensPerMinute: 1000}},
		Namespaces: []v1alpha1.BudgetNamespace{{Name: ns, Weight: 1}},
	})
	if err := cluster.Client.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), b) })
	// The budget as the old leader left it: one holder.
	b.Status = v1alpha1.EmbeddingBudgetStatus{Holders: []v1alpha1.BudgetHolder{{Namespace: ns, Ingestion: "ing", Model: model, Pods: 1}}}
	if err := cluster.Client.Status().Update(ctx, b); err != nil {
		t.Fatal(err)
	}

	srv, err := ratelease.NewServer(ratelease.ServerOptions{Key: []byte("warmup-test-key-0123456789"),
		Resolver: ratelease.ResolverFunc(func(context.Context, string, string, string) (ratelease.Budget, error) {
			return ratelease.Budget{}, ratelease.ErrNotFound
		})})
	if err != nil {
		t.Fatal(err)
	}
	writes := 0
	wc, err := client.NewWithWatch(cluster.Config, client.Options{Scheme: cluster.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	c := interceptor.NewClient(wc, interceptor.Funcs{
		SubResourceUpdate: func(ctx context.Context, cl client.Client, sub string, obj client.Object, opts ...client.SubResourceUpdateOption) error {
			if obj.GetName() == name {
				writes++
			}
			return cl.SubResource(sub).Update(ctx, obj, opts...)
		},
	})
	now := time.Date(2026, 3, 29, 1, 59, 0, 0, time.UTC)
	w := &controllers.BudgetStatusWriter{Client: c, Recorder: events.NewFakeRecorder(100), Snapshot: srv.Snapshot,
		Warmup: 15 * time.Second, Now: func() time.Time { return now }}
	// Start runs its first pass and, its context over, returns.
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := w.Start(done); err != nil {
		t.Fatal(err)
	}
	now = now.Add(14 * time.Second)
	if err := w.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if got := getBudget(t, name); writes != 0 || len(got.Status.Holders) != 1 {
		t.Fatalf("within the warmup: %d writes, holders %+v; want the old status untouched", writes, got.Status.Holders)
	}
	// The pod renews with the new leader; after the warmup the status is written from it.
	if _, err := srv.Renew(ratelease.RenewRequest{Namespace: ns, Ingestion: "ing2", Job: "job", Holder: "pod", Model: model,
		RemainingRequests: -1, RemainingTokens: -1},
		ratelease.Budget{Key: embeddingbudget.Key(name, model), Declared: ratebudget.Rates{RPM: 10, TPM: 1000}, Weight: 1}); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Second)
	if err := w.Pass(ctx); err != nil {
		t.Fatal(err)
	}
	if got := getBudget(t, name); writes != 1 || len(got.Status.Holders) != 1 || got.Status.Holders[0].Ingestion != "ing2" {
		t.Fatalf("after the warmup: %d writes, holders %+v; want one write with the relearned holder", writes, got.Status.Holders)
	}
}

// TestEmbeddingBudgetLongEventsRecorded: the API server refuses an event whose note exceeds
// 1024 bytes, and the recorder drops it with no more than a log line. A conflict over many
// claims (or many unlisted models) makes a long condition message: the event still arrives,
// shortened, with the full message in the condition.
func TestEmbeddingBudgetLongEventsRecorded(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	var secrets []v1alpha1.BudgetSecret
	for i := 0; i < 30; i++ {
		secrets = append(secrets, v1alpha1.BudgetSecret{Namespace: ns, Name: fmt.Sprintf("openai-key-of-the-team-number-%02d", i)})
	}
	names := []string{"eb-long-a-" + ns, "eb-long-b-" + ns}
	for _, name := range names {
		b := newBudget(name, v1alpha1.EmbeddingBudgetSpec{
			Models:  []v1alpha1.BudgetModel{{Name: "text-embedding-3-small", RequestsPerMinute: 10, TokensPerMinute: 1000}},
			Secrets: secrets,
		})
		if err := cluster.Client.Create(ctx, b); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), b) })
	}
	cs, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	bc := events.NewBroadcaster(&events.EventSinkImpl{Interface: cs.EventsV1()})
	stop := make(chan struct{})
	defer close(stop)
	bc.StartRecordingToSink(stop)
	defer bc.Shutdown()
	t.Cleanup(func() {
		var evs eventsv1.EventList
		if err := cluster.Client.List(context.Background(), &evs, client.InNamespace(metav1.NamespaceDefault)); err != nil {
			return
		}
		for i := range evs.Items {
			if e := &evs.Items[i]; e.Regarding.Kind == "EmbeddingBudget" && (e.Regarding.Name == names[0] || e.Regarding.Name == names[1]) {
				_ = cluster.Client.Delete(context.Background(), e)
			}
		}
	})
	w := &controllers.BudgetStatusWriter{Client: cluster.Client, Recorder: bc.NewRecorder(cluster.Scheme, "vectordb-operator"),
		Snapshot: func() []ratelease.Snapshot { return nil }}
	for _, name := range names {
		eventually(t, "status of "+name+" written", 10*time.Second, func() (bool, string) {
			if err := w.Pass(ctx); err != nil {
				return false, err.Error()
			}
			b := getBudget(t, name)
			return meta.IsStatusConditionTrue(b.Status.Conditions, embeddingbudget.ConditionConflicting), condition(b, embeddingbudget.ConditionConflicting)
		})
		if c := condition(getBudget(t, name), embeddingbudget.ConditionConflicting); len(c) <= 1024 {
			t.Fatalf("condition of %d bytes: the test needs one longer than an event's note", len(c))
		}
		eventually(t, "SharedClaim event of "+name, 20*time.Second, func() (bool, string) {
			evs, err := budgetEvents(name)
			if err != nil {
				return false, err.Error()
			}
			note, ok := evs[embeddingbudget.ReasonSharedClaim]
			return ok && len(note) <= 1024 && strings.Contains(note, "openai-key-of-the-team-number-00"), fmt.Sprint(evs)
		})
	}
}

// TestEmbeddingBudgetBackoffSurvivesALeaderChange: the old leader wrote the budget backed off to
// half (status: effective ÷ declared); a new leader resolving an ingestion it claims resumes the
// budget from there, and its first lease is half the declaration, not the full budget the
// provider was refusing.
func TestEmbeddingBudgetBackoffSurvivesALeaderChange(t *testing.T) {
	ctx := context.Background()
	ns := newNamespace(t)
	const model = "text-embedding-3-small"
	ing := create(t, newIngestion(ns, "eb-resume", nil))
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), ing) })
	halvedBudget(t, "eb-resume-"+ns, ns, model)

	res := manager.DeclaredBudgets(cluster.Client, logr.Discard())
	got, err := res.Resolve(ctx, ns, ing.Name, model)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got.LastFactor-0.5) > 1e-9 {
		t.Fatalf("resolved %+v: want the last leader's factor 0.5", got)
	}
	srv, err := ratelease.NewServer(ratelease.ServerOptions{Key: []byte("resume-test-key-0123456789"), Resolver: res})
	if err != nil {
		t.Fatal(err)
	}
	l, err := srv.Renew(ratelease.RenewRequest{Namespace: ns, Ingestion: ing.Name, Job: "j", Holder: "p", Model: model}, got)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(l.TPM-450_000) > 1 || math.Abs(l.RPM-150) > 1e-6 {
		t.Fatalf("the new leader's first lease: %g RPM, %g TPM; want 150 and 450000 (half, as the last leader left it)", l.RPM, l.TPM)
	}
}

// halvedBudget creates an EmbeddingBudget of 300 RPM and 900,000 TPM of model for namespace ns
// whose status shows it backed off to half, as a leader that has since gone left it.
func halvedBudget(t *testing.T, name, ns, model string) *v1alpha1.EmbeddingBudget {
	t.Helper()
	ctx := context.Background()
	b := newBudget(name, v1alpha1.EmbeddingBudgetSpec{
		Models:     []v1alpha1.BudgetModel{{Name: model, RequestsPerMinute: 300, TokensPerMinute: 900_000}},
		Namespaces: []v1alpha1.BudgetNamespace{{Name: ns, Weight: 1}},
	})
	if err := cluster.Client.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), b) })
	b.Status = v1alpha1.EmbeddingBudgetStatus{Models: []v1alpha1.BudgetModelStatus{{Name: model,
		Declared:  v1alpha1.BudgetRates{RequestsPerMinute: 300, TokensPerMinute: 900_000},
		Effective: v1alpha1.BudgetRates{RequestsPerMinute: 150, TokensPerMinute: 450_000}}}}
	if err := cluster.Client.Status().Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	return b
}
