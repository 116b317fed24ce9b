package shim

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Health words: the overall status and each check's.
const (
	Healthy   = "healthy"
	Degraded  = "degraded"
	Unhealthy = "unhealthy"
	// Disabled is the dynamodb check when no task table is configured.
	Disabled = "disabled"
)

// HealthResponse is the body of GET /api/v1/health: the old API's HealthResponse keys with their
// old meanings (status, version, environment, workers{active, available, queued_tasks},
// services{redis, dynamodb, api}, timestamp), plus checks and workers.queued.
type HealthResponse struct {
	// Status is healthy, degraded (the task table is unreachable; tasks still run and are served
	// from the cluster) or unhealthy (the API server is unreachable or the cache has not synced;
	// answered with 503).
	Status  string `json:"status"`
	Version string `json:"version"`
	// Environment is the deployment's name (Config.Environment), as the old ENVIRONMENT setting.
	Environment string  `json:"environment"`
	Workers     Workers `json:"workers"`
	// Services are the old keys: redis is the old queue and progress store, whose job the
	// Kubernetes API server and the manager's cache do now (healthy when both are); dynamodb is
	// the task table (healthy, unhealthy or disabled); api is this server (healthy).
	Services Services `json:"services"`
	// Checks are kubernetes, cache and dynamodb, each healthy, unhealthy or disabled.
	Checks    map[string]string `json:"checks"`
	Timestamp string            `json:"timestamp"`
}

// Services is the old health body's services object.
type Services struct {
	Redis    string `json:"redis"`
	DynamoDB string `json:"dynamodb"`
	API      string `json:"api"`
}

// Workers counts the data work in the cluster.
type Workers struct {
	// Active is the number of chunk Jobs with a running pod (the old: tasks Celery workers were
	// running).
	Active int64 `json:"active"`
	// Available is how many more chunk Jobs may start now: the unused parallelism of unfinished,
	// unsuspended ingestions (the old: idle worker slots).
	Available int64 `json:"available"`
	// QueuedTasks is the number of chunks of unfinished ingestions waiting for a Job (the old:
	// messages waiting in the Celery queues).
	QueuedTasks int64 `json:"queued_tasks"`
	// Queued is QueuedTasks under this server's earlier name.
	Queued int64 `json:"queued"`
}

// healthCache reuses a result for ttl. Its lock is held while checking, so concurrent requests
// wait for one check instead of each making their own.
type healthCache struct {
	ttl  time.Duration
	mu   sync.Mutex
	at   time.Time
	resp HealthResponse
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	resp := s.checkHealth(r.Context())
	code := http.StatusOK
	if resp.Status == Unhealthy {
		code = http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, code, resp)
}

func (s *Server) checkHealth(ctx context.Context) HealthResponse {
	hc := s.health
	hc.mu.Lock()
	defer hc.mu.Unlock()
	if !hc.at.IsZero() && time.Since(hc.at) < hc.ttl {
		return hc.resp
	}
	// The checks must not be cut short by a client that hangs up: the result is shared.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.HealthTimeout)
	defer cancel()

	checks := map[string]string{"kubernetes": Healthy, "cache": Healthy, "dynamodb": Disabled}
	status := Healthy
	if err := s.deps.APIServerCheck(ctx); err != nil {
		s.log.Error(err, "health: Kubernetes API server unreachable")
		checks["kubernetes"], status = Unhealthy, Unhealthy
	}
	synced := s.deps.CacheSynced(ctx)
	if !synced {
		s.log.Info("health: cache not synced")
		checks["cache"], status = Unhealthy, Unhealthy
	}
	if s.deps.Tasks != nil {
		checks["dynamodb"] = Healthy
		if err := s.deps.Tasks.CheckTable(ctx); err != nil {
			s.log.Error(err, "health: task table unreachable")
			checks["dynamodb"] = Unhealthy
			if status == Healthy {
				status = Degraded
			}
		}
	}
	var workers Workers
	if synced {
		// A read of an unsynced cache would wait for it, so only a synced one is counted.
		var err error
		if workers, err = s.countWorkers(ctx); err != nil {
			s.log.Error(err, "health: counting workers")
		}
	}
	now := time.Now()
	redis := Healthy
	if checks["kubernetes"] != Healthy || checks["cache"] != Healthy {
		redis = Unhealthy
	}
	hc.resp = HealthResponse{
		Status:      status,
		Version:     s.deps.Version,
		Environment: s.cfg.Environment,
		Workers:     workers,
		Services:    Services{Redis: redis, DynamoDB: checks["dynamodb"], API: Healthy},
		Checks:      checks,
		Timestamp:   now.UTC().Format(tasktable.TimeFormat),
	}
	hc.at = now
	return hc.resp
}

func (s *Server) countWorkers(ctx context.Context) (Workers, error) {
	var w Workers
	var jobs batchv1.JobList
	if err := s.deps.Client.List(ctx, &jobs, client.MatchingLabels{worker.LabelRole: worker.RoleChunk}); err != nil {
		return w, fmt.Errorf("listing chunk Jobs: %w", err)
	}
	activeByOwner := map[string]int64{}
	for _, j := range jobs.Items {
		if j.Status.Active > 0 {
			w.Active++
			activeByOwner[j.Labels[worker.LabelUID]]++
		}
	}
	var list v1alpha1.CsvIngestionList
	if err := s.deps.Client.List(ctx, &list); err != nil {
		return w, fmt.Errorf("listing CsvIngestions: %w", err)
	}
	for _, c := range list.Items {
		if !c.Status.Phase.Terminal() && !c.Spec.Cancel {
			w.Queued += int64(c.Status.Chunks.Pending)
			if !c.Spec.Suspend && c.Status.Chunks.Pending > 0 {
				free := int64(c.Spec.Chunking.Parallelism) - activeByOwner[string(c.UID)]
				w.Available += max(0, min(free, int64(c.Status.Chunks.Pending)))
			}
		}
	}
	w.QueuedTasks = w.Queued
	return w, nil
}

// LoadBalancerHealth is the body of GET /health: static, as the old app's, for load balancers
// that only need to know the process answers.
type LoadBalancerHealth struct {
	Status string `json:"status"`
}

func (s *Server) handleStaticHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, LoadBalancerHealth{Status: Healthy})
}

// AppInfo is the body of GET /, the old app's root: what this is and where to look.
type AppInfo struct {
	Message     string `json:"message"`
	Version     string `json:"version"`
	Environment string `json:"environment"`
	Docs        string `json:"docs"`
	Health      string `json:"health"`
}

// AppTitle is the old app's title.
const AppTitle = "VectorDB Processing API"

func (s *Server) handleRoot(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, AppInfo{
		Message: AppTitle, Version: s.deps.Version, Environment: s.cfg.Environment,
		Docs: "/api/v1/openapi.json", Health: "/api/v1/health",
	})
}

// APIServerReadyz checks the API server with GET /readyz, which every authenticated identity may
// read (system:public-info-viewer). It is Deps.APIServerCheck for the manager.
func APIServerReadyz(cfg *rest.Config) (func(ctx context.Context) error, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("API server check: building client: %w", err)
	}
	rc := dc.RESTClient()
	return func(ctx context.Context) error {
		if _, err := rc.Get().AbsPath("/readyz").DoRaw(ctx); err != nil {
			return fmt.Errorf("GET /readyz: %w", err)
		}
		return nil
	}, nil
}
