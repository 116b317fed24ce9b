// Package stack runs the whole product on one machine: a real kube-apiserver, etcd and
// kube-controller-manager, the local pod runner, the manager's real binary, MinIO, dynalite and
// the OpenAI and Pinecone fakes. The end-to-end suite, `make demo` and the benchmarks use it.
package stack

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	"github.com/vectordb-io/vectordb-operator/test/fakes/pinecone"
	"github.com/vectordb-io/vectordb-operator/test/harness"
	"github.com/vectordb-io/vectordb-operator/test/panics"
	"github.com/vectordb-io/vectordb-operator/test/podrunner"
)

// Fixed names of the local stack.
const (
	Bucket        = "csv-storage"
	Index         = "clickbid-prod"
	TaskTable     = "vectordb-tasks-prod"
	EmbedderImage = "vectordb-embedder:local"
	OpenAIKey     = "sk-local-test"
	PineconeKey   = "pc-local-test"
	// APIKey and ReadAPIKey are cluster-wide (their key file lines end in "*"): the scenarios'
	// ingestions are in many namespaces. Keys must be at least 32 characters.
	APIKey = "local-api-key-0123456789abcdef0123"
	// ReadAPIKey is a read-only key (--api-read-keys-path): it views the web UI and reads tasks.
	ReadAPIKey = "local-read-key-0123456789abcdef012"
)

// Options shape the stack.
type Options struct {
	// Dimensions of the index and of requested embeddings (text-embedding-3-small shortened).
	Dimensions int
	// RPM and TPM the OpenAI fake enforces (0: unlimited).
	RPM, TPM int
	// OpenAILatency per embeddings request.
	OpenAILatency time.Duration
	// FakeTokenCounter, when set, replaces the fake's real tokenizer (cheaper for big runs).
	FakeTokenCounter func(string) int
	// KeepVectorValues keeps vector values in the Pinecone fake (memory grows with the file).
	KeepVectorValues bool
	// EmbedderBinary runs the embedder image's pods; empty: bin/embedder. The benchmarks point it
	// at a stand-in whose chunks finish at once, to measure the manager alone.
	EmbedderBinary string
	// WorkDir holds logs and pod files; a temp dir when empty.
	WorkDir string
	// ManagerArgs are added to the manager's flags from its first start (Stack.ManagerArgs).
	ManagerArgs []string
	Log         logr.Logger
}

// Stack is a running local stack.
type Stack struct {
	Opts     Options
	Cluster  *harness.Cluster
	MinIO    *harness.MinIO
	Dynalite *harness.Dynalite
	OpenAI   *openai.Server
	Pinecone *pinecone.Server
	Runner   *podrunner.Runner
	Tasks    *tasktable.Client
	WorkDir  string
	// DynamoDB is the manager's way to dynalite: cut it to make the task table unreachable.
	DynamoDB *Proxy
	// ManagerArgs are added to the manager's flags at its next start (later flags win).
	ManagerArgs []string

	// Manager endpoints.
	HTTPAddr, MetricsAddr, ProbeAddr string

	mu      sync.Mutex
	manager *exec.Cmd
	mgrDone chan error
	mgrLog  *os.File
	// panicsPast adds up the reconcile panics of manager processes that have ended (panics.go).
	panicsPast panics.Counts
}

// Start brings everything up; Stop tears it down (also on a failed Start).
func Start(ctx context.Context, o Options) (s *Stack, err error) {
	if o.Dimensions == 0 {
		o.Dimensions = 1536
	}
	s = &Stack{Opts: o, WorkDir: o.WorkDir, ManagerArgs: slices.Clone(o.ManagerArgs)}
	defer func() {
		// An early return nil, err has already dropped s: nothing was started then.
		if err != nil && s != nil {
			s.Stop()
		}
		if err != nil {
			s = nil
		}
	}()
	if s.WorkDir == "" {
		if s.WorkDir, err = os.MkdirTemp("", "vectordb-stack-"); err != nil {
			return nil, err
		}
	}
	for _, bin := range []string{"manager", "embedder"} {
		if _, err := os.Stat(filepath.Join(harness.BinDir(), bin)); err != nil {
			return s, fmt.Errorf("bin/%s is missing: run `make build` first", bin)
		}
	}
	if s.Cluster, err = harness.NewCluster(harness.ClusterOptions{ControllerManager: true}); err != nil {
		return s, fmt.Errorf("kubernetes: %w", err)
	}
	if s.MinIO, err = harness.NewMinIO(Bucket); err != nil {
		return s, fmt.Errorf("minio: %w", err)
	}
	if s.Dynalite, err = harness.NewDynalite(); err != nil {
		return s, fmt.Errorf("dynalite: %w", err)
	}
	if err = tasktable.EnsureTable(ctx, s.Dynalite.Client(), TaskTable); err != nil {
		return s, fmt.Errorf("task table: %w", err)
	}
	s.Tasks = tasktable.NewFromAPI(s.Dynalite.Client(), TaskTable)
	if s.DynamoDB, err = NewProxy(strings.TrimPrefix(s.Dynalite.Endpoint, "http://")); err != nil {
		return s, fmt.Errorf("dynamodb proxy: %w", err)
	}
	if s.OpenAI, err = openai.Start(openai.Options{APIKeys: []string{OpenAIKey}, RPM: o.RPM, TPM: o.TPM,
		Latency: o.OpenAILatency, CountTokens: o.FakeTokenCounter}); err != nil {
		return s, fmt.Errorf("openai fake: %w", err)
	}
	if s.Pinecone, err = pinecone.Start(pinecone.Options{Indexes: map[string]int{Index: o.Dimensions},
		APIKeys: []string{PineconeKey}, DiscardValues: !o.KeepVectorValues}); err != nil {
		return s, fmt.Errorf("pinecone fake: %w", err)
	}
	if s.Runner, err = podrunner.Start(ctx, podrunner.Options{
		Config: s.Cluster.Config, Kubeconfig: s.Cluster.Kubeconfig,
		Images:   map[string]string{EmbedderImage: cmp.Or(o.EmbedderBinary, filepath.Join(harness.BinDir(), "embedder"))},
		WorkDir:  filepath.Join(s.WorkDir, "pods"),
		ExtraEnv: []string{"PINECONE_CONTROL_HOST=" + s.Pinecone.ControlURL()},
		Logger:   o.Log.WithName("podrunner"),
	}); err != nil {
		return s, fmt.Errorf("pod runner: %w", err)
	}
	if err = os.WriteFile(filepath.Join(s.WorkDir, "api-keys"), []byte(APIKey+" *\n"), 0o600); err != nil {
		return s, err
	}
	if err = os.WriteFile(filepath.Join(s.WorkDir, "api-read-keys"), []byte(ReadAPIKey+" *\n"), 0o600); err != nil {
		return s, err
	}
	if err = s.StartManager(ctx); err != nil {
		return s, err
	}
	return s, nil
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// StartManager runs bin/manager against the stack and waits until it is ready. Its listen
// addresses are picked by listen-then-close, so another process may take one before the manager
// binds it: a manager that exits on "address already in use" is started again on fresh addresses
// (those this call picked; a restart keeps its own, which tests may have noted).
func (s *Stack) StartManager(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.manager != nil {
		return errors.New("manager already running")
	}
	var picked []*string
	for _, a := range []*string{&s.HTTPAddr, &s.MetricsAddr, &s.ProbeAddr} {
		if *a == "" {
			picked = append(picked, a)
		}
	}
	var err error
	for attempt := 1; ; attempt++ {
		for _, a := range picked {
			if *a, err = freeAddr(); err != nil {
				return err
			}
		}
		err = s.startManagerOnce()
		if err == nil || !errors.Is(err, errAddrInUse) || attempt == 3 {
			return err
		}
	}
}

// errAddrInUse marks a manager that exited because one of its ports was taken.
var errAddrInUse = errors.New("address already in use")

func (s *Stack) startManagerOnce() error {
	var err error
	args := []string{
		"--embedder-image=" + EmbedderImage,
		"--metrics-bind-address=" + s.MetricsAddr,
		// Plain HTTP so the demo can print a curl line and the suites scrape without a token; the
		// secure default is tested in test/chart.
		"--metrics-secure=false",
		"--health-probe-bind-address=" + s.ProbeAddr,
		"--http-bind-address=" + s.HTTPAddr,
		// The manager reaches dynalite through a proxy the fault tests can cut; the sample
		// ingestions name dynalite itself, which the tracking policy must allow.
		"--dynamodb-endpoint=http://" + s.DynamoDB.Addr,
		"--tracking-allowed-endpoints=" + s.Dynalite.Endpoint,
		"--api-keys-path=" + filepath.Join(s.WorkDir, "api-keys"),
		"--api-read-keys-path=" + filepath.Join(s.WorkDir, "api-read-keys"),
		"--api-namespace=default",
		"--api-bucket=" + Bucket,
		"--api-s3-endpoint=" + s.MinIO.Endpoint,
		"--api-s3-credentials-secret=s3-creds",
		"--api-index=" + Index,
		"--api-dynamodb-table=" + TaskTable,
		"--api-dead-letter-bucket=" + Bucket,
		"--api-dead-letter-prefix=failed/",
		"--job-ttl=1h",
		// Out of a cluster the manager has no namespace of its own: the writers records (and
		// the UI's sessions Lease) go here, as the chart puts them in the release namespace.
		"--leader-election-namespace=default",
	}
	args = append(args, s.ManagerArgs...)
	cmd := exec.Command(filepath.Join(harness.BinDir(), "manager"), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+s.Cluster.Kubeconfig, "AWS_ACCESS_KEY_ID=local", "AWS_SECRET_ACCESS_KEY=local", "AWS_REGION=us-east-1")
	if s.mgrLog == nil {
		if s.mgrLog, err = os.OpenFile(filepath.Join(s.WorkDir, "manager.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
			return err
		}
	}
	logStart, _ := s.mgrLog.Seek(0, io.SeekEnd)
	cmd.Stdout, cmd.Stderr = s.mgrLog, s.mgrLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start manager: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	s.manager, s.mgrDone = cmd, done
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			s.manager = nil
			if s.logSince(logStart, "address already in use") {
				return fmt.Errorf("manager exited: %v: %w", err, errAddrInUse)
			}
			return fmt.Errorf("manager exited: %v\n%s", err, s.ManagerLog())
		default:
		}
		if resp, err := http.Get("http://" + s.ProbeAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("manager not ready after 60s\n%s", s.ManagerLog())
}

// logSince says whether the manager's log after offset contains s.
func (s *Stack) logSince(offset int64, sub string) bool {
	b, err := os.ReadFile(filepath.Join(s.WorkDir, "manager.log"))
	if err != nil || int64(len(b)) < offset {
		return false
	}
	return strings.Contains(string(b[offset:]), sub)
}

// ManagerPID is the running manager's process id (0 when it is not running), e.g. to read its
// peak RSS from /proc.
func (s *Stack) ManagerPID() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.manager == nil || s.manager.Process == nil {
		return 0
	}
	return s.manager.Process.Pid
}

// KillManager ends the manager with SIGKILL, as a crash or a node loss would.
func (s *Stack) KillManager() error { return s.stopManager(syscall.SIGKILL) }

// StopManager ends the manager gracefully.
func (s *Stack) StopManager() error { return s.stopManager(syscall.SIGTERM) }

func (s *Stack) stopManager(sig syscall.Signal) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.manager == nil {
		return nil
	}
	s.notePanicsBeforeStop()
	_ = syscall.Kill(-s.manager.Process.Pid, sig)
	select {
	case <-s.mgrDone:
	case <-time.After(20 * time.Second):
		_ = syscall.Kill(-s.manager.Process.Pid, syscall.SIGKILL)
		<-s.mgrDone
	}
	s.manager = nil
	return nil
}

// ManagerLog is the manager's output so far (the last 64 KiB).
func (s *Stack) ManagerLog() string {
	b, _ := os.ReadFile(filepath.Join(s.WorkDir, "manager.log"))
	if len(b) > 64<<10 {
		b = b[len(b)-64<<10:]
	}
	return string(b)
}

// Stop tears everything down.
func (s *Stack) Stop() {
	_ = s.StopManager()
	if s.Runner != nil {
		s.Runner.Stop()
	}
	if s.OpenAI != nil {
		s.OpenAI.Close()
	}
	if s.Pinecone != nil {
		s.Pinecone.Close()
	}
	if s.DynamoDB != nil {
		s.DynamoDB.Close()
	}
	if s.Dynalite != nil {
		s.Dynalite.Stop()
	}
	if s.MinIO != nil {
		s.MinIO.Stop()
	}
	if s.Cluster != nil {
		s.Cluster.Stop()
	}
	if s.mgrLog != nil {
		s.mgrLog.Close()
	}
}

// PrepareNamespace creates ns with the Secrets and the worker ServiceAccount and Role that
// ingestions in it need.
func (s *Stack) PrepareNamespace(ctx context.Context, ns string) error {
	c := s.Cluster.Client
	create := func(o clientObject) error {
		if err := c.Create(ctx, o); err != nil && !isAlreadyExists(err) {
			return fmt.Errorf("create %s: %w", o.GetName(), err)
		}
		return nil
	}
	if ns != "default" {
		if err := create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
			return err
		}
	}
	secret := func(name string, data map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: data}
	}
	for _, o := range []clientObject{
		secret("openai", map[string]string{"api-key": OpenAIKey}),
		secret("pinecone", map[string]string{"api-key": PineconeKey}),
		secret("s3-creds", map[string]string{"AWS_ACCESS_KEY_ID": s.MinIO.AccessKey, "AWS_SECRET_ACCESS_KEY": s.MinIO.SecretKey}),
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "vectordb-embedder", Namespace: ns}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "vectordb-embedder", Namespace: ns}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"get", "create"}}}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "vectordb-embedder", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "vectordb-embedder"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "vectordb-embedder", Namespace: ns}}},
	} {
		if err := create(o); err != nil {
			return err
		}
	}
	return nil
}

// Upload puts a CSV into the bucket.
func (s *Stack) Upload(ctx context.Context, key string, body []byte) error {
	_, err := s.MinIO.S3Client().PutObject(ctx, &s3.PutObjectInput{Bucket: strPtr(Bucket), Key: &key, Body: bytes.NewReader(body)})
	if err != nil {
		return fmt.Errorf("upload %s: %w", key, err)
	}
	return nil
}

// Object reads an object from the bucket.
func (s *Stack) Object(ctx context.Context, key string) ([]byte, error) {
	out, err := s.MinIO.S3Client().GetObject(ctx, &s3.GetObjectInput{Bucket: strPtr(Bucket), Key: &key})
	if err != nil {
		return nil, err
	}
	defer out.Body.Close()
	return io.ReadAll(out.Body)
}

// LegacyIngestion is config/samples' legacy CsvIngestion pointed at the stack's endpoints.
func (s *Stack) LegacyIngestion(ns, name, key string) *v1alpha1.CsvIngestion {
	return &v1alpha1.CsvIngestion{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.CsvIngestionSpec{
			Source: v1alpha1.SourceSpec{S3: &v1alpha1.S3Source{Bucket: Bucket, Key: key, S3Connection: v1alpha1.S3Connection{
				Region: "us-east-1", Endpoint: s.MinIO.Endpoint, CredentialsSecretRef: &v1alpha1.S3CredentialsSecretRef{Name: "s3-creds"}}}},
			Mapping: v1alpha1.MappingSpec{IDColumn: "id", IDPrefix: "239.", TextColumn: "formatted_text", Sanitize: "legacy",
				Metadata: v1alpha1.MetadataSpec{Include: "all", TextField: "text", TextMaxChars: 1000}},
			Embedding: v1alpha1.EmbeddingSpec{Model: "text-embedding-3-small", Dimensions: int32(s.Opts.Dimensions), BaseURL: s.OpenAI.URL(),
				APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "openai", Key: "api-key"}, RequestsPerMinute: 300, TokensPerMinute: 1000000, MaxInputsPerRequest: 2048},
			Target: v1alpha1.TargetSpec{Pinecone: v1alpha1.PineconeTarget{Index: Index, Namespace: "v2",
				APIKeySecretRef: v1alpha1.SecretKeyRef{Name: "pinecone", Key: "api-key"}, BatchSize: 100}},
			Chunking: v1alpha1.ChunkingSpec{RowsPerChunk: 1000, Parallelism: 4, ChunkTimeout: metav1.Duration{Duration: 30 * time.Minute},
				RetriesPerChunk: 3, MaxFailedRowsPercent: 1},
			Tracking:   &v1alpha1.TrackingSpec{DynamoDB: &v1alpha1.DynamoDBTracking{Table: TaskTable, Region: "us-east-1", Endpoint: s.Dynalite.Endpoint}},
			DeadLetter: &v1alpha1.DeadLetterSpec{Bucket: Bucket, KeyPrefix: "failed/"},
		},
	}
}

// Metrics returns the manager's Prometheus exposition.
func (s *Stack) Metrics() (string, error) {
	resp, err := http.Get("http://" + s.MetricsAddr + "/metrics")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func strPtr(s string) *string { return &s }
