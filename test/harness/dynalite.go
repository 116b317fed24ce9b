package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
)

const dynaliteStartTimeout = 60 * time.Second

// Dynalite is an in-memory dynalite server (DynamoDB wire protocol) on a loopback port.
type Dynalite struct {
	Endpoint string // http://127.0.0.1:<port>

	tmp  string // holds the log
	proc *proc
}

// StartDynalite starts dynalite for the duration of the test.
func StartDynalite(t testing.TB) *Dynalite {
	t.Helper()
	start := time.Now()
	d, err := NewDynalite()
	if err != nil {
		t.Fatalf("starting dynalite: %v", err)
	}
	t.Logf("harness: dynalite at %s started in %s", d.Endpoint, time.Since(start).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("harness: dynalite log tail:\n%s", d.proc.tail())
		}
		if err := d.Stop(); err != nil {
			t.Errorf("stopping dynalite: %v", err)
		}
	})
	return d
}

// NewDynalite starts hack/dynalite's dynalite with node on a free loopback port and waits until it
// answers ListTables. Call Stop when done.
func NewDynalite() (*Dynalite, error) {
	dir := filepath.Join(RepoRoot(), "hack", "dynalite")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "dynalite", "cli.js")); err != nil {
		return nil, fmt.Errorf("dynalite not installed (run hack/tools.sh dynalite): %w", err)
	}
	// run.js is dynalite's command line that survives a client resetting its connection.
	cli := filepath.Join(dir, "run.js")
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("dynalite needs node: %w", err)
	}
	return startWithPortRetry(func() (*Dynalite, error) { return startDynalite(node, cli) })
}

func startDynalite(node, cli string) (*Dynalite, error) {
	// dynalite treats --port 0 as "use the default 4567", so the port is chosen here.
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp("", "harness-dynalite-")
	if err != nil {
		return nil, fmt.Errorf("creating dynalite dir: %w", err)
	}
	d := &Dynalite{Endpoint: "http://127.0.0.1:" + strconv.Itoa(port), tmp: tmp}
	d.proc, err = startProc("dynalite", filepath.Join(tmp, "dynalite.log"), nil, node, cli,
		"--host", "127.0.0.1", "--port", strconv.Itoa(port),
		// Tables still go through CREATING/DELETING, just without dynalite's 500 ms default wait.
		"--createTableMs", "50", "--deleteTableMs", "50", "--updateTableMs", "50")
	if err != nil {
		_ = os.RemoveAll(tmp)
		return nil, err
	}
	client := d.Client()
	if err := d.proc.waitReady(context.Background(), dynaliteStartTimeout, func(ctx context.Context) error {
		// A probe during startup should fail fast, not back off through the SDK's retries.
		_, err := client.ListTables(ctx, &dynamodb.ListTablesInput{}, func(o *dynamodb.Options) { o.RetryMaxAttempts = 1 })
		return err
	}); err != nil {
		return nil, errors.Join(err, d.Stop())
	}
	return d, nil
}

// Stop stops the server (its data is in memory and goes with it). Safe to call more than once.
func (d *Dynalite) Stop() error {
	err := d.proc.stop()
	if rmErr := os.RemoveAll(d.tmp); rmErr != nil {
		err = errors.Join(err, fmt.Errorf("removing dynalite dir: %w", rmErr))
	}
	return err
}

// Logs is dynalite's output so far.
func (d *Dynalite) Logs() string { return readLog(d.proc.logPath) }

// Client is an aws-sdk-go-v2 DynamoDB client for this server with static dummy credentials.
func (d *Dynalite) Client() *dynamodb.Client {
	return dynamodb.New(dynamodb.Options{
		Region:       "us-east-1",
		BaseEndpoint: aws.String(d.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("dummy", "dummy", ""),
	})
}
