package batchembed_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	openai "github.com/sashabaranov/go-openai"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/batchembed"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fake "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

const (
	key   = "sk-batch"
	dims  = 16
	model = "text-embedding-3-small"
)

// memStore is a Store in memory that can be told to fail a save, as a pod killed right before
// the write would. Its versions count the writes, and a save at an old version is a conflict,
// as S3's conditional writes are.
type memStore struct {
	mu       sync.Mutex
	rec      *batchembed.Record
	version  int
	saves    int
	failSave int // fail the save with this number (1-based); 0: none
}

var errKilled = errors.New("killed")

func (m *memStore) Load(context.Context) (batchembed.Record, string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rec == nil {
		return batchembed.Record{}, "", false, nil
	}
	return *m.rec, fmt.Sprint(m.version), true, nil
}

func (m *memStore) Save(_ context.Context, rec batchembed.Record, version string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.saves++
	if m.saves == m.failSave {
		return "", errKilled
	}
	if want := fmt.Sprint(m.version); (m.rec == nil && version != "") || (m.rec != nil && version != want) {
		return "", fmt.Errorf("version %q, stored %q: %w", version, want, batchembed.ErrConflict)
	}
	// Through JSON, as the S3 store keeps it: nothing shared with the runner's copy.
	b, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	var kept batchembed.Record
	if err := json.Unmarshal(b, &kept); err != nil {
		return "", err
	}
	m.rec = &kept
	m.version++
	return fmt.Sprint(m.version), nil
}

func (m *memStore) Delete(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rec = nil
	return nil
}

func startFake(t *testing.T) *fake.Server {
	t.Helper()
	s, err := fake.Start(fake.Options{APIKeys: []string{key}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	s.RefuseMarker("REFUSE", "Input REFUSE is not allowed here.")
	return s
}

func config(t *testing.T, s *fake.Server, store batchembed.Store, lines int) batchembed.Config {
	cfg := openai.DefaultConfig(key)
	cfg.BaseURL = s.URL()
	return batchembed.Config{
		Client: openai.NewClientWithConfig(cfg), APIKey: key, BaseURL: s.URL(),
		Model: model, Dimensions: dims, Ingestion: "uid-1", Chunk: 3,
		Limits:   batchembed.Limits{MaxLines: lines},
		SpoolDir: t.TempDir(), Store: store, Log: testr.New(t),
		Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
	}
}

func rowText(row int64) string {
	if row%50 == 7 {
		return fmt.Sprintf("REFUSE row %d", row)
	}
	return fmt.Sprintf("row number %d of the chunk", row)
}

// submitRows submits the pending pass's rows first..first+n-1.
func submitRows(ctx context.Context, r *batchembed.Runner, first, n int64) error {
	pass, from, want, ok, err := r.Pending(ctx)
	if err != nil || !ok {
		return err
	}
	sub := r.Submitter(pass)
	defer sub.Abort()
	for row := first; row < first+n; row++ {
		if row < from || !want(row) {
			continue
		}
		if err := sub.Add(ctx, row, rowText(row), 5); err != nil {
			return err
		}
	}
	return sub.Close(ctx, first+n)
}

// run is a whole chunk: submit, wait (resubmitting expired lines), collect.
func run(ctx context.Context, r *batchembed.Runner, first, n int64) (*batchembed.Results, error) {
	if err := submitRows(ctx, r, first, n); err != nil {
		return nil, err
	}
	for {
		again, err := r.Wait(ctx)
		if err != nil {
			return nil, err
		}
		if !again {
			break
		}
		if err := submitRows(ctx, r, first, n); err != nil {
			return nil, err
		}
	}
	return r.Collect(ctx, first, n, dims)
}

// check asserts every row has its vector, or, for marked rows, the refusal.
// openRun opens a runner of cfg and runs rows first..first+n through it, failing the test on an
// error; the results are closed when the test ends.
func openRun(ctx context.Context, t *testing.T, cfg batchembed.Config, first, n int64) (*batchembed.Runner, *batchembed.Results) {
	t.Helper()
	r, err := batchembed.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(ctx, r, first, n)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Close() })
	return r, res
}

func check(t *testing.T, res *batchembed.Results, first, n int64) {
	t.Helper()
	for row := first; row < first+n; row++ {
		vec, rowErr, err := res.Lookup(row, nil)
		if err != nil {
			t.Fatalf("row %d: %v", row, err)
		}
		if strings.HasPrefix(rowText(row), "REFUSE") {
			if rowErr == nil || rowErr.Reason != batchembed.ReasonRefused || !strings.Contains(rowErr.Detail, "not allowed here") || !strings.Contains(rowErr.Detail, "400") {
				t.Fatalf("row %d: want the provider's refusal, got %+v", row, rowErr)
			}
			continue
		}
		if rowErr != nil {
			t.Fatalf("row %d: %+v", row, rowErr)
		}
		want := fake.Vector(rowText(row), dims)
		for k := range want {
			if vec[k] != want[k] {
				t.Fatalf("row %d value %d = %v, want %v", row, k, vec[k], want[k])
			}
		}
	}
}

func TestBatchesWithinLimitsCollectEveryRow(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	store := &memStore{}
	const first, n = 1000, 250
	r, res := openRun(ctx, t, config(t, s, store, 60), first, n)
	check(t, res, first, n)
	st := s.BatchStats()
	if st.BatchesCreated != 5 || st.FilesUploaded != 5 || st.LinesEmbedded+st.LinesFailed != n || st.LinesFailed != 5 {
		t.Fatalf("250 rows at 60 lines a batch: %+v", st)
	}
	rec := store.rec
	if len(rec.Batches) != 5 || !rec.Passes[0].Submitted || rec.Passes[0].NextRow != first+n {
		t.Fatalf("record %+v", rec)
	}
	for i, b := range rec.Batches {
		if b.State != "completed" || b.OutputFileID == "" || b.Lines != min(60, n-60*i) || b.FirstRow != first+int64(60*i) {
			t.Fatalf("batch %d recorded as %+v", i, b)
		}
	}
	if res.Embedded != n-5 || res.Failures() != 5 {
		t.Fatalf("embedded %d, failed %d", res.Embedded, res.Failures())
	}
	if err := r.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if ids := s.FileIDs(); len(ids) != 0 {
		t.Fatalf("files left at OpenAI after Finish: %v", ids)
	}
	if !store.rec.Done {
		t.Fatal("record not marked done")
	}
	// A later run of the chunk starts a new generation instead of reusing the old batches.
	again, err := batchembed.Open(ctx, config(t, s, store, 60))
	if err != nil {
		t.Fatal(err)
	}
	if rec := again.Record(); rec.Generation != 1 || len(rec.Batches) != 0 {
		t.Fatalf("after a finished run: %+v", rec)
	}
}

func TestLimitsSplitBatches(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	cases := []struct {
		name    string
		limits  batchembed.Limits
		batches int64
	}{
		{"lines", batchembed.Limits{MaxLines: 10}, 10},
		{"inputs", batchembed.Limits{MaxInputs: 25}, 4},
		{"bytes", batchembed.Limits{MaxFileBytes: 20 * 180}, 0}, // a line is ~170 bytes: 5 or 6
		{"tokens", batchembed.Limits{MaxEnqueuedTokens: 5 * 30}, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := s.BatchStats().BatchesCreated
			cfg := config(t, s, &memStore{}, 0)
			cfg.Limits = tc.limits
			cfg.Ingestion = "uid-" + tc.name // one fake for all: batches of another subtest are not ours
			r, res := openRun(ctx, t, cfg, 0, 100)
			check(t, res, 0, 100)
			got := s.BatchStats().BatchesCreated - before
			if tc.batches > 0 && got != tc.batches || got < 2 {
				t.Fatalf("%d batches, want %d", got, tc.batches)
			}
			l := tc.limits
			bs := r.Record().Batches
			for i, b := range bs {
				over := l.MaxLines > 0 && b.Lines > l.MaxLines || l.MaxInputs > 0 && b.Lines > l.MaxInputs ||
					l.MaxFileBytes > 0 && b.Bytes > l.MaxFileBytes || l.MaxEnqueuedTokens > 0 && b.Tokens > l.MaxEnqueuedTokens
				// Packed: one more line would not have fitted.
				full := l.MaxLines > 0 && b.Lines == l.MaxLines || l.MaxInputs > 0 && b.Lines == l.MaxInputs ||
					l.MaxFileBytes > 0 && b.Bytes+200 > l.MaxFileBytes || l.MaxEnqueuedTokens > 0 && b.Tokens+5 > l.MaxEnqueuedTokens
				if over || !full && i < len(bs)-1 {
					t.Fatalf("batch %d of %d is over the limit or not full: %+v", i, len(bs), b)
				}
			}
		})
	}
}

func TestKilledPodsNeverSubmitTwice(t *testing.T) {
	ctx := context.Background()
	const n = 200
	// Saves while submitting 200 rows at 50 a batch: each batch is saved once uploaded, once
	// claimed and once created, then Close saves. Kill at every one of these 13 saves in turn.
	for kill := 1; kill <= 13; kill++ {
		t.Run(fmt.Sprint("save", kill), func(t *testing.T) {
			s := startFake(t)
			store := &memStore{failSave: kill}
			r, err := batchembed.Open(ctx, config(t, s, store, 50))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := run(ctx, r, 0, n); !errors.Is(err, errKilled) {
				t.Fatalf("want the kill, got %v", err)
			}
			// The next pod.
			r2, err := batchembed.Open(ctx, config(t, s, store, 50))
			if err != nil {
				t.Fatal(err)
			}
			res, err := run(ctx, r2, 0, n)
			if err != nil {
				t.Fatal(err)
			}
			defer res.Close()
			check(t, res, 0, n)
			st := s.BatchStats()
			if st.BatchesCreated != 4 || st.LinesEmbedded+st.LinesFailed != n {
				t.Fatalf("kill at save %d: %+v", kill, st)
			}
			// A file uploaded but not recorded (kill on the save after the upload) is left over;
			// Finish deletes what the record knows.
			if err := r2.Finish(ctx); err != nil {
				t.Fatal(err)
			}
			if left := len(s.FileIDs()); left > 1 {
				t.Fatalf("%d files left", left)
			}
		})
	}
}

func TestPollingPodKilledResumes(t *testing.T) {
	s := startFake(t)
	s.HoldBatches(true)
	store := &memStore{}
	ctx := context.Background()
	r, err := batchembed.Open(ctx, config(t, s, store, 40))
	if err != nil {
		t.Fatal(err)
	}
	if err := submitRows(ctx, r, 0, 100); err != nil {
		t.Fatal(err)
	}
	// The pod is killed while it polls.
	pctx, cancel := context.WithCancel(ctx)
	cfg := config(t, s, store, 40)
	polls := 0
	cfg.Sleep = func(ctx context.Context, _ time.Duration) error {
		if polls++; polls == 3 {
			cancel()
		}
		return ctx.Err()
	}
	r, err = batchembed.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Wait(pctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("want the kill, got %v", err)
	}
	// Meanwhile the batches finish; a new pod collects them.
	for _, id := range s.BatchIDs() {
		s.FinishBatch(id)
	}
	r, err = batchembed.Open(ctx, config(t, s, store, 40))
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(ctx, r, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	check(t, res, 0, 100)
	if st := s.BatchStats(); st.BatchesCreated != 3 || st.LinesEmbedded+st.LinesFailed != 100 {
		t.Fatalf("%+v", st)
	}
}

func TestExpiredLinesResubmittedOnce(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	store := &memStore{}
	r, err := batchembed.Open(ctx, config(t, s, store, 60))
	if err != nil {
		t.Fatal(err)
	}
	s.ExpireNextBatch(25) // the first batch expires with 25 of its 60 lines done
	res, err := run(ctx, r, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	check(t, res, 0, 100)
	st := s.BatchStats()
	if st.BatchesCreated != 3 || st.LinesExpired != 35 || st.LinesEmbedded+st.LinesFailed != 100 {
		t.Fatalf("each line embedded once: %+v", st)
	}
	rec := r.Record()
	if len(rec.Passes) != 2 || rec.Batches[2].Pass != 1 || rec.Batches[2].Lines != 35 || r.Stats().Resubmitted != 35 {
		t.Fatalf("resubmission pass: %+v %+v", rec, r.Stats())
	}
}

func TestExpiryBeyondResubmitsAndFailedBatchFailRows(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	cfg := config(t, s, &memStore{}, 50)
	cfg.MaxResubmits = -1
	r, err := batchembed.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s.ExpireNextBatch(10)
	s.HoldBatches(true)
	if err := submitRows(ctx, r, 0, 100); err != nil {
		t.Fatal(err)
	}
	ids := s.BatchIDs()
	s.FinishBatch(ids[0])
	s.FailBatch(ids[1], "server_error", "The batch could not be run.")
	if again, err := r.Wait(ctx); err != nil || again {
		t.Fatalf("wait: %v %v", again, err)
	}
	res, err := r.Collect(ctx, 0, 100, dims)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	var expired, failed, ok int
	for row := int64(0); row < 100; row++ {
		_, rowErr, err := res.Lookup(row, nil)
		switch {
		case err != nil:
			t.Fatal(err)
		case rowErr == nil:
			ok++
		case rowErr.Reason == batchembed.ReasonExpired:
			expired++
		case rowErr.Reason == batchembed.ReasonFailed && row >= 50 && strings.Contains(rowErr.Detail, "server_error: The batch could not be run."):
			failed++
		case rowErr.Reason == batchembed.ReasonRefused:
			ok++ // its refusal is checked elsewhere
		default:
			t.Fatalf("row %d: %+v", row, rowErr)
		}
	}
	if ok != 10 || expired != 40 || failed != 50 {
		t.Fatalf("ok %d expired %d failed %d", ok, expired, failed)
	}
}

func TestEnqueuedTokenCapRefusalRetried(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	// The organisation's cap (other work shares it) holds one of these batches at a time.
	s.SetBatchLimits(fake.BatchLimits{MaxEnqueuedTokens: 500})
	r, err := batchembed.Open(ctx, config(t, s, &memStore{}, 40))
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(ctx, r, 0, 80)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	check(t, res, 0, 80)
	st := s.BatchStats()
	if st.BatchesCreated < 3 || st.LinesEmbedded+st.LinesFailed != 80 {
		t.Fatalf("the refused batch is created again and each line runs once: %+v", st)
	}
	for _, b := range r.Record().Batches {
		if b.State != "completed" {
			t.Fatalf("%+v", b)
		}
	}
}

func TestCancelAndDeleteFiles(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	s.HoldBatches(true)
	r, err := batchembed.Open(ctx, config(t, s, &memStore{}, 30))
	if err != nil {
		t.Fatal(err)
	}
	if err := submitRows(ctx, r, 0, 90); err != nil {
		t.Fatal(err)
	}
	s.FinishBatch(s.BatchIDs()[0]) // one batch ended before the cancel: nothing to cancel there
	if err := r.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range s.BatchIDs()[1:] {
		if st := s.BatchStatus(id); st != fake.BatchCancelling {
			t.Fatalf("batch %s is %s after Cancel", id, st)
		}
	}
	if err := r.DeleteFiles(ctx); err != nil {
		t.Fatal(err)
	}
	if ids := s.FileIDs(); len(ids) != 0 {
		t.Fatalf("files left: %v", ids)
	}
	if err := r.DeleteFiles(ctx); err != nil {
		t.Fatalf("deleting again (files gone) must not fail: %v", err)
	}
}

// The cleanup pod has no writable filesystem: abandoning a chunk's batches writes no file.
func TestAbandonNeedsNoSpool(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	store := &memStore{}
	r, err := batchembed.Open(ctx, config(t, s, store, 30))
	if err != nil {
		t.Fatal(err)
	}
	s.HoldBatches(true)
	if err := submitRows(ctx, r, 0, 60); err != nil {
		t.Fatal(err)
	}
	s.HoldBatches(false)
	cfg := config(t, s, store, 30)
	blocker := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.SpoolDir = filepath.Join(blocker, "spool") // cannot be made
	cleanup, err := batchembed.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := cleanup.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range s.BatchIDs() {
		if st := s.BatchStatus(id); st != fake.BatchCancelled {
			t.Fatalf("batch %s is %s", id, st)
		}
	}
	if ids := s.FileIDs(); len(ids) != 0 || !store.rec.Done {
		t.Fatalf("files left %v, record done %v", ids, store.rec.Done)
	}
}

func TestBadKeyIsPermanent(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	cfg := config(t, s, &memStore{}, 10)
	cfg.APIKey = "sk-wrong"
	r, err := batchembed.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = submitRows(ctx, r, 0, 20)
	if !batchembed.IsPermanent(err) || !strings.Contains(err.Error(), "Incorrect API key") {
		t.Fatalf("want a permanent error with the provider's message, got %v", err)
	}
	if s.BatchStats().FilesUploaded != 0 {
		t.Fatal("uploaded with a bad key")
	}
}

// The pipeline's embed stage looks rows up from several goroutines at once.
func TestLookupConcurrent(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	r, err := batchembed.Open(ctx, config(t, s, &memStore{}, 100))
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(ctx, r, 0, 200)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				for row := int64(0); row < 200; row++ {
					vec, rowErr, err := res.Lookup(row, nil)
					if err != nil || rowErr != nil && rowErr.Reason != batchembed.ReasonRefused {
						t.Errorf("row %d: %v %+v", row, err, rowErr)
						return
					}
					if rowErr == nil && !slices.Equal(vec, fake.Vector(rowText(row), dims)) {
						t.Errorf("row %d: another row's vector", row)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
}

// A pod killed right after creating a batch, before recording it, leaves the record saying
// "uploaded". Cancelling the ingestion then must still find that batch (by its metadata) and
// cancel it: otherwise it runs on, is billed, and its output file is never deleted.
func TestAbandonCancelsBatchCreatedButNotRecorded(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	s.HoldBatches(true)
	store := &memStore{failSave: 3} // save 1: b0 uploaded; save 2: b0 claimed; save 3: b0 created (killed)
	r, err := batchembed.Open(ctx, config(t, s, store, 30))
	if err != nil {
		t.Fatal(err)
	}
	if err := submitRows(ctx, r, 0, 60); !errors.Is(err, errKilled) {
		t.Fatalf("want the kill, got %v", err)
	}
	if ids := s.BatchIDs(); len(ids) != 1 {
		t.Fatalf("batches at the provider: %v", ids)
	}
	if st := store.rec.Batches[0].State; st != batchembed.StateUploaded {
		t.Fatalf("record says %s, want the kill to have left %s", st, batchembed.StateUploaded)
	}
	s.HoldBatches(false)
	cleanup, err := batchembed.Open(ctx, config(t, s, store, 30))
	if err != nil {
		t.Fatal(err)
	}
	if err := cleanup.Abandon(ctx); err != nil {
		t.Fatal(err)
	}
	for _, id := range s.BatchIDs() {
		if st := s.BatchStatus(id); st != fake.BatchCancelled {
			t.Fatalf("batch %s is %s after Abandon, want %s", id, st, fake.BatchCancelled)
		}
	}
	if st := s.BatchStats(); st.BatchesCreated != 1 {
		t.Fatalf("Abandon created a batch: %+v", st)
	}
	if ids := s.FileIDs(); len(ids) != 0 {
		t.Fatalf("files left: %v", ids)
	}
}

// Provider answers no retry changes fail the chunk fast, with the reason the online path gives
// (the embedder's exit code and the ingestion's condition come from worker.PermanentError);
// server errors are retried.
func TestProviderErrorsPermanentOrRetried(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		inject func(*fake.Server)
		reason string // "" : retryable
	}{
		{"bad key", func(s *fake.Server) { s.SetUnauthorized(true) }, worker.ReasonUnauthorized},
		{"quota exhausted (a 429)", func(s *fake.Server) { s.SetInsufficientQuota(true) }, worker.ReasonQuotaExceeded},
		{"server error", func(s *fake.Server) { s.FailNext(1, 500) }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startFake(t)
			r, err := batchembed.Open(ctx, config(t, s, &memStore{}, 10))
			if err != nil {
				t.Fatal(err)
			}
			tc.inject(s)
			err = submitRows(ctx, r, 0, 20)
			if err == nil {
				t.Fatal("no error")
			}
			p, perm := worker.AsPermanent(err)
			switch {
			case tc.reason == "" && (perm || batchembed.IsPermanent(err)):
				t.Fatalf("a retryable answer was made permanent: %v", err)
			case tc.reason != "" && (!perm || p.Reason != tc.reason || !batchembed.IsPermanent(err)):
				t.Fatalf("want a permanent error with reason %s, got %v (worker permanent %v)", tc.reason, err, perm)
			}
			if strings.Contains(err.Error(), key) {
				t.Fatalf("the error holds the API key: %v", err)
			}
		})
	}
}

// A proxy in front of OpenAI that echoes the whole Authorization header in its error: the key
// must not reach the error (it goes to logs, the termination message and status).
func TestProviderErrorDoesNotCarryTheKey(t *testing.T) {
	ctx := context.Background()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusForbidden)
		_, _ = fmt.Fprintf(w, `{"error":{"message":"proxy refused %s","type":"invalid_request_error","code":"forbidden"}}`, r.Header.Get("Authorization"))
	}))
	defer srv.Close()
	cfg := openai.DefaultConfig(key)
	cfg.BaseURL = srv.URL + "/v1"
	r, err := batchembed.Open(ctx, batchembed.Config{
		Client: openai.NewClientWithConfig(cfg), APIKey: key, BaseURL: srv.URL + "/v1", Model: model, Ingestion: "uid-1", Chunk: 3,
		SpoolDir: t.TempDir(), Store: &memStore{}, Log: testr.New(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	err = submitRows(ctx, r, 0, 3)
	if p, ok := worker.AsPermanent(err); !ok || p.Reason != worker.ReasonUnauthorized {
		t.Fatalf("want a permanent Unauthorized error, got %v", err)
	}
	if !strings.Contains(err.Error(), "proxy refused") || strings.Contains(err.Error(), key) {
		t.Fatalf("want the proxy's message without the key, got %v", err)
	}
	// The batch paths (list, retrieve, cancel) go through go-openai's errors: the same rule.
	if err := r.Cancel(ctx); err != nil {
		t.Fatalf("nothing to cancel: %v", err)
	}
}

// The record lives in the user's bucket. A record that names another ingestion's batches (copied
// from another run's record, or written by hand) must not make this chunk upsert that
// ingestion's vectors, nor cancel its batches or delete its files: every batch the record names
// is checked at OpenAI (its metadata: ingestion UID, chunk, batch key) before its files are used.
func TestRecordNamingAnotherIngestionsBatchesIsRefused(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	other := &memStore{}
	ocfg := config(t, s, other, 30)
	ocfg.Ingestion = "uid-other" // same chunk number, same namespace/task for all it matters
	ro, err := batchembed.Open(ctx, ocfg)
	if err != nil {
		t.Fatal(err)
	}
	ores, err := run(ctx, ro, 0, 60)
	if err != nil {
		t.Fatal(err)
	}
	ores.Close()
	files := s.FileIDs()
	// A hostile record for uid-1: the other run's batches, under this ingestion's UID.
	forged := ro.Record()
	forged.Ingestion = "uid-1"
	hostile := &memStore{}
	if _, err := hostile.Save(ctx, forged, ""); err != nil {
		t.Fatal(err)
	}
	r, err := batchembed.Open(ctx, config(t, s, hostile, 30))
	if err != nil {
		t.Fatal(err)
	}
	var collectErr error
	if again, err := r.Wait(ctx); err != nil || again {
		collectErr = err
	} else {
		res, err := r.Collect(ctx, 0, 60, dims)
		if err == nil {
			res.Close()
		}
		collectErr = err
	}
	if _, ok := worker.AsPermanent(collectErr); !ok || !strings.Contains(fmt.Sprint(collectErr), "not this chunk's") {
		t.Fatalf("want a permanent error naming the foreign batch, got %v", collectErr)
	}
	// The cleanup of this ingestion neither cancels nor deletes what is the other's.
	cleanup, err := batchembed.Open(ctx, config(t, s, hostile, 30))
	if err != nil {
		t.Fatal(err)
	}
	if err := cleanup.Abandon(ctx); err == nil {
		t.Fatal("Abandon of a foreign record succeeded")
	}
	if left := s.FileIDs(); !slices.Equal(left, files) {
		t.Fatalf("files of the other ingestion deleted: had %v, left %v", files, left)
	}
	if st := s.BatchStats(); st.BatchesCreated != 2 {
		t.Fatalf("batches created: %+v", st)
	}
}

// A model that does not exist is answered line by line (404 model_not_found). That is the
// run's error, not each row's: the chunk fails at once with ModelNotFound, as online, instead
// of dead-lettering every row as refused and completing.
func TestUnknownModelFailsTheChunk(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	cfg := config(t, s, &memStore{}, 10)
	cfg.Model = "text-embedding-4-huge"
	r, err := batchembed.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(ctx, r, 0, 20)
	if err == nil {
		res.Close()
	}
	if p, ok := worker.AsPermanent(err); !ok || p.Reason != worker.ReasonModelNotFound || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("want a permanent ModelNotFound error with the provider's message, got %v", err)
	}
}

// A record under this chunk's key that names another ingestion or chunk is refused at once.
func TestRecordOfAnotherIngestionIsPermanent(t *testing.T) {
	ctx := context.Background()
	s := startFake(t)
	store := &memStore{rec: &batchembed.Record{Version: 1, Ingestion: "uid-other", Chunk: 3}}
	if _, err := batchembed.Open(ctx, config(t, s, store, 10)); err == nil {
		t.Fatal("opened another ingestion's record")
	} else if _, ok := worker.AsPermanent(err); !ok {
		t.Fatalf("want a permanent error, got %v", err)
	}
}

// The live report: handed the record's summary when it changed, at most once per poll; polls
// that change nothing report nothing; the last report is the record's final summary.
func TestReportOnChangeOnly(t *testing.T) {
	s := startFake(t)
	s.HoldBatches(true)
	ctx := context.Background()
	cfg := config(t, s, &memStore{}, 40)
	var reports []v1alpha1.BatchStatus
	cfg.Report = func(_ context.Context, b v1alpha1.BatchStatus) { reports = append(reports, b) }
	polls := 0
	cfg.Sleep = func(ctx context.Context, _ time.Duration) error {
		if polls++; polls == 3 {
			s.HoldBatches(false) // then one step per retrieve
		}
		return ctx.Err()
	}
	r, _ := openRun(ctx, t, cfg, 0, 100)
	if len(reports) == 0 {
		t.Fatal("no report")
	}
	// Three polls while held: one report.
	if first := reports[0]; first.Batches != 3 || first.Validating != 3 || first.Lines != 100 {
		t.Errorf("first report %+v, want 3 batches validating, 100 lines", first)
	}
	if len(reports) > 1 && reports[1].Validating == 3 {
		t.Errorf("a held poll reported again: %+v", reports[:2])
	}
	for i := 1; i < len(reports); i++ {
		if reports[i] == reports[i-1] {
			t.Errorf("report %d repeats %+v", i, reports[i])
		}
	}
	if polls+1 < len(reports) {
		t.Errorf("%d reports in %d polls", len(reports), polls+1)
	}
	last, want := reports[len(reports)-1], r.Record().Summary()
	if last != want || last.Completed != 3 || last.LinesDone+last.LinesFailed != 100 {
		t.Errorf("last report %+v, want the record's final summary %+v (3 completed, 100 lines)", last, want)
	}
}
