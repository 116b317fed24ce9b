package panics_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"github.com/prometheus/common/expfmt"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/test/panics"
)

// The guard works: a controller whose Reconcile panics, run by controller-runtime exactly as
// the manager runs ours (recovering the panic), is caught both through the in-process registry
// and through the text a manager binary serves on /metrics, and the panic is in its log. The
// panicking reconciler exists only in this test.
func TestCatchesARecoveredReconcilePanic(t *testing.T) {
	before, err := panics.FromGatherer(ctrlmetrics.Registry)
	if err != nil {
		t.Fatal(err)
	}
	if err := before.Err(); err != nil {
		t.Fatalf("panics before the probe ran: %v", err)
	}

	var logBuf bytes.Buffer
	var logMu sync.Mutex
	log := funcr.New(func(prefix, args string) {
		logMu.Lock()
		defer logMu.Unlock()
		fmt.Fprintln(&logBuf, prefix, args)
	}, funcr.Options{})
	reconciled := make(chan struct{}, 10)
	name := fmt.Sprintf("panic-probe-%d", time.Now().UnixNano())
	c, err := controller.NewUnmanaged(name, controller.Options{
		SkipNameValidation: ptr.To(true),
		LogConstructor:     func(*reconcile.Request) logr.Logger { return log },
		Reconciler: reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			reconciled <- struct{}{}
			var kids map[string]string
			kids[req.Name] = "boom" // assignment to a nil map: a real runtime panic
			return reconcile.Result{}, nil
		}),
	})
	if err != nil {
		t.Fatal(err)
	}
	events := make(chan event.GenericEvent, 1)
	if err := c.Watch(source.Channel(events, &handler.EnqueueRequestForObject{})); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Start(ctx) }()
	stop := sync.OnceFunc(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("controller: %v", err)
		}
	})
	defer stop()
	events <- event.GenericEvent{Object: &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "probe"}}}

	var got panics.Counts
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		if got, err = panics.FromGatherer(ctrlmetrics.Registry); err != nil {
			t.Fatal(err)
		}
		// controller-runtime counts the panic and logs it in the same recover; wait for both.
		logMu.Lock()
		logged := panics.InLog(logBuf.String())
		logMu.Unlock()
		if got.Since(before)[name] >= 1 && logged >= 1 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-reconciled:
	default:
		t.Fatal("the probe never reconciled")
	}
	since := got.Since(before)
	if since[name] < 1 {
		t.Fatalf("the guard did not see the probe's panic: %v", got)
	}
	err = since.Err()
	if err == nil || !strings.Contains(err.Error(), name+": ") {
		t.Fatalf("Err() = %v, want an error naming %s", err, name)
	}

	logMu.Lock()
	logged := panics.InLog(logBuf.String())
	logMu.Unlock()
	if logged < 1 {
		t.Errorf("the panic is not in the controller's log (%q):\n%s", panics.LogMarker, logBuf.String())
	}

	// The same through the exposition format, as a manager binary serves it. The probe panics
	// again on every requeue: stop it first, so both reads see the same count.
	stop()
	if got, err = panics.FromGatherer(ctrlmetrics.Registry); err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	enc := expfmt.NewEncoder(&text, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, f := range families {
		if err := enc.Encode(f); err != nil {
			t.Fatal(err)
		}
	}
	fromText, err := panics.FromText(&text)
	if err != nil {
		t.Fatal(err)
	}
	if fromText[name] != got[name] {
		t.Fatalf("from /metrics text %v, from the registry %v", fromText[name], got[name])
	}
}

func TestCounts(t *testing.T) {
	none := panics.Counts{"csvingestion": 0}
	if err := none.Err(); err != nil {
		t.Errorf("zero counts: %v", err)
	}
	if err := (panics.Counts{}).Err(); err != nil {
		t.Errorf("no series: %v", err)
	}
	// Two manager processes (a restart resets the counter): their counts add up.
	sum := panics.Counts{"csvingestion": 1}.Add(panics.Counts{"csvingestion": 2, "other": 1})
	if sum["csvingestion"] != 3 || sum["other"] != 1 {
		t.Errorf("Add = %v", sum)
	}
	if err := sum.Err(); err == nil || !strings.Contains(err.Error(), "csvingestion: 3, other: 1") {
		t.Errorf("Err = %v", err)
	}
	if d := (panics.Counts{"csvingestion": 5}).Since(panics.Counts{"csvingestion": 5}); d.Err() != nil {
		t.Errorf("no new panics: %v", d)
	}
	text := "# TYPE controller_runtime_reconcile_panics_total counter\n" +
		`controller_runtime_reconcile_panics_total{controller="csvingestion"} 2` + "\n"
	c, err := panics.FromText(strings.NewReader(text))
	if err != nil || c["csvingestion"] != 2 {
		t.Errorf("FromText = %v, %v", c, err)
	}
	if n := panics.InLog(`{"level":"error","msg":"Observed a panic","panic":"x"}` + "\n" + `{"msg":"Observed a panic"}`); n != 2 {
		t.Errorf("InLog = %d", n)
	}
}
