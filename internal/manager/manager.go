// Package manager assembles the operator process: the controller-runtime manager with a cache
// limited to the operator's own children, the CsvIngestion reconciler, the task-table tracker and
// the HTTP shim. cmd/manager only parses flags and calls Run.
package manager

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"go.uber.org/zap/zapcore"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/controllers"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
	"github.com/vectordb-io/vectordb-operator/internal/shim"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/tracking"
	"github.com/vectordb-io/vectordb-operator/internal/version"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Options are the manager's flags.
type Options struct {
	MetricsAddr string
	// MetricsSecure serves /metrics over HTTPS to authenticated, authorized callers only (a
	// TokenReview and a SubjectAccessReview for GET /metrics per caller; the metrics-reader
	// ClusterRole grants it). False serves plain HTTP to anyone who can reach the port.
	MetricsSecure bool
	// MetricsCertDir holds tls.crt and tls.key for /metrics; empty: a self-signed certificate.
	MetricsCertDir string
	ProbeAddr      string
	// PprofAddr serves net/http/pprof for profiling the manager; "0" or empty: off. It exposes
	// internals, so bind it to loopback or a port no one else reaches.
	PprofAddr               string
	LeaderElect             bool
	LeaderElectionNamespace string
	LeaderElectionID        string
	WatchNamespaces         []string
	Controller              controllers.Config
	// Tracking is on unless disabled: specs ask for it per ingestion.
	DisableTracking bool
	// DynamoDBEndpoint overrides the endpoint of every task table (tests, local stacks).
	DynamoDBEndpoint string
	// TaskRetention sets each task item's expires_at (DynamoDB TTL) this long after the task
	// ended; 0: items are kept forever.
	TaskRetention time.Duration
	// TrackingPolicy limits the task tables and endpoints specs may name (the manager signs
	// task-table requests with its own identity). The API's own table and endpoint are added.
	TrackingPolicy tracking.Policy
	LogDevelopment bool
	LogLevel       int
	Shim           ShimOptions
	RateLease      RateLeaseOptions

	// RESTConfig, when set, is used instead of the kubeconfig/in-cluster config (tests).
	RESTConfig *rest.Config
	// WrapClient, when set, wraps the manager's client (tests count API calls with it).
	WrapClient func(client.WithWatch) client.Client
}

// DefaultOptions are the flags' defaults.
func DefaultOptions() Options {
	return Options{
		MetricsAddr:      ":8443",
		MetricsSecure:    true,
		ProbeAddr:        ":8081",
		LeaderElectionID: "vectordb-operator.ingestion.vectordb.io",
		Controller: controllers.Config{
			EmbedderImage:           "ghcr.io/vectordb-io/vectordb-embedder:" + version.Version,
			WorkerServiceAccount:    "vectordb-embedder",
			JobTTL:                  time.Hour,
			FinalizerTimeout:        30 * time.Second,
			MaxConcurrentReconciles: 4,
			DefaultWorkerResources:  DefaultWorkerResources(),
		},
		TaskRetention: tasktable.DefaultRetention,
		Shim:          defaultShimOptions(),
		RateLease:     defaultRateLeaseOptions(),
	}
}

// FlagSet binds the options to flags.
func FlagSet(o *Options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("manager", pflag.ContinueOnError)
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "address of the Prometheus metrics endpoint (0 disables)")
	fs.BoolVar(&o.MetricsSecure, "metrics-secure", o.MetricsSecure, "serve /metrics over HTTPS with authentication and authorization; false serves plain HTTP to anyone")
	fs.StringVar(&o.MetricsCertDir, "metrics-cert-dir", o.MetricsCertDir, "directory with tls.crt and tls.key for /metrics (default: a self-signed certificate)")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "address of /healthz and /readyz")
	fs.StringVar(&o.PprofAddr, "pprof-bind-address", o.PprofAddr, "address of net/http/pprof for profiling the manager (0 or empty: off; keep it on loopback)")
	fs.BoolVar(&o.LeaderElect, "leader-elect", o.LeaderElect, "elect a leader so only one replica reconciles")
	fs.StringVar(&o.LeaderElectionNamespace, "leader-election-namespace", o.LeaderElectionNamespace, "namespace of the leader Lease (default: the pod's)")
	fs.StringVar(&o.LeaderElectionID, "leader-election-id", o.LeaderElectionID, "name of the leader Lease")
	fs.StringSliceVar(&o.WatchNamespaces, "watch-namespaces", o.WatchNamespaces, "namespaces to watch (comma separated; empty: all)")
	fs.StringVar(&o.Controller.EmbedderImage, "embedder-image", o.Controller.EmbedderImage, "image of the planner and chunk Jobs unless spec.worker.image is set")
	fs.StringVar(&o.Controller.WorkerServiceAccount, "worker-service-account", o.Controller.WorkerServiceAccount, "service account of worker pods unless spec.worker.serviceAccountName is set")
	fs.Var(resourcesFlag{&o.Controller.DefaultWorkerResources}, "worker-resources", "resources of worker pods (JSON requests and limits) unless spec.worker.resources sets any; empty: none")
	fs.DurationVar(&o.Controller.JobTTL, "job-ttl", o.Controller.JobTTL, "ttlSecondsAfterFinished set on a Job once its outcome is recorded (Jobs have none before)")
	fs.DurationVar(&o.Controller.FinalizerTimeout, "finalizer-timeout", o.Controller.FinalizerTimeout, "how long deleting a running ingestion, or a finished one's final state, waits for the task table; also how long a deleted batch-mode ingestion waits for a cleanup Job the API server refuses")
	fs.IntVar(&o.Controller.MaxConcurrentReconciles, "max-concurrent-reconciles", o.Controller.MaxConcurrentReconciles, "ingestions reconciled at once")
	fs.BoolVar(&o.DisableTracking, "disable-tracking", o.DisableTracking, "never write DynamoDB task items, even when specs ask")
	fs.StringVar(&o.DynamoDBEndpoint, "dynamodb-endpoint", o.DynamoDBEndpoint, "override the DynamoDB endpoint of every task table (local stacks)")
	fs.DurationVar(&o.TaskRetention, "task-retention", o.TaskRetention, "task items get expires_at this long after the task ended, for DynamoDB TTL to delete them (0: never)")
	fs.StringSliceVar(&o.TrackingPolicy.AllowedEndpoints, "tracking-allowed-endpoints", o.TrackingPolicy.AllowedEndpoints,
		"DynamoDB endpoints (http(s)://host[:port]) that spec.tracking.dynamoDB.endpoint may name; empty: AWS endpoints only")
	fs.StringSliceVar(&o.TrackingPolicy.AllowedTables, "tracking-allowed-tables", o.TrackingPolicy.AllowedTables,
		"task tables specs may name (with --tracking-table-prefixes; both empty: any table the manager's identity can write)")
	fs.StringSliceVar(&o.TrackingPolicy.TablePrefixes, "tracking-table-prefixes", o.TrackingPolicy.TablePrefixes,
		"name prefixes of task tables specs may name")
	fs.BoolVar(&o.LogDevelopment, "log-development", o.LogDevelopment, "human-readable logs instead of JSON")
	fs.IntVar(&o.LogLevel, "v", o.LogLevel, "log verbosity")
	bindShimFlags(fs, &o.Shim)
	bindRateLeaseFlags(fs, &o.RateLease)
	return fs
}

// Scheme has the built-in types, CsvIngestion and CsvIngestionSchedule.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err) // static registration; cannot fail at run time
	}
	if err := v1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// Run starts everything and blocks until ctx ends.
func Run(ctx context.Context, o Options) error {
	log := zap.New(zap.UseDevMode(o.LogDevelopment), zap.Level(zapLevel(o.LogLevel)))
	ctrl.SetLogger(log)
	cfg := o.RESTConfig
	if cfg == nil {
		var err error
		if cfg, err = ctrl.GetConfig(); err != nil {
			return fmt.Errorf("kubernetes config: %w", err)
		}
	}

	// The cache holds only the operator's children: Jobs and Pods with its labels and plan
	// ConfigMaps, never every Pod or ConfigMap in the cluster (and never Secrets).
	hasUID, err := labels.NewRequirement(worker.LabelUID, selection.Exists, nil)
	if err != nil {
		return err
	}
	// Released chunk Jobs and pods (recorded, finalizer removed, TTL set) leave the cache: a pass
	// then costs what is still open, however many chunks are done.
	notReleased, err := labels.NewRequirement(worker.LabelReleased, selection.DoesNotExist, nil)
	if err != nil {
		return err
	}
	isPlan, err := labels.NewRequirement(worker.LabelRole, selection.Equals, []string{worker.RolePlan})
	if err != nil {
		return err
	}
	cacheOpts := cache.Options{DefaultTransform: stripManagedFields, ByObject: map[client.Object]cache.ByObject{
		&batchv1.Job{}:      {Label: labels.NewSelector().Add(*hasUID, *notReleased), Transform: trimJob},
		&corev1.Pod{}:       {Label: labels.NewSelector().Add(*hasUID, *notReleased), Transform: trimPod},
		&corev1.ConfigMap{}: {Label: labels.NewSelector().Add(*isPlan)},
	}}
	if o.Shim.UIEnabled {
		// The web UI shows an ingestion's recent events: the cache holds only events about
		// CsvIngestions, never every event of the cluster.
		cacheOpts.ByObject[&corev1.Event{}] = cache.ByObject{Field: fields.OneTermEqualSelector("involvedObject.kind", "CsvIngestion")}
	}
	if len(o.WatchNamespaces) > 0 {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range o.WatchNamespaces {
			if ns = strings.TrimSpace(ns); ns != "" {
				cacheOpts.DefaultNamespaces[ns] = cache.Config{}
			}
		}
	}
	mgrOpts := ctrl.Options{
		Scheme:                        Scheme(),
		Cache:                         cacheOpts,
		Metrics:                       metricsOptions(o),
		HealthProbeBindAddress:        o.ProbeAddr,
		PprofBindAddress:              o.PprofAddr,
		LeaderElection:                o.LeaderElect,
		LeaderElectionID:              o.LeaderElectionID,
		LeaderElectionNamespace:       o.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
	}
	if o.WrapClient != nil {
		mgrOpts.NewClient = func(c *rest.Config, opts client.Options) (client.Client, error) {
			cl, err := client.NewWithWatch(c, opts)
			if err != nil {
				return nil, err
			}
			return o.WrapClient(cl), nil
		}
	}
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	leaseKey, err := rateLeaseKey(o.RateLease)
	if err != nil {
		return err
	}
	var liveBatches *ratelease.Reports
	if leaseKey != nil {
		o.Controller.RateLeaseURL, o.Controller.RateLeaseKey = o.RateLease.URL, leaseKey
		res := DeclaredBudgets(mgr.GetClient(), mgr.GetLogger().WithName("rate-leases"))
		o.Controller.RateBudgets = res // shown in status.rateBudget
		if liveBatches, err = addRateLeases(ctx, mgr, o.RateLease, leaseKey, res); err != nil {
			return err
		}
	}
	ctrlCfg := o.Controller
	if ctrlCfg.WritersNamespace == "" {
		ctrlCfg.WritersNamespace = ownNamespace(o.LeaderElectionNamespace)
	}
	if ctrlCfg.WritersNamespace == "" {
		log.Info("no namespace for the writers records (set --leader-election-namespace): a run's sync step sees only the newer runs that still exist")
	}
	r := &controllers.Reconciler{
		Client:   mgr.GetClient(),
		Recorder: mgr.GetEventRecorder("vectordb-operator"),
		Config:   ctrlCfg,
	}
	if liveBatches != nil {
		r.LiveBatches = liveBatches
	}
	var tracker *tracking.Tables
	if !o.DisableTracking {
		policy := o.TrackingPolicy
		// The operator's own configuration is trusted: the API creates ingestions with its table.
		if d := o.Shim.Defaults.DynamoDB; d.Table != "" {
			if d.Endpoint != "" {
				policy.AllowedEndpoints = append(slices.Clone(policy.AllowedEndpoints), d.Endpoint)
			}
			if len(policy.AllowedTables) > 0 || len(policy.TablePrefixes) > 0 {
				policy.AllowedTables = append(slices.Clone(policy.AllowedTables), d.Table)
			}
		}
		if tracker, err = tracking.New(o.DynamoDBEndpoint, policy); err != nil {
			return fmt.Errorf("task-table policy: %w", err)
		}
		if o.TaskRetention < 0 {
			return fmt.Errorf("--task-retention %s: must be ≥ 0", o.TaskRetention)
		}
		tracker.Retention = o.TaskRetention
		r.Tracker = tracker
	}
	if err := r.SetupWithManager(ctx, mgr); err != nil {
		return fmt.Errorf("set up controller: %w", err)
	}
	sr := &controllers.ScheduleReconciler{Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Recorder: mgr.GetEventRecorder("vectordb-operator"), SkipNameValidation: o.Controller.SkipNameValidation}
	if err := sr.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up schedule controller: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("cache", func(req *http.Request) error {
		if !mgr.GetCache().WaitForCacheSync(req.Context()) {
			return fmt.Errorf("cache not synced")
		}
		return nil
	}); err != nil {
		return err
	}
	// Task lookups of the REST API read an index of the cache, never a list of the cluster.
	if err := shim.RegisterIndexes(ctx, mgr.GetFieldIndexer()); err != nil {
		return err
	}
	if err := addShim(ctx, mgr, cfg, o, tracker); err != nil {
		return err
	}
	log.Info("starting manager", "version", version.Version, "embedderImage", o.Controller.EmbedderImage,
		"watchNamespaces", o.WatchNamespaces, "leaderElect", o.LeaderElect, "rateLeases", leaseKey != nil)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	return nil
}

func zapLevel(v int) zapcore.Level { return zapcore.Level(-v) }

// Leader election: controller-runtime's Lease lock gets, creates and updates one Lease in the
// operator's namespace (the chart's leader-election Role; vectordb-system for config/).
// +kubebuilder:rbac:groups=coordination.k8s.io,resources=leases,verbs=get;create;update,namespace=vectordb-system
// +kubebuilder:rbac:groups="",resources=events,verbs=create;patch,namespace=vectordb-system

// The manager checks each /metrics caller with the API server (the filter of metricsOptions).
// +kubebuilder:rbac:groups=authentication.k8s.io,resources=tokenreviews,verbs=create
// +kubebuilder:rbac:groups=authorization.k8s.io,resources=subjectaccessreviews,verbs=create

// metricsOptions serves /metrics with controller-runtime's secure serving unless turned off: a
// caller needs a bearer token the API server accepts, for an identity allowed to GET the
// non-resource URL /metrics.
func metricsOptions(o Options) metricsserver.Options {
	m := metricsserver.Options{BindAddress: o.MetricsAddr}
	if o.MetricsSecure {
		m.SecureServing = true
		m.FilterProvider = filters.WithAuthenticationAndAuthorization
		m.CertDir = o.MetricsCertDir
	}
	return m
}
