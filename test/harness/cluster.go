package harness

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	ingestionv1alpha1 "github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

const (
	// controlPlaneTimeout bounds each envtest process's start and stop; generous because the
	// machines have two cores shared with compiles.
	controlPlaneTimeout      = 60 * time.Second
	controllerManagerTimeout = 60 * time.Second
)

// ControllerManagerControllers are the kube-controller-manager controllers the harness runs: Jobs
// become Pods, finished Jobs expire, and owned objects are garbage-collected.
var ControllerManagerControllers = []string{
	"job-controller",
	"ttl-after-finished-controller",
	"garbage-collector-controller",
}

// ClusterOptions selects what NewCluster starts besides kube-apiserver and etcd.
type ClusterOptions struct {
	// ControllerManager also starts kube-controller-manager with ControllerManagerControllers.
	ControllerManager bool
	// NoCRDs skips installing config/crd/bases (installed by default).
	NoCRDs bool
}

// Cluster is a real kube-apiserver and etcd (envtest), optionally with kube-controller-manager.
// There is no kubelet: Pods stay Pending unless something binds and runs them (test/podrunner, which
// also serves the kubelet's log endpoint that kube-apiserver proxies `kubectl logs` to).
type Cluster struct {
	Config     *rest.Config    // admin (system:masters)
	Client     client.Client   // uses Scheme
	Scheme     *runtime.Scheme // client-go's types and api/v1alpha1
	Kubeconfig string          // admin kubeconfig file, for subprocesses and kubectl
	Env        *envtest.Environment

	tmp     string // kubeconfig, logs, kcm certs; removed by Stop
	apiLog  *os.File
	etcdLog *os.File

	mu      sync.Mutex
	kcm     *proc
	stopped bool
}

// StartCluster starts a cluster for the duration of the test.
func StartCluster(t testing.TB, opts ClusterOptions) *Cluster {
	t.Helper()
	start := time.Now()
	withKCM := opts.ControllerManager
	opts.ControllerManager = false // started below, to time it separately
	c, err := NewCluster(opts)
	if err != nil {
		t.Fatalf("starting cluster: %v", err)
	}
	t.Logf("harness: kube-apiserver at %s started in %s", c.Config.Host, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("harness: cluster log tails:\n%s", c.tails())
		}
		start := time.Now()
		if err := c.Stop(); err != nil {
			t.Errorf("stopping cluster: %v", err)
		}
		t.Logf("harness: cluster stopped in %s", time.Since(start).Round(time.Millisecond))
	})
	if withKCM {
		start = time.Now()
		if err := c.StartControllerManager(context.Background()); err != nil {
			t.Fatalf("starting kube-controller-manager: %v", err)
		}
		t.Logf("harness: kube-controller-manager started in %s", time.Since(start).Round(time.Millisecond))
	}
	return c
}

// NewCluster starts kube-apiserver and etcd from BinDir, installs the CRDs unless opts.NoCRDs, and
// starts kube-controller-manager if opts.ControllerManager. Call Stop when done.
func NewCluster(opts ClusterOptions) (*Cluster, error) {
	apiserverBin, err := binary("kube-apiserver", "k8s")
	if err != nil {
		return nil, err
	}
	etcdBin, err := binary("etcd", "etcd")
	if err != nil {
		return nil, err
	}
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("registering client-go types: %w", err)
	}
	if err := ingestionv1alpha1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("registering %s types: %w", ingestionv1alpha1.GroupVersion, err)
	}

	tmp, err := os.MkdirTemp("", "harness-cluster-")
	if err != nil {
		return nil, fmt.Errorf("creating cluster dir: %w", err)
	}
	c := &Cluster{Scheme: scheme, tmp: tmp}
	if c.apiLog, err = os.Create(filepath.Join(tmp, "kube-apiserver.log")); err != nil {
		return nil, errors.Join(fmt.Errorf("creating kube-apiserver log: %w", err), c.Stop())
	}
	if c.etcdLog, err = os.Create(filepath.Join(tmp, "etcd.log")); err != nil {
		return nil, errors.Join(fmt.Errorf("creating etcd log: %w", err), c.Stop())
	}

	if apiserverBin, err = dieWithParent(tmp, apiserverBin); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	if etcdBin, err = dieWithParent(tmp, etcdBin); err != nil {
		return nil, errors.Join(err, c.Stop())
	}
	c.Env = &envtest.Environment{
		Scheme:                   scheme,
		BinaryAssetsDirectory:    BinDir(),
		ControlPlaneStartTimeout: controlPlaneTimeout,
		ControlPlaneStopTimeout:  controlPlaneTimeout,
		ControlPlane: envtest.ControlPlane{
			// Explicit paths so a KUBEBUILDER_ASSETS left in the environment cannot swap binaries.
			APIServer: &envtest.APIServer{Path: apiserverBin, Out: c.apiLog, Err: c.apiLog},
			Etcd:      &envtest.Etcd{Path: etcdBin, Out: c.etcdLog, Err: c.etcdLog},
		},
	}
	// A SIGTERMed kube-apiserver otherwise waits up to its 60 s request timeout for watch
	// connections (the controller manager's, a test manager's) to close; with this it drains
	// ordinary requests and gives the HTTP server 2 s, so Stop and StopAPIServer are quick.
	c.Env.ControlPlane.APIServer.Configure().Set("shutdown-send-retry-after", "true")
	// `kubectl logs` is proxied to the node's kubelet port. The pod runner's Node has the
	// hostname local-node, which does not resolve, and InternalIP 127.0.0.1 where it serves the
	// kubelet's log endpoint; without a --kubelet-certificate-authority kube-apiserver does not
	// verify that endpoint's self-signed certificate.
	c.Env.ControlPlane.APIServer.Configure().Set("kubelet-preferred-address-types", "InternalIP")
	if !opts.NoCRDs {
		c.Env.CRDDirectoryPaths = []string{filepath.Join(RepoRoot(), "config", "crd", "bases")}
		c.Env.ErrorIfCRDPathMissing = true
	}
	if c.Config, err = c.Env.Start(); err != nil {
		err = fmt.Errorf("starting envtest: %w; log tails:\n%s", err, c.tails())
		return nil, errors.Join(err, c.Stop())
	}

	c.Kubeconfig = filepath.Join(tmp, "kubeconfig")
	if err := os.WriteFile(c.Kubeconfig, c.Env.KubeConfig, 0o600); err != nil {
		return nil, errors.Join(fmt.Errorf("writing kubeconfig: %w", err), c.Stop())
	}
	if c.Client, err = client.New(c.Config, client.Options{Scheme: scheme}); err != nil {
		return nil, errors.Join(fmt.Errorf("creating client: %w", err), c.Stop())
	}
	if opts.ControllerManager {
		if err := c.StartControllerManager(context.Background()); err != nil {
			return nil, errors.Join(err, c.Stop())
		}
	}
	return c, nil
}

// StartControllerManager starts kube-controller-manager against this cluster and waits until it
// serves /healthz; ctx bounds only that wait, Stop ends the process.
func (c *Cluster) StartControllerManager(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return errors.New("cluster is stopped")
	}
	if c.kcm != nil && !c.kcm.exited() {
		return errors.New("kube-controller-manager is already running")
	}
	bin, err := binary("kube-controller-manager", "k8s")
	if err != nil {
		return err
	}
	attempt := 0
	kcm, err := startWithPortRetry(func() (*proc, error) {
		attempt++
		return c.startControllerManager(ctx, bin, attempt)
	})
	if err != nil {
		return err
	}
	c.kcm = kcm
	return nil
}

func (c *Cluster) startControllerManager(ctx context.Context, bin string, attempt int) (*proc, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	// Each attempt logs to its own file so Logs keeps the reason a first attempt failed.
	logPath := filepath.Join(c.tmp, "kube-controller-manager.log")
	if attempt > 1 {
		logPath = filepath.Join(c.tmp, "kube-controller-manager-"+strconv.Itoa(attempt)+".log")
	}
	p, err := startProc("kube-controller-manager", logPath, nil, bin,
		"--kubeconfig="+c.Kubeconfig,
		"--controllers="+strings.Join(ControllerManagerControllers, ","),
		"--leader-elect=false",
		// The admin identity creates the Pods itself; there are no per-controller service accounts.
		"--use-service-account-credentials=false",
		// A real control plane gives kube-controller-manager more than its 20 QPS default; the
		// benchmarks run thousands of Jobs and must measure the operator, not this limit.
		"--kube-api-qps=200",
		"--kube-api-burst=400",
		"--concurrent-job-syncs=20",
		"--bind-address=127.0.0.1",
		"--secure-port="+strconv.Itoa(port),
		"--cert-dir="+filepath.Join(c.tmp, "kcm-certs"),
	)
	if err != nil {
		return nil, err
	}
	// /healthz is served to anonymous callers by default; the cert is self-signed.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // loopback, self-signed test cert
	url := "https://127.0.0.1:" + strconv.Itoa(port) + "/healthz"
	if err := p.waitReady(ctx, controllerManagerTimeout, func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("GET %s: %s", url, resp.Status)
		}
		return nil
	}); err != nil {
		return p, errors.Join(err, p.stop())
	}
	return p, nil
}

// StopAPIServer stops only kube-apiserver (etcd and the controller manager keep running), to see
// how clients behave when it goes away. Stop still cleans up everything afterwards.
func (c *Cluster) StopAPIServer() error {
	if err := c.Env.ControlPlane.APIServer.Stop(); err != nil {
		return fmt.Errorf("stopping kube-apiserver: %w", err)
	}
	return nil
}

// Stop stops the controller manager, kube-apiserver and etcd, and removes their files.
// Safe to call more than once.
func (c *Cluster) Stop() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		return nil
	}
	c.stopped = true
	var errs []error
	if c.kcm != nil {
		errs = append(errs, c.kcm.stop())
	}
	if c.Env != nil {
		if err := c.Env.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("stopping envtest: %w", err))
		}
	}
	for _, f := range []*os.File{c.apiLog, c.etcdLog} {
		if f != nil {
			_ = f.Close()
		}
	}
	if err := os.RemoveAll(c.tmp); err != nil {
		errs = append(errs, fmt.Errorf("removing cluster dir: %w", err))
	}
	return errors.Join(errs...)
}

// Logs is the output so far of kube-apiserver, etcd and kube-controller-manager, one after another.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, path := range c.logPaths() {
		fmt.Fprintf(&b, "==> %s <==\n%s\n", filepath.Base(path), readLog(path))
	}
	return b.String()
}

// tails is the end of each log, for failure messages.
func (c *Cluster) tails() string {
	var b strings.Builder
	for _, path := range c.logPaths() {
		fmt.Fprintf(&b, "==> %s <==\n%s\n", filepath.Base(path), tailFile(path, tailLines))
	}
	return b.String()
}

func (c *Cluster) logPaths() []string {
	paths := []string{filepath.Join(c.tmp, "kube-apiserver.log"), filepath.Join(c.tmp, "etcd.log")}
	kcmLogs, _ := filepath.Glob(filepath.Join(c.tmp, "kube-controller-manager*.log"))
	return append(paths, kcmLogs...)
}
