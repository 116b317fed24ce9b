package harness

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

const minioStartTimeout = 90 * time.Second

// MinIO is a MinIO server on a loopback port, storing objects under Dir.
type MinIO struct {
	Endpoint  string // http://127.0.0.1:<port>
	AccessKey string
	SecretKey string
	Region    string
	Dir       string // data directory; removed by Stop

	tmp  string // holds Dir, the certs dir and the log
	proc *proc
}

// StartMinIO starts MinIO with the given buckets for the duration of the test.
func StartMinIO(t testing.TB, buckets ...string) *MinIO {
	t.Helper()
	start := time.Now()
	m, err := NewMinIO(buckets...)
	if err != nil {
		t.Fatalf("starting MinIO: %v", err)
	}
	t.Logf("harness: MinIO at %s started in %s", m.Endpoint, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("harness: MinIO log tail:\n%s", m.proc.tail())
		}
		if err := m.Stop(); err != nil {
			t.Errorf("stopping MinIO: %v", err)
		}
	})
	return m
}

// NewMinIO starts bin/minio on a free loopback port, waits until it is ready and creates buckets.
// Call Stop when done.
func NewMinIO(buckets ...string) (*MinIO, error) {
	bin, err := binary("minio", "minio")
	if err != nil {
		return nil, err
	}
	m, err := startWithPortRetry(func() (*MinIO, error) { return startMinIO(bin) })
	if err != nil {
		return nil, err
	}
	// Under load the first S3 calls can still find the server initializing; retry them.
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, b := range buckets {
		for {
			err := m.CreateBucket(ctx, b)
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				return nil, errors.Join(err, m.Stop())
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	return m, nil
}

func startMinIO(bin string) (*MinIO, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	consolePort, err := freePort()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "harness-minio-")
	if err != nil {
		return nil, fmt.Errorf("creating MinIO dir: %w", err)
	}
	m := &MinIO{
		Endpoint:  "http://127.0.0.1:" + strconv.Itoa(port),
		AccessKey: "harness-access",
		SecretKey: "harness-secret-key",
		Region:    "us-east-1",
		Dir:       filepath.Join(tmp, "data"),
		tmp:       tmp,
	}
	env := []string{
		"MINIO_ROOT_USER=" + m.AccessKey,
		"MINIO_ROOT_PASSWORD=" + m.SecretKey,
		"MINIO_REGION=" + m.Region,
		"MINIO_BROWSER=off",
		"MINIO_UPDATE=off",
	}
	m.proc, err = startProc("minio", filepath.Join(tmp, "minio.log"), env, bin,
		"server", m.Dir,
		"--address", "127.0.0.1:"+strconv.Itoa(port),
		"--console-address", "127.0.0.1:"+strconv.Itoa(consolePort),
		// Keep MinIO out of $HOME/.minio.
		"--certs-dir", filepath.Join(tmp, "certs"),
		"--quiet")
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	// /minio/health/live answers before the object layer and IAM are up (S3 calls then get
	// XMinioServerNotInitialized); /minio/health/cluster waits for both.
	ready := m.Endpoint + "/minio/health/cluster"
	if err := m.proc.waitReady(context.Background(), minioStartTimeout, func(ctx context.Context) error {
		return httpOK(ctx, ready)
	}); err != nil {
		return nil, errors.Join(err, m.Stop())
	}
	return m, nil
}

// Stop stops the server and removes its data. Safe to call more than once.
func (m *MinIO) Stop() error {
	err := m.proc.stop()
	if rmErr := os.RemoveAll(m.tmp); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("removing MinIO dir: %w", rmErr))
	}
	return err
}

// Logs is MinIO's output so far.
func (m *MinIO) Logs() string { return readLog(m.proc.logPath) }

// S3Client is an aws-sdk-go-v2 S3 client for this server: path-style addressing, static credentials.
func (m *MinIO) S3Client() *s3.Client {
	return s3.New(s3.Options{
		Region:       m.Region,
		BaseEndpoint: aws.String(m.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(m.AccessKey, m.SecretKey, ""),
	})
}

// CreateBucket creates a bucket; one that already exists and is ours is not an error.
func (m *MinIO) CreateBucket(ctx context.Context, name string) error {
	_, err := m.S3Client().CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return fmt.Errorf("creating bucket %q: %w", name, err)
	}
	return nil
}

func httpOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

func readLog(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(data)
}
