// Package podrunner is a stand-in kubelet and scheduler for tests and the local demo. It registers
// one Ready Node, binds every pending pod to it and runs each pod's single container as a local
// process: the image is mapped to a local executable, the container's env is resolved as the
// kubelet does (secretKeyRef, configMapKeyRef, fieldRef, envFrom), and the pod's status is written
// as the kubelet writes it (Running, then Succeeded or Failed with the exit code and termination
// message). Together with a real kube-controller-manager this gives real Job semantics: retries,
// podFailurePolicy, deadlines, TTL and garbage collection.
//
// It also serves the kubelet's log endpoint (logs.go), so `kubectl logs [-f]` works through the API server.
//
// What it does not do: there is no container isolation, no resource limits, no volumes, no probes,
// no init or sidecar containers, no $(VAR) expansion, and no service-account token projection.
// Every process gets KUBECONFIG pointing at the runner's own kubeconfig, so pods that use the API
// act with the runner's credentials, not their service account's.
package podrunner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

const (
	// DefaultNodeName is the Node the runner registers when Options.NodeName is empty.
	DefaultNodeName = "local-node"

	// maxGrace caps a pod's termination grace period so that deletions in tests stay quick.
	maxGrace = 5 * time.Second
	// configRetry is how soon a pod whose env cannot be resolved yet (missing Secret) is retried.
	configRetry = time.Second
	// workers is how many pods are synced at once.
	workers = 4
)

// Options configures a Runner.
type Options struct {
	// Config reaches the API server. Required.
	Config *rest.Config
	// Kubeconfig is the path given to every process as KUBECONFIG; empty gives none.
	Kubeconfig string
	// NodeName is the Node to register; DefaultNodeName if empty.
	NodeName string
	// Images maps an image, exactly or by repository without tag or digest, to a local executable.
	// A pod whose image is not in the map fails with reason ErrImagePull.
	Images map[string]string
	// WorkDir holds a directory per pod with its log and termination-message file. If empty, a
	// temporary directory is created and removed by Stop.
	WorkDir string
	// ExtraEnv (KEY=VALUE) is added to every process, after the pod's own env.
	ExtraEnv []string
	// Logger receives the runner's structured logs.
	Logger logr.Logger
}

// Runner binds and runs pods. Create it with Start, end it with Stop.
type Runner struct {
	o          Options
	cs         kubernetes.Interface
	log        logr.Logger
	lister     corelisters.PodLister
	queue      workqueue.TypedRateLimitingInterface[string]
	cancel     context.CancelFunc
	ownWorkDir bool
	loops      sync.WaitGroup // workers and heartbeat
	procs      sync.WaitGroup // process waiters
	stopOnce   sync.Once

	mu      sync.Mutex
	stopped bool
	pods    map[types.UID]*podState
	byKey   map[string]types.UID // namespace/name → UID of the latest pod with that name

	// logPort is the loopback port of the kubelet log endpoint (logs.go), in the Node's status.
	logPort    int32
	logStopped func() // waits for the log server to end
}

// Start registers the Node, waits for the pod cache and starts binding and running pods.
func Start(ctx context.Context, o Options) (*Runner, error) {
	if o.Config == nil {
		return nil, errors.New("podrunner: Options.Config is required")
	}
	if o.NodeName == "" {
		o.NodeName = DefaultNodeName
	}
	images, err := absImages(o.Images)
	if err != nil {
		return nil, err
	}
	o.Images = images
	if o.Kubeconfig != "" {
		if o.Kubeconfig, err = filepath.Abs(o.Kubeconfig); err != nil {
			return nil, fmt.Errorf("podrunner: kubeconfig path: %w", err)
		}
	}
	cs, err := kubernetes.NewForConfig(o.Config)
	if err != nil {
		return nil, fmt.Errorf("podrunner: creating API client: %w", err)
	}
	r := &Runner{
		o:     o,
		cs:    cs,
		log:   o.Logger.WithValues("node", o.NodeName),
		queue: workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		pods:  map[types.UID]*podState{},
		byKey: map[string]types.UID{},
	}
	if r.o.WorkDir == "" {
		if r.o.WorkDir, err = os.MkdirTemp("", "podrunner-"); err != nil {
			return nil, fmt.Errorf("podrunner: creating work dir: %w", err)
		}
		r.ownWorkDir = true
	} else if r.o.WorkDir, err = filepath.Abs(r.o.WorkDir); err != nil {
		return nil, fmt.Errorf("podrunner: work dir: %w", err)
	}
	if err := os.MkdirAll(r.o.WorkDir, 0o700); err != nil {
		return nil, fmt.Errorf("podrunner: creating work dir: %w", err)
	}

	runCtx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	if r.logPort, r.logStopped, err = r.startLogServer(runCtx); err != nil {
		cancel()
		r.cleanupWorkDir()
		return nil, err
	}
	if err := r.registerNode(ctx); err != nil {
		cancel()
		r.logStopped()
		r.cleanupWorkDir()
		return nil, err
	}
	factory := informers.NewSharedInformerFactory(cs, 0)
	podInformer := factory.Core().V1().Pods()
	r.lister = podInformer.Lister()
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    r.enqueue,
		UpdateFunc: func(_, obj any) { r.enqueue(obj) },
		DeleteFunc: r.enqueue,
	}); err != nil {
		cancel()
		r.logStopped()
		r.cleanupWorkDir()
		return nil, fmt.Errorf("podrunner: watching pods: %w", err)
	}
	factory.Start(runCtx.Done())
	synced := factory.WaitForCacheSync(ctx.Done())
	for typ, ok := range synced {
		if !ok {
			cancel()
			factory.Shutdown()
			r.logStopped()
			r.cleanupWorkDir()
			return nil, fmt.Errorf("podrunner: cache of %v did not sync: %w", typ, context.Cause(ctx))
		}
	}

	r.loops.Add(workers + 2)
	for range workers {
		go func() {
			defer r.loops.Done()
			for r.processNext(runCtx) {
			}
		}()
	}
	go func() {
		defer r.loops.Done()
		r.heartbeat(runCtx)
	}()
	go func() {
		// The informer stops with runCtx; Shutdown waits for its goroutines.
		defer r.loops.Done()
		<-runCtx.Done()
		factory.Shutdown()
	}()
	r.log.Info("pod runner started", "workDir", r.o.WorkDir, "images", len(r.o.Images), "kubeletPort", r.logPort)
	return r, nil
}

// Stop kills every process the runner started, waits for them and for its own goroutines, and
// removes the work directory if Start created it. Pods keep their last written status.
// Safe to call more than once.
func (r *Runner) Stop() {
	r.stopOnce.Do(func() {
		r.mu.Lock()
		r.stopped = true
		for _, st := range r.pods {
			st.stopTimers()
			if st.running() {
				st.signal(sigKill)
			}
		}
		r.mu.Unlock()
		r.procs.Wait()
		r.cancel()
		r.queue.ShutDown()
		r.loops.Wait()
		r.logStopped()
		r.cleanupWorkDir()
		r.log.Info("pod runner stopped")
	})
}

func (r *Runner) cleanupWorkDir() {
	if !r.ownWorkDir {
		return
	}
	if err := os.RemoveAll(r.o.WorkDir); err != nil {
		r.log.Error(err, "removing work dir", "dir", r.o.WorkDir)
	}
}

// Kill sends SIGKILL to the process of a running pod, as if the container died: the pod fails
// with exit code 137 and its Job may retry.
func (r *Runner) Kill(podName, namespace string) error {
	key := namespace + "/" + podName
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.pods[r.byKey[key]]
	if st == nil || !st.running() {
		return fmt.Errorf("podrunner: pod %s has no running process", key)
	}
	st.signal(sigKill)
	return nil
}

// Running lists the pods (namespace/name, sorted) whose process is running.
func (r *Runner) Running() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, st := range r.pods {
		if st.running() {
			out = append(out, st.key)
		}
	}
	sort.Strings(out)
	return out
}

// Logs returns the stdout and stderr of the latest process run for the pod, also after it exited
// or the pod was deleted; "" if there is none.
func (r *Runner) Logs(namespace, pod string) string {
	r.mu.Lock()
	st := r.pods[r.byKey[namespace+"/"+pod]]
	r.mu.Unlock()
	if st == nil {
		return ""
	}
	data, err := os.ReadFile(st.logPath)
	if err != nil {
		return ""
	}
	return string(data)
}

// NodeName is the Node the runner registered.
func (r *Runner) NodeName() string { return r.o.NodeName }

// KubeletPort is the loopback port where the runner serves the kubelet's /containerLogs/ endpoint
// (the Node's status.daemonEndpoints.kubeletEndpoint.port).
func (r *Runner) KubeletPort() int32 { return r.logPort }

// enqueue takes the pods that concern the runner: unbound ones (to bind), ours, and deletions
// (cheap to look at, and the only signal left when a pod vanishes at once).
func (r *Runner) enqueue(obj any) {
	if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.NodeName != "" && pod.Spec.NodeName != r.o.NodeName {
		return
	}
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err != nil {
		r.log.Error(err, "pod key")
		return
	}
	r.queue.Add(key)
}

func (r *Runner) processNext(ctx context.Context) bool {
	key, quit := r.queue.Get()
	if quit {
		return false
	}
	defer r.queue.Done(key)
	after, err := r.sync(ctx, key)
	switch {
	case err != nil && ctx.Err() == nil:
		r.log.Error(err, "syncing pod", "pod", key)
		r.queue.AddRateLimited(key)
	case after > 0:
		r.queue.Forget(key)
		r.queue.AddAfter(key, after)
	default:
		r.queue.Forget(key)
	}
	return true
}

// sync brings one pod a step closer to what a scheduler and kubelet would make of it. It returns
// a delay after which the pod must be looked at again even without an event.
func (r *Runner) sync(ctx context.Context, key string) (time.Duration, error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return 0, fmt.Errorf("bad key %q: %w", key, err)
	}
	pod, err := r.lister.Pods(ns).Get(name)
	if apierrors.IsNotFound(err) {
		r.podGone(key, "")
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("reading pod %s from cache: %w", key, err)
	}
	if pod.Spec.NodeName == "" {
		return 0, r.schedule(ctx, pod)
	}
	if pod.Spec.NodeName != r.o.NodeName {
		return 0, nil
	}
	// A pod re-created under the same name: the old one is gone.
	r.podGone(key, pod.UID)

	r.mu.Lock()
	st := r.pods[pod.UID]
	stopped := r.stopped
	r.mu.Unlock()
	if stopped {
		return 0, nil
	}
	if st == nil {
		return r.syncNew(ctx, pod)
	}
	return r.syncStarted(ctx, pod, st)
}

// podGone terminates the process of a pod no longer in the API (or replaced by a pod with the same
// name and UID keep).
func (r *Runner) podGone(key string, keep types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	uid, ok := r.byKey[key]
	if !ok || uid == keep {
		return
	}
	if st := r.pods[uid]; st != nil && st.running() {
		r.log.Info("pod deleted, stopping its process", "pod", key)
		r.terminate(st, maxGrace)
	}
}
