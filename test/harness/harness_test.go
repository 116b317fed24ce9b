package harness_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ingestionv1alpha1 "github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

func TestClusterRunsJobsAndServesCRD(t *testing.T) {
	c := harness.StartCluster(t, harness.ClusterOptions{ControllerManager: true})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("CRD installed", func(t *testing.T) {
		crd := &unstructured.Unstructured{}
		crd.SetGroupVersionKind(schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"})
		if err := c.Client.Get(ctx, client.ObjectKey{Name: "csvingestions.ingestion.vectordb.io"}, crd); err != nil {
			t.Fatalf("get CRD: %v", err)
		}
		// The typed client lists only if the scheme knows the kind and the API serves it.
		if err := c.Client.List(ctx, &ingestionv1alpha1.CsvIngestionList{}, client.InNamespace("default")); err != nil {
			t.Fatalf("list CsvIngestions: %v", err)
		}
	})

	t.Run("kubeconfig file reaches the API server", func(t *testing.T) {
		cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
		if err != nil {
			t.Fatalf("load kubeconfig: %v", err)
		}
		cl, err := client.New(cfg, client.Options{Scheme: c.Scheme})
		if err != nil {
			t.Fatalf("client from kubeconfig: %v", err)
		}
		if err := cl.Get(ctx, client.ObjectKey{Name: "default"}, &corev1.Namespace{}); err != nil {
			t.Fatalf("get namespace default through kubeconfig: %v", err)
		}
	})

	t.Run("job becomes pod and is garbage-collected", func(t *testing.T) {
		job := &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Name: "harness-probe", Namespace: "default"},
			Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: "main", Image: "busybox", Command: []string{"true"}}},
			}}},
		}
		created := time.Now()
		if err := c.Client.Create(ctx, job); err != nil {
			t.Fatalf("create job: %v", err)
		}
		var pod corev1.Pod
		err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			var pods corev1.PodList
			if err := c.Client.List(ctx, &pods, client.InNamespace("default"),
				client.MatchingLabels{batchv1.JobNameLabel: job.Name}); err != nil {
				return false, err
			}
			if len(pods.Items) == 0 {
				return false, nil
			}
			pod = pods.Items[0]
			return true, nil
		})
		if err != nil {
			t.Fatalf("no pod for job %s: %v", job.Name, err)
		}
		t.Logf("job → pod in %s", time.Since(created).Round(time.Millisecond))
		owner := metav1.GetControllerOf(&pod)
		if owner == nil || owner.UID != job.UID {
			t.Fatalf("pod %s controller = %+v, want job %s (uid %s)", pod.Name, owner, job.Name, job.UID)
		}

		if err := c.Client.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
			t.Fatalf("delete job: %v", err)
		}
		err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			err := c.Client.Get(ctx, client.ObjectKeyFromObject(&pod), &corev1.Pod{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, err
		})
		if err != nil {
			t.Fatalf("pod %s of deleted job not garbage-collected: %v", pod.Name, err)
		}
	})

	t.Run("StopAPIServer", func(t *testing.T) {
		if err := c.StopAPIServer(); err != nil {
			t.Fatalf("StopAPIServer: %v", err)
		}
		short, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if err := c.Client.Get(short, client.ObjectKey{Name: "default"}, &corev1.Namespace{}); err == nil {
			t.Fatal("API server still answers after StopAPIServer")
		}
		if !strings.Contains(c.Logs(), "==> kube-controller-manager.log <==") {
			t.Errorf("Logs() lacks the controller manager's log")
		}
		// Stop runs again in cleanup; both must succeed.
		if err := c.Stop(); err != nil {
			t.Fatalf("Stop after StopAPIServer: %v", err)
		}
	})
}

func TestMinIOServesS3(t *testing.T) {
	m := harness.StartMinIO(t, "harness-bucket")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s3c := m.S3Client()

	want := []byte("id,text\n1,hello\n")
	if _, err := s3c.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String("harness-bucket"), Key: aws.String("in/rows.csv"), Body: bytes.NewReader(want),
	}); err != nil {
		t.Fatalf("put object: %v", err)
	}
	out, err := s3c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String("harness-bucket"), Key: aws.String("in/rows.csv")})
	if err != nil {
		t.Fatalf("get object: %v", err)
	}
	got, err := io.ReadAll(out.Body)
	_ = out.Body.Close()
	if err != nil {
		t.Fatalf("read object: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("object = %q, want %q", got, want)
	}
	if err := m.CreateBucket(ctx, "harness-bucket"); err != nil {
		t.Errorf("creating an existing bucket again: %v", err)
	}

	if err := m.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if resp, err := http.Get(m.Endpoint + "/minio/health/live"); err == nil {
		_ = resp.Body.Close()
		t.Fatalf("MinIO still answers after Stop: %s", resp.Status)
	}
}

func TestDynaliteServesDynamoDB(t *testing.T) {
	d := harness.StartDynalite(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := d.Client()

	table := aws.String("harness-tasks")
	if _, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName:            table,
		AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("task_id"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
		KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("task_id"), KeyType: ddbtypes.KeyTypeHash}},
		BillingMode:          ddbtypes.BillingModePayPerRequest,
	}); err != nil {
		t.Fatalf("create table: %v", err)
	}
	if err := dynamodb.NewTableExistsWaiter(db).Wait(ctx, &dynamodb.DescribeTableInput{TableName: table}, 30*time.Second,
		func(o *dynamodb.TableExistsWaiterOptions) { o.MinDelay = 50 * time.Millisecond }); err != nil {
		t.Fatalf("table never became active: %v", err)
	}
	item := map[string]ddbtypes.AttributeValue{
		"task_id": &ddbtypes.AttributeValueMemberS{Value: "t-1"},
		"status":  &ddbtypes.AttributeValueMemberS{Value: "PROCESSING"},
	}
	if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: table, Item: item}); err != nil {
		t.Fatalf("put item: %v", err)
	}
	out, err := db.GetItem(ctx, &dynamodb.GetItemInput{
		TableName: table, Key: map[string]ddbtypes.AttributeValue{"task_id": item["task_id"]}, ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("get item: %v", err)
	}
	status, ok := out.Item["status"].(*ddbtypes.AttributeValueMemberS)
	if !ok || status.Value != "PROCESSING" {
		t.Fatalf("item = %#v, want status PROCESSING", out.Item)
	}
}

func TestMissingBinaryNamesTheFix(t *testing.T) {
	t.Setenv("VECTORDB_BIN_DIR", t.TempDir())
	for name, start := range map[string]func() error{
		"minio":   func() error { _, err := harness.NewMinIO(); return err },
		"cluster": func() error { _, err := harness.NewCluster(harness.ClusterOptions{}); return err },
	} {
		err := start()
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "hack/tools.sh") {
			t.Errorf("%s with an empty bin dir: err = %v, want a not-exist error naming hack/tools.sh", name, err)
		}
	}
}

// TestProcessesDieWithTheTestBinary kills a test binary that has a cluster and dynalite running,
// as a -timeout panic would (no t.Cleanup runs), and expects its services to go with it.
func TestProcessesDieWithTheTestBinary(t *testing.T) {
	child := exec.Command(os.Args[0], "-test.run=^TestOrphanChild$", "-test.timeout=3m")
	child.Env = append(os.Environ(), "HARNESS_ORPHAN_CHILD=1")
	child.Stderr = os.Stderr
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatalf("start child test binary: %v", err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })

	var addrs []string
	for sc := bufio.NewScanner(out); sc.Scan(); {
		if rest, ok := strings.CutPrefix(sc.Text(), "ENDPOINTS "); ok {
			for _, raw := range strings.Fields(rest) {
				u, err := url.Parse(raw)
				if err != nil {
					t.Fatalf("child printed a bad endpoint %q: %v", raw, err)
				}
				addrs = append(addrs, u.Host)
			}
			break
		}
	}
	if len(addrs) != 2 {
		t.Fatalf("child did not report its endpoints (got %v)", addrs)
	}
	for _, a := range addrs {
		if err := dial(a); err != nil {
			t.Fatalf("%s not serving before the kill: %v", a, err)
		}
	}
	if err := child.Process.Kill(); err != nil {
		t.Fatalf("kill child: %v", err)
	}
	_ = child.Wait()
	for _, a := range addrs {
		err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true,
			func(context.Context) (bool, error) { return dial(a) != nil, nil })
		if err != nil {
			t.Errorf("%s still serving after its test binary was killed", a)
		}
	}
}

// TestOrphanChild is the child half of TestProcessesDieWithTheTestBinary.
func TestOrphanChild(t *testing.T) {
	if os.Getenv("HARNESS_ORPHAN_CHILD") != "1" {
		t.Skip("runs only as TestProcessesDieWithTheTestBinary's child")
	}
	c, err := harness.NewCluster(harness.ClusterOptions{NoCRDs: true})
	if err != nil {
		t.Fatal(err)
	}
	d, err := harness.NewDynalite()
	if err != nil {
		t.Fatal(errors.Join(err, c.Stop()))
	}
	fmt.Println("ENDPOINTS", c.Config.Host, d.Endpoint)
	time.Sleep(5 * time.Minute) // until killed; -test.timeout ends it otherwise
}

func dial(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	return conn.Close()
}
