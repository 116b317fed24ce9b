package controllers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/manager"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// leaseManager starts a manager with the rate lease service on a free port; it returns the
// service's URL and the credential key.
func leaseManager(t *testing.T, ns string) (string, []byte) {
	t.Helper()
	key := []byte("ctl-test-rate-lease-key-0123456789")
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, append(key, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	url := "http://" + addr + ratelease.Path
	// The manager's own pod (no kubelet runs it here): the leader labels it for the lease Service.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "manager", Namespace: ns},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "manager", Image: "manager:test"}}}}
	if err := cluster.Client.Create(context.Background(), pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), pod) })
	startManagerWith(t, nil, func(o *manager.Options) {
		o.RateLease.Addr, o.RateLease.URL, o.RateLease.KeyFile = addr, url, keyFile
		o.RateLease.PodName, o.RateLease.PodNamespace = pod.Name, ns
	}, ns)
	eventually(t, "leader pod labelled", 30*time.Second, func() (bool, string) {
		var p corev1.Pod
		if err := cluster.Client.Get(context.Background(), client.ObjectKeyFromObject(pod), &p); err != nil {
			return false, err.Error()
		}
		return p.Labels[manager.LabelLeader] == "true", fmt.Sprint(p.Labels)
	})
	return url, key
}

// renewAs posts a renewal as a chunk pod of ns/ing would.
func renewAs(t *testing.T, url, cred, ns, ing, job string) (int, ratelease.Lease, string) {
	t.Helper()
	body, _ := json.Marshal(ratelease.RenewRequest{Namespace: ns, Ingestion: ing, Job: job, Holder: job + "-pod",
		Model: "text-embedding-3-small", MaxRequestTokens: 8000, RemainingRequests: -1, RemainingTokens: -1})
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+cred)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, ratelease.Lease{}, err.Error()
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(resp.Body)
	var l ratelease.Lease
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(buf.Bytes(), &l); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode, l, buf.String()
}

// TestRateLeases: with the lease service on, each ingestion gets a lease Secret it owns, its
// chunk Jobs get the service's URL and the credential by secretKeyRef only, and the leader
// divides the key's budget between the ingestions on it (not by their number of pods), follows
// budget edits at the next renewal, and refuses a pod leasing for another ingestion.
func TestRateLeases(t *testing.T) {
	ns := newNamespace(t)
	url, key := leaseManager(t, ns)
	ctx := context.Background()

	a := create(t, newIngestion(ns, "lease-a", func(o *v1alpha1.CsvIngestion) { o.Spec.Chunking.Parallelism = 2 }))
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), a) })
	waitPhase(t, a, v1alpha1.PhasePlanning)
	// The planner's vector-space guard calls the provider too: its Job leases like a chunk's, and
	// the lease Secret is written before it.
	var planners []batchv1.Job
	eventually(t, "the planner job", 30*time.Second, func() (bool, string) {
		planners = listJobs(t, a, worker.RolePlan)
		return len(planners) == 1, fmt.Sprintf("%d jobs", len(planners))
	})
	penv := envByName(planners[0].Spec.Template.Spec.Containers[0])
	checkSecretRef(t, penv, ratelease.EnvCredential, ratelease.SecretName(a.Name), ratelease.SecretKey)
	if penv[ratelease.EnvURL].Value != url || penv[ratelease.EnvJob].Value != planners[0].Name {
		t.Errorf("planner %s: lease env %+v", planners[0].Name, penv)
	}
	if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: ratelease.SecretName(a.Name)}, &corev1.Secret{}); err != nil {
		t.Fatalf("the lease Secret is not there when the planner Job is: %v", err)
	}
	writePlan(t, get(t, a), 3000, 1000)
	var chunks []batchv1.Job
	eventually(t, "2 chunk jobs", 30*time.Second, func() (bool, string) {
		chunks = listJobs(t, a, worker.RoleChunk)
		return len(chunks) == 2, fmt.Sprintf("%d jobs", len(chunks))
	})
	// The status names the budget the chunk pods lease from (the metrics' budget label).
	eventually(t, "status.rateBudget", 30*time.Second, func() (bool, string) {
		got := get(t, a).Status.RateBudget
		return got == manager.ImplicitBudgetKey(ns, a.Spec.Embedding), got
	})
	secret := ratelease.SecretName(a.Name)
	for _, j := range chunks {
		env := envByName(j.Spec.Template.Spec.Containers[0])
		checkSecretRef(t, env, ratelease.EnvCredential, secret, ratelease.SecretKey)
		// Optional: a lease Secret deleted under the run must not keep later pods from starting.
		if ref := env[ratelease.EnvCredential].ValueFrom; ref == nil || ref.SecretKeyRef == nil || ref.SecretKeyRef.Optional == nil || !*ref.SecretKeyRef.Optional {
			t.Errorf("%s: the lease credential's secretKeyRef must be optional", j.Name)
		}
		if env[ratelease.EnvURL].Value != url || env[ratelease.EnvJob].Value != j.Name {
			t.Errorf("%s: lease env %+v", j.Name, env)
		}
		if f := env[ratelease.EnvPod].ValueFrom; f == nil || f.FieldRef == nil || f.FieldRef.FieldPath != "metadata.name" {
			t.Errorf("%s: %s must come from the downward API", j.Name, ratelease.EnvPod)
		}
		if strings.Contains(mustJSON(j), ratelease.Credential(key, ns, a.Name)) {
			t.Errorf("%s: the credential is in the Job", j.Name)
		}
	}
	var s corev1.Secret
	if err := cluster.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: secret}, &s); err != nil {
		t.Fatal(err)
	}
	cred := string(s.Data[ratelease.SecretKey])
	if cred != ratelease.Credential(key, ns, a.Name) {
		t.Fatalf("Secret %s holds %q, not the ingestion's credential", secret, cred)
	}
	if owner := metav1.GetControllerOf(&s); owner == nil || owner.UID != get(t, a).UID {
		t.Fatalf("Secret %s is not owned by its ingestion: %+v", secret, s.OwnerReferences)
	}

	// The leader serves leases; a's two pods share the whole budget (300 RPM, 1,000,000 TPM).
	var la0, la1 ratelease.Lease
	eventually(t, "leases served", 30*time.Second, func() (bool, string) {
		code, l, body := renewAs(t, url, cred, ns, a.Name, chunks[0].Name)
		la0 = l
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	// A second ingestion on the same key (same Secret, baseURL, model): its credential is made
	// the same way the controller makes it.
	b := create(t, newIngestion(ns, "lease-b", nil))
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), b) })
	credB := ratelease.Credential(key, ns, b.Name)
	// The lease service finds ingestions in the manager's cache, which may lag the create.
	eventually(t, "b known to the lease service", 10*time.Second, func() (bool, string) {
		code, _, body := renewAs(t, url, credB, ns, b.Name, "lease-b-chunk-0")
		return code == http.StatusOK, fmt.Sprintf("%d %s", code, body)
	})
	round := func() (ratelease.Lease, ratelease.Lease, ratelease.Lease) {
		t.Helper()
		var lb ratelease.Lease
		for range 3 { // in the worst order a newcomer fills its share in the third round
			var code [3]int
			var body [3]string
			code[0], la0, body[0] = renewAs(t, url, cred, ns, a.Name, chunks[0].Name)
			code[1], la1, body[1] = renewAs(t, url, cred, ns, a.Name, chunks[1].Name)
			code[2], lb, body[2] = renewAs(t, url, credB, ns, b.Name, "lease-b-chunk-0")
			for i := range code {
				if code[i] != http.StatusOK {
					t.Fatalf("renewal %d: %d %s", i, code[i], body[i])
				}
			}
			if sum := la0.TPM + la1.TPM + lb.TPM; sum > 1_000_000+1 {
				t.Fatalf("grants add up to %g TPM, budget 1,000,000", sum)
			}
		}
		return la0, la1, lb
	}
	about := func(a, b float64) bool { return math.Abs(a-b) < 1 }
	la0, la1, lb := round()
	if !about(la0.TPM, 250_000) || !about(la1.TPM, 250_000) || !about(lb.TPM, 500_000) || !about(lb.RPM, 150) {
		t.Fatalf("a's pods %g + %g TPM, b %g TPM %g RPM: want a and b half each, a's half split between its pods", la0.TPM, la1.TPM, lb.TPM, lb.RPM)
	}
	if lb.Holders != 3 || !about(lb.Fallback.TPM, 1_000_000.0/3) {
		t.Fatalf("lease %+v: want 3 holders and a fallback of a third", lb)
	}

	// Budget edits reach the pods at their next renewal (once the manager's cache has them).
	for _, o := range []*v1alpha1.CsvIngestion{a, b} {
		update(t, o, func(o *v1alpha1.CsvIngestion) { o.Spec.Embedding.TokensPerMinute = 400_000 })
	}
	eventually(t, "lowered budget granted", 30*time.Second, func() (bool, string) {
		la0, la1, lb = round()
		return about(la0.TPM+la1.TPM+lb.TPM, 400_000) && about(lb.TPM, 200_000), fmt.Sprintf("%g %g %g", la0.TPM, la1.TPM, lb.TPM)
	})

	// A pod may lease only for its own ingestion.
	code, _, body := renewAs(t, url, cred, ns, b.Name, "lease-b-chunk-0")
	if code != http.StatusForbidden || !strings.Contains(body, "may only lease for the ingestion its Job belongs to") {
		t.Fatalf("a's credential for b: %d %s, want 403", code, body)
	}

	// The budget's series.
	eventually(t, "holders metric", 10*time.Second, func() (bool, string) {
		v, err := gaugeValue(ratelease.MetricHolders, manager.ImplicitBudgetKey(ns, a.Spec.Embedding))
		return err == nil && v == 3, fmt.Sprint(v, err)
	})
}

// TestRateLeaseSecretRefused: a lease Secret the API server refuses (a quota) blocks the chunk
// Jobs with the server's message; none starts without its credential; they start once the
// quota goes.
func TestRateLeaseSecretRefused(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "no-secrets", Namespace: ns},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourceSecrets: resource.MustParse("0")}}}
	if err := cluster.Client.Create(ctx, q); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), q) })
	// As kube-controller-manager's quota controller would (none runs here).
	q.Status.Hard, q.Status.Used = q.Spec.Hard, corev1.ResourceList{corev1.ResourceSecrets: resource.MustParse("0")}
	if err := cluster.Client.Status().Update(ctx, q); err != nil {
		t.Fatal(err)
	}
	eventually(t, "quota enforced", 30*time.Second, func() (bool, string) {
		err := cluster.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "probe", Namespace: ns}}, client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), "exceeded quota"), fmt.Sprint(err)
	})
	leaseManager(t, ns)
	obj := create(t, newIngestion(ns, "lease-quota", nil))
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), obj) })
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, get(t, obj), 3000, 1000)
	var cond *metav1.Condition
	eventually(t, "Blocked", 30*time.Second, func() (bool, string) {
		cond = meta.FindStatusCondition(get(t, obj).Status.Conditions, v1alpha1.ConditionBlocked)
		return cond != nil && cond.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", cond)
	})
	if !strings.Contains(cond.Message, "exceeded quota") || !strings.Contains(cond.Message, "rate lease Secret") {
		t.Errorf("Blocked message %q must carry the server's message and what was refused", cond.Message)
	}
	wantEvents(t, obj, "Blocked")
	if n := len(listJobs(t, obj, worker.RoleChunk)); n != 0 {
		t.Fatalf("%d chunk jobs exist without their lease Secret", n)
	}
	if err := cluster.Client.Delete(ctx, q); err != nil {
		t.Fatal(err)
	}
	eventually(t, "chunk jobs after the quota went", 60*time.Second, func() (bool, string) {
		n := len(listJobs(t, obj, worker.RoleChunk))
		return n > 0, fmt.Sprintf("%d jobs", n)
	})
}

// gaugeValue reads one series of the manager's registry by its budget label.
func gaugeValue(name, budget string) (float64, error) {
	mfs, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		return 0, err
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "budget" && l.GetValue() == budget {
					return m.GetGauge().GetValue(), nil
				}
			}
		}
	}
	return 0, fmt.Errorf("no %s{budget=%q}", name, budget)
}

// TestRateLeaseSecretOfAnother: a Secret of the lease Secret's name that the ingestion does not
// own is never overwritten (the controller cannot read it to check; the server refuses the
// patch); the ingestion is Blocked saying so until it is gone.
func TestRateLeaseSecretOfAnother(t *testing.T) {
	ns := newNamespace(t)
	ctx := context.Background()
	foreign := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: ratelease.SecretName("lease-foreign"), Namespace: ns},
		Data: map[string][]byte{ratelease.SecretKey: []byte("theirs")}}
	if err := cluster.Client.Create(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), foreign) })
	_, key := leaseManager(t, ns)
	obj := create(t, newIngestion(ns, "lease-foreign", nil))
	t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), obj) })
	waitPhase(t, obj, v1alpha1.PhasePlanning)
	writePlan(t, get(t, obj), 3000, 1000)
	var cond *metav1.Condition
	eventually(t, "Blocked", 30*time.Second, func() (bool, string) {
		cond = meta.FindStatusCondition(get(t, obj).Status.Conditions, v1alpha1.ConditionBlocked)
		return cond != nil && cond.Status == metav1.ConditionTrue, fmt.Sprintf("%+v", cond)
	})
	if !strings.Contains(cond.Message, "is not this ingestion's") {
		t.Errorf("Blocked message %q must say the Secret is someone else's", cond.Message)
	}
	var s corev1.Secret
	if err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(foreign), &s); err != nil {
		t.Fatal(err)
	}
	if string(s.Data[ratelease.SecretKey]) != "theirs" {
		t.Fatalf("the foreign Secret was overwritten: %q", s.Data[ratelease.SecretKey])
	}
	if n := len(listJobs(t, obj, worker.RoleChunk)); n != 0 {
		t.Fatalf("%d chunk jobs exist without their lease Secret", n)
	}
	if err := cluster.Client.Delete(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	eventually(t, "own lease Secret and chunk jobs", 60*time.Second, func() (bool, string) {
		var s corev1.Secret
		err := cluster.Client.Get(ctx, client.ObjectKeyFromObject(foreign), &s)
		n := len(listJobs(t, obj, worker.RoleChunk))
		return err == nil && string(s.Data[ratelease.SecretKey]) == ratelease.Credential(key, ns, obj.Name) && n > 0,
			fmt.Sprintf("%v, %d jobs", err, n)
	})
}
