package manager

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/embeddingbudget"
	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
)

// RateLeaseOptions configure the rate lease service (package ratelease). It is on when KeyFile
// and URL are set; off, every chunk keeps the budget share frozen into its Job.
type RateLeaseOptions struct {
	// Addr the leader serves ratelease.Path on.
	Addr string
	// URL is what pods call: the Service in front of the manager, e.g.
	// http://vectordb-operator-leases.vectordb-system.svc:8083/v1/rate-leases.
	URL string
	// KeyFile holds the key (≥ 16 bytes) the per-ingestion credentials are made with (a Secret
	// of the manager's namespace, mounted).
	KeyFile string
	// Renew is how often pods renew; leases last three renewals.
	Renew time.Duration
	// StatusInterval is how often the leader writes the EmbeddingBudgets' status (when changed).
	StatusInterval time.Duration
	// PodName and PodNamespace name this replica's pod (downward API). When set, the leader
	// labels its pod LabelLeader so that the lease Service reaches only the leader, and every
	// replica removes the label from its pod when it starts (a restarted ex-leader).
	PodName, PodNamespace string
}

// LabelLeader marks the manager pod that serves rate leases (the lease Service's selector).
const LabelLeader = "ingestion.vectordb.io/rate-lease-leader"

// The leader labels its own pod for the lease Service (the chart's Role in its namespace).
// +kubebuilder:rbac:groups="",resources=pods,verbs=patch,namespace=vectordb-system

func bindRateLeaseFlags(fs *pflag.FlagSet, o *RateLeaseOptions) {
	fs.StringVar(&o.Addr, "rate-lease-bind-address", o.Addr, "address the leader serves rate leases on")
	fs.StringVar(&o.URL, "rate-lease-url", o.URL, "URL chunk pods renew their rate leases at (empty, or no --rate-lease-key-file: leases off, each chunk keeps its frozen share)")
	fs.StringVar(&o.KeyFile, "rate-lease-key-file", o.KeyFile, "file with the key of the rate lease credentials (at least 16 bytes)")
	fs.DurationVar(&o.Renew, "rate-lease-renew", o.Renew, "how often chunk pods renew their rate lease (leases last three renewals)")
	fs.DurationVar(&o.StatusInterval, "rate-lease-status-interval", o.StatusInterval, "how often the leader writes the status of the EmbeddingBudgets (only those that changed)")
}

func defaultRateLeaseOptions() RateLeaseOptions {
	// Renew: a finished pod's share idles until the others renew, so a shorter period hands it on
	// sooner (the fleet bench lost about 2 % of its floor at 5 s); each renewal is one small POST.
	return RateLeaseOptions{Addr: ":8083", Renew: 3 * time.Second, StatusInterval: 5 * time.Second,
		PodName: os.Getenv("POD_NAME"), PodNamespace: os.Getenv("POD_NAMESPACE")}
}

// rateLeaseKey reads the key, or returns nil when leases are off.
func rateLeaseKey(o RateLeaseOptions) ([]byte, error) {
	if o.KeyFile == "" || o.URL == "" {
		return nil, nil
	}
	b, err := os.ReadFile(o.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("--rate-lease-key-file: %w", err)
	}
	key := []byte(strings.TrimSpace(string(b)))
	if len(key) < 16 {
		return nil, fmt.Errorf("--rate-lease-key-file %s: the key has %d bytes, want at least 16", o.KeyFile, len(key))
	}
	return key, nil
}

// leaseMetrics are registered once per process (tests start several managers).
var leaseMetrics = sync.OnceValues(func() (*ratelease.Metrics, error) { return ratelease.NewMetrics(metrics.Registry) })

// addRateLeases adds the lease service, served by the leader only: its state is soft and a
// new leader re-learns it from the renewals (see ratelease.Server). The same listener takes the
// batch-mode chunks' live batch reports (ratelease.ReportPath), kept in the returned store for
// the controller.
func addRateLeases(ctx context.Context, mgr ctrl.Manager, o RateLeaseOptions, key []byte, res ratelease.Resolver) (*ratelease.Reports, error) {
	m, err := leaseMetrics()
	if err != nil {
		return nil, fmt.Errorf("rate lease metrics: %w", err)
	}
	log := mgr.GetLogger().WithName("rate-leases")
	srv, err := ratelease.NewServer(ratelease.ServerOptions{
		Key: key, Resolver: res, Renew: o.Renew,
		Log: log, Metrics: m,
	})
	if err != nil {
		return nil, err
	}
	reports, err := ratelease.NewReports(ratelease.ReportsOptions{Key: key, Log: mgr.GetLogger().WithName("batch-reports")})
	if err != nil {
		return nil, err
	}
	// The leader writes each EmbeddingBudget's status from the server's state.
	// It waits one lease period (the server's TTL, three renewals) after becoming leader, by
	// which time every live pod has renewed with it.
	if err := mgr.Add(&controllers.BudgetStatusWriter{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("vectordb-operator"),
		Snapshot: srv.Snapshot, Interval: o.StatusInterval, Warmup: 3 * o.Renew, Log: mgr.GetLogger().WithName("embedding-budgets")}); err != nil {
		return nil, err
	}
	l := &leaseRunnable{addr: o.Addr, handler: srv, reports: reports}
	if o.PodName != "" && o.PodNamespace != "" {
		l.label = func(ctx context.Context, on bool) error { return labelLeader(ctx, mgr.GetClient(), o, on) }
		// A restarted ex-leader must not keep receiving renewals it no longer answers.
		if err := l.label(ctx, false); err != nil {
			return nil, err
		}
	}
	return reports, mgr.Add(l)
}

// labelLeader sets or removes LabelLeader on this replica's pod.
func labelLeader(ctx context.Context, c client.Client, o RateLeaseOptions, on bool) error {
	var v any // null removes the label
	if on {
		v = "true"
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"labels": map[string]any{LabelLeader: v}}})
	if err != nil {
		return err
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: o.PodName, Namespace: o.PodNamespace}}
	if err := c.Patch(ctx, pod, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("label pod %s/%s for the rate lease Service: %w", o.PodNamespace, o.PodName, err)
	}
	return nil
}

// The lease service reads the declared budgets, and the leader writes their status.
// +kubebuilder:rbac:groups=ingestion.vectordb.io,resources=embeddingbudgets,verbs=get;list;watch
// +kubebuilder:rbac:groups=ingestion.vectordb.io,resources=embeddingbudgets/status,verbs=update

// DeclaredBudgets resolves an ingestion's budget: the EmbeddingBudget that claims its key Secret
// or namespace (package embeddingbudget decides which) when it lists the ingestion's model, else
// the implicit budget of its spec (ImplicitBudgets). It reads the manager's cache on every
// renewal, so budget edits reach the pods at their next renewal. Without the EmbeddingBudget
// CRD installed every budget is implicit; the resolver then asks again only every noCRDRecheck,
// since each miss costs a discovery request to the API server.
func DeclaredBudgets(c client.Reader, log logr.Logger) ratelease.Resolver {
	return declaredBudgets(c, log, time.Now)
}

// noCRDRecheck is how long the resolver trusts that the EmbeddingBudget CRD is absent: a REST
// mapping miss makes the client ask the API server's discovery, which must not happen on every
// renewal of every pod. A CRD installed later is picked up within this.
const noCRDRecheck = time.Minute

// budgetListTimeout bounds reading the budgets from the cache (instant once synced; the first
// read waits for the sync, which goes on in the background when this expires).
const budgetListTimeout = 2 * time.Second

func declaredBudgets(c client.Reader, log logr.Logger, now func() time.Time) ratelease.Resolver {
	var (
		mu          sync.Mutex
		absentUntil time.Time
		absent      bool // last seen absent, for logging the change once
	)
	return ratelease.ResolverFunc(func(ctx context.Context, ns, name, _ string) (ratelease.Budget, error) {
		obj, err := getIngestion(ctx, c, ns, name)
		if err != nil {
			return ratelease.Budget{}, err
		}
		var list v1alpha1.EmbeddingBudgetList
		mu.Lock()
		skip := now().Before(absentUntil)
		mu.Unlock()
		if !skip {
			// Bounded: the cache waits for its informer to sync, which never happens when the
			// manager may not list the budgets, and the pod's renewal would hang until it gives
			// up, with no word of why.
			lctx, cancel := context.WithTimeout(ctx, budgetListTimeout)
			err := c.List(lctx, &list)
			timedOut := lctx.Err() != nil && ctx.Err() == nil
			cancel()
			switch {
			case err != nil && timedOut:
				return ratelease.Budget{}, fmt.Errorf("list EmbeddingBudgets: not synced within %s: is the manager allowed to get, list and watch "+
					"embeddingbudgets.ingestion.vectordb.io cluster-wide (the chart's <release>-embedding-budgets ClusterRole)? %w", budgetListTimeout, err)
			case err != nil && !meta.IsNoMatchError(err):
				return ratelease.Budget{}, fmt.Errorf("list EmbeddingBudgets: %w", err)
			}
			mu.Lock()
			switch {
			case err != nil:
				absentUntil = now().Add(noCRDRecheck)
				if !absent {
					log.Info("the EmbeddingBudget CRD is not installed: every ingestion keeps the implicit budget of its spec", "recheck", noCRDRecheck)
				}
				absent = true
			case absent:
				log.Info("the EmbeddingBudget CRD is installed: ingestions draw from the budgets that claim them")
				absent = false
			}
			mu.Unlock()
		}
		e := obj.Spec.Embedding
		m := embeddingbudget.Find(list.Items, ns, e.APIKeySecretRef.Name, e.Model)
		if m.Budget == nil || m.Model == nil {
			// Unclaimed, or claimed with a model the budget does not list: the budget's
			// UnlistedModels condition names the latter.
			return implicitBudget(obj), nil
		}
		return ratelease.Budget{
			Key:        embeddingbudget.Key(m.Budget.Name, e.Model),
			Declared:   ratebudget.Rates{RPM: float64(m.Model.RequestsPerMinute), TPM: float64(m.Model.TokensPerMinute)},
			Weight:     m.Weight,
			MaxHolders: int(obj.Spec.Chunking.Parallelism),
			LastFactor: embeddingbudget.LastFactor(m.Budget, e.Model),
		}, nil
	})
}

func getIngestion(ctx context.Context, c client.Reader, ns, name string) (*v1alpha1.CsvIngestion, error) {
	var obj v1alpha1.CsvIngestion
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, ratelease.ErrNotFound
		}
		return nil, fmt.Errorf("get ingestion %s/%s: %w", ns, name, err)
	}
	return &obj, nil
}

// ImplicitBudgets resolves an ingestion's budget from its spec: the key is (namespace, key
// Secret and its key, baseURL, model), the budget spec.embedding.requestsPerMinute and
// tokensPerMinute, so existing specs share their key's budget without declaring one.
func ImplicitBudgets(c client.Reader) ratelease.Resolver {
	return ratelease.ResolverFunc(func(ctx context.Context, ns, name, _ string) (ratelease.Budget, error) {
		obj, err := getIngestion(ctx, c, ns, name)
		if err != nil {
			return ratelease.Budget{}, err
		}
		return implicitBudget(obj), nil
	})
}

func implicitBudget(obj *v1alpha1.CsvIngestion) ratelease.Budget {
	e := obj.Spec.Embedding
	return ratelease.Budget{
		Key:      ImplicitBudgetKey(obj.Namespace, e),
		Declared: ratebudget.Rates{RPM: float64(e.RequestsPerMinute), TPM: float64(e.TokensPerMinute)},
		Weight:   1,
		// The chunk Jobs that may run at once; 0 (defaulted by the API server) is no bound.
		MaxHolders: int(obj.Spec.Chunking.Parallelism),
	}
}

// ImplicitBudgetKey names the budget of an ingestion that declares none. The key is a metric
// label and is sent to pods, so the base URL goes without its user info, query and fragment
// (where a proxy's credential could be).
func ImplicitBudgetKey(ns string, e v1alpha1.EmbeddingSpec) string {
	return fmt.Sprintf("%s/%s:%s/%s/%s", ns, e.APIKeySecretRef.Name, e.APIKeySecretRef.Key, endpoint(e.BaseURL), e.Model)
}

// endpoint is a base URL without user info, query or fragment (one that does not parse: its
// scheme only, which the CRD's pattern guarantees).
func endpoint(base string) string {
	u, err := url.Parse(base)
	if err != nil {
		scheme, _, _ := strings.Cut(base, "://")
		return scheme + "://?"
	}
	u.User, u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = nil, "", false, "", ""
	return u.String()
}

// leaseRunnable serves the lease service while this replica leads.
type leaseRunnable struct {
	addr    string
	handler http.Handler
	reports http.Handler                      // nil: no batch reports
	label   func(context.Context, bool) error // nil: no pod to label
}

func (l *leaseRunnable) NeedLeaderElection() bool { return true }

func (l *leaseRunnable) Start(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.Handle(ratelease.Path, l.handler)
	if l.reports != nil {
		mux.Handle(ratelease.ReportPath, l.reports)
	}
	srv := &http.Server{Addr: l.addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", l.addr)
	if err != nil {
		return fmt.Errorf("rate leases: listen on %s: %w", l.addr, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	if l.label != nil {
		if err := l.label(ctx, true); err != nil {
			_ = srv.Close()
			return err
		}
	}
	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(sctx)
	case err := <-errc:
		return fmt.Errorf("rate leases: %w", err)
	}
}
