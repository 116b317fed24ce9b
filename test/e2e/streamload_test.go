package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// streamLoadAttempts is how many stream requests one key makes at once (E2E_STREAM_ATTEMPTS).
const streamLoadAttempts = 5000

// One key opens 5,000 web UI streams on loopback, 64 at a time, while an ingestion runs: at most
// the key's cap are served, every other attempt is refused with 429 and Retry-After, and the
// ingestion keeps progressing and completes. The manager's RSS and the ingestion's progress during
// the load are logged (docs/benchmarks.md), not asserted.
func TestStreamLoadOneKey(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	const perKey = 8
	attempts := streamLoadAttempts
	if v := os.Getenv("E2E_STREAM_ATTEMPTS"); v != "" {
		attempts, _ = strconv.Atoi(v)
	}
	// The per-client bucket would refuse most of the attempts from one address before the
	// stream cap is reached; open it wide so the caps are what is measured.
	saved := st.ManagerArgs
	st.ManagerArgs = append(append([]string(nil), saved...), "--api-rate-per-client=1000000", "--api-burst-per-client=1000000",
		"--ui-max-streams-per-key="+strconv.Itoa(perKey), "--ui-max-streams=256")
	restart := func() {
		if err := st.StopManager(); err != nil {
			t.Fatal(err)
		}
		if err := st.StartManager(ctx); err != nil {
			t.Fatal(err)
		}
	}
	restart()
	t.Cleanup(func() {
		st.ManagerArgs = saved
		restart()
	})

	_, key := scenario(t, "streamload", csvgen.Options{Rows: 6000, Seed: 91})
	obj := st.LegacyIngestion("streamload", "q239", key)
	obj.Spec.Chunking.RowsPerChunk, obj.Spec.Chunking.Parallelism = 250, 2
	obj.Spec.Embedding.RequestsPerMinute, obj.Spec.Embedding.MaxInputsPerRequest = 600, 50 // about a minute of work
	apply(t, obj)
	waitFor(t, "the ingestion processing rows", 3*time.Minute, func() (bool, string) {
		cur := get(t, obj)
		return cur.Status.Records.Processed > 0, string(cur.Status.Phase)
	})

	// Sign in once; every attempt presents the same session.
	base := "http://" + st.HTTPAddr
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	req, _ := http.NewRequest(http.MethodPost, base+"/ui/api/login", strings.NewReader(`{"key":"`+stack.ReadAPIKey+`"}`))
	req.Header.Set("X-Vectordb-UI", "1")
	resp, err := hc.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("login: %v %v", resp, err)
	}
	resp.Body.Close()

	pid := st.ManagerPID()
	rss0 := rssMiB(t, pid)
	var peak float64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if r := rssMiB(t, pid); r > peak {
				peak = r
			}
			select {
			case <-stopSampling:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	processedAt := func() int64 { return get(t, obj).Status.Records.Processed }
	p0 := processedAt()
	start := time.Now()

	var (
		mu      sync.Mutex
		codes   = map[int]int{}
		held    []io.ReadCloser
		noRetry int
	)
	work := make(chan struct{})
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				req, _ := http.NewRequest(http.MethodGet, base+"/ui/api/stream", nil)
				resp, err := hc.Do(req)
				if err != nil {
					mu.Lock()
					codes[-1]++
					mu.Unlock()
					continue
				}
				mu.Lock()
				codes[resp.StatusCode]++
				if resp.StatusCode == http.StatusOK {
					held = append(held, resp.Body) // kept open: it holds a slot
				} else if resp.Header.Get("Retry-After") == "" {
					noRetry++
				}
				mu.Unlock()
				if resp.StatusCode != http.StatusOK {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	for range attempts {
		work <- struct{}{}
	}
	close(work)
	wg.Wait()
	loadTook := time.Since(start)
	openDuring := metricValue(t, "vectordb_http_open_streams", "")
	refusedKey := metricValue(t, "vectordb_http_rate_limited_total", `limit="streams_key"`)

	// The held streams are live: each got its snapshot.
	for i, b := range held {
		if i >= 2 {
			break
		}
		line, err := bufio.NewReader(b).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "event: snapshot") {
			t.Errorf("a served stream began with %q (%v)", line, err)
		}
	}
	// The ingestion advances while the streams are held open.
	waitFor(t, "progress while the streams are held", 2*time.Minute, func() (bool, string) {
		p := processedAt()
		return p > p0, fmt.Sprintf("processed %d, was %d", p, p0)
	})
	progressTook := time.Since(start)
	p1 := processedAt()
	close(stopSampling)
	<-sampled
	for _, b := range held {
		b.Close()
	}

	if codes[http.StatusOK] > perKey || codes[http.StatusOK] == 0 {
		t.Errorf("%d streams served to one key, want 1..%d", codes[http.StatusOK], perKey)
	}
	if codes[http.StatusOK]+codes[http.StatusTooManyRequests] != attempts || noRetry > 0 {
		t.Errorf("answers %v (%d refusals without Retry-After); want %d attempts all served or 429", codes, noRetry, attempts)
	}
	if openDuring > perKey {
		t.Errorf("vectordb_http_open_streams %v during the load, want at most %d", openDuring, perKey)
	}
	final := waitTerminal(t, obj, 5*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCompleted || final.Status.Records.Processed != 6000 {
		t.Errorf("the ingestion under load: %s, %d rows", final.Status.Phase, final.Status.Records.Processed)
	}
	keys := make([]int, 0, len(codes))
	for c := range codes {
		keys = append(keys, c)
	}
	sort.Ints(keys)
	t.Logf("%d stream attempts with one key in %s (64 at a time): answers %v; open streams metric %v, refused (streams_key) %v",
		attempts, loadTook.Round(time.Millisecond), codes, openDuring, refusedKey)
	t.Logf("manager RSS: %.1f MiB before, %.1f MiB peak during the load", rss0, peak)
	t.Logf("ingestion: %d rows processed when the load began, %d after %s (progress seen %s after the load began); completed %d rows in all",
		p0, p1, progressTook.Round(time.Millisecond), progressTook.Round(time.Millisecond), final.Status.Records.Processed)
}

// rssMiB is a process's resident set size from /proc.
func rssMiB(t *testing.T, pid int) float64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// metricValue reads one sample of the manager's /metrics (plain HTTP in the stack).
func metricValue(t *testing.T, name, labels string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + st.MetricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name) || (labels != "" && !strings.Contains(line, labels)) {
			continue
		}
		rest := strings.TrimPrefix(line, name)
		if labels == "" && !strings.HasPrefix(rest, " ") {
			continue
		}
		f := strings.Fields(rest)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			return v
		}
	}
	return -1
}
