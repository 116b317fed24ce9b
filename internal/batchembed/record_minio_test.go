package batchembed_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	openai "github.com/sashabaranov/go-openai"

	"github.com/vectordb-io/vectordb-operator/internal/batchembed"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fake "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

const recordBucket = "records"

// The record's conditional writes against the real MinIO (bin/minio, hack/tools.sh): a stale
// version and a second create are refused as ErrConflict, and nothing is overwritten.
func TestS3StoreConditionalWrites(t *testing.T) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	st := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: "cond/chunk-0003.batches.json"}
	t.Cleanup(func() { _ = st.Delete(ctx) })
	rec := batchembed.Record{Version: 1, Ingestion: "uid-1", Chunk: 3}
	v1, err := st.Save(ctx, rec, "")
	if err != nil || v1 == "" {
		t.Fatalf("first save: %q, %v", v1, err)
	}
	// A second writer that also saw no record loses (If-None-Match: *).
	if _, err := st.Save(ctx, batchembed.Record{Version: 1, Ingestion: "uid-1", Chunk: 3, Generation: 9}, ""); !errors.Is(err, batchembed.ErrConflict) {
		t.Fatalf("create over an existing record: want ErrConflict, got %v", err)
	}
	rec.Passes = []batchembed.Pass{{NextRow: 10}}
	v2, err := st.Save(ctx, rec, v1)
	if err != nil || v2 == v1 {
		t.Fatalf("save at the current version: %q, %v", v2, err)
	}
	// A writer still at v1 loses (If-Match).
	if _, err := st.Save(ctx, batchembed.Record{Version: 1, Ingestion: "uid-1", Chunk: 3, Generation: 9}, v1); !errors.Is(err, batchembed.ErrConflict) {
		t.Fatalf("save at a stale version: want ErrConflict, got %v", err)
	}
	got, v, found, err := st.Load(ctx)
	if err != nil || !found || v != v2 || got.Generation != 0 || len(got.Passes) != 1 || got.Passes[0].NextRow != 10 {
		t.Fatalf("stored %+v at %q (%v), want the v2 record at %q", got, v, err, v2)
	}
	// A record deleted under a writer: its If-Match write is a conflict too, and a reload
	// (nothing stored) writes it whole.
	if err := st.Delete(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Save(ctx, rec, v2); !errors.Is(err, batchembed.ErrConflict) {
		t.Fatalf("save over a deleted record: want ErrConflict, got %v", err)
	}
}

// hookStore wraps a Store and calls before ahead of every save (with its 1-based number); it
// counts the saves that lost to another writer.
type hookStore struct {
	batchembed.Store
	saves     atomic.Int32
	conflicts *atomic.Int32
	before    func(n int)
	after     func(n int) // after the save's write
}

func (h *hookStore) Save(ctx context.Context, rec batchembed.Record, version string) (string, error) {
	n := int(h.saves.Add(1))
	if h.before != nil {
		h.before(n)
	}
	v, err := h.Store.Save(ctx, rec, version)
	if errors.Is(err, batchembed.ErrConflict) && h.conflicts != nil {
		h.conflicts.Add(1)
	}
	if h.after != nil {
		h.after(n)
	}
	return v, err
}

func s3Config(t *testing.T, s *fake.Server, store batchembed.Store, writer string) batchembed.Config {
	cfg := config(t, s, store, 50)
	cfg.Writer = writer
	cfg.Sleep = func(ctx context.Context, _ time.Duration) error {
		select { // a short real wait: the other writer runs meanwhile
		case <-time.After(2 * time.Millisecond):
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return cfg
}

// Two pods of one chunk at once on one record in MinIO: the second starts when the first has
// made k record writes (k = 0: both at once), so the race falls on every step (the first
// upload, a claim, a creation, the end of submission). Each batch is created exactly once (the
// fake's counters), both pods collect every row, and what the loser uploaded is deleted.
func TestTwoWritersRaceOnOneRecord(t *testing.T) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	const n = 200 // 4 batches of 50
	for _, k := range []int{0, 1, 2, 3, 5, 8, 12} {
		t.Run(fmt.Sprint("second-after-", k, "-writes"), func(t *testing.T) {
			s := startFake(t)
			key := fmt.Sprintf("race/%d/chunk-0003.batches.json", k)
			base := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: key}
			t.Cleanup(func() { _ = base.Delete(ctx) })
			startB := make(chan struct{})
			var once sync.Once
			if k == 0 {
				once.Do(func() { close(startB) })
			}
			a := &hookStore{Store: base, before: func(n int) {
				if n > k {
					once.Do(func() { close(startB) })
				}
			}}
			var wg sync.WaitGroup
			results := make([]*batchembed.Results, 2)
			runners := make([]*batchembed.Runner, 2)
			errs := make([]error, 2)
			for i, store := range []batchembed.Store{a, base} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if i == 1 {
						<-startB
					}
					r, err := batchembed.Open(ctx, s3Config(t, s, store, fmt.Sprint("pod-", i)))
					if err != nil {
						errs[i] = err
						return
					}
					runners[i] = r
					results[i], errs[i] = run(ctx, r, 0, n)
				}()
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("pod %d: %v", i, err)
				}
				defer results[i].Close()
				check(t, results[i], 0, n)
			}
			st := s.BatchStats()
			if st.BatchesCreated != 4 || st.BatchesCanceled != 0 || st.LinesEmbedded+st.LinesFailed != n {
				t.Fatalf("want each of the 4 batches created once and each line run once: %+v", st)
			}
			if c := runners[0].Stats().BatchesCreated + runners[1].Stats().BatchesCreated; c != 4 {
				t.Fatalf("the pods say they created %d batches", c)
			}
			rec, _, _, err := base.Load(ctx)
			if err != nil || len(rec.Batches) != 4 {
				t.Fatalf("stored record %+v (%v)", rec, err)
			}
			for _, b := range rec.Batches {
				if b.ID == "" || b.State != "completed" {
					t.Fatalf("stored batch %+v", b)
				}
			}
			for i, r := range runners {
				if err := r.Finish(ctx); err != nil {
					t.Fatalf("pod %d finish: %v", i, err)
				}
			}
			// Inputs and outputs deleted by Finish, a loser's spare upload when it lost.
			if ids := s.FileIDs(); len(ids) != 0 {
				t.Fatalf("files left at the provider: %v", ids)
			}
		})
	}
}

// Another writer rewriting the record before every one of a pod's writes (a precondition failure
// on each, counted): each is merged and written again, never fatal, and the chunk completes with
// each batch created once.
func TestPreconditionFailureMidRunIsRetried(t *testing.T) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	s := startFake(t)
	base := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: "bump/chunk-0003.batches.json"}
	t.Cleanup(func() { _ = base.Delete(ctx) })
	bumps := 0
	var conflicts atomic.Int32
	store := &hookStore{Store: base, conflicts: &conflicts, before: func(n int) {
		if n%2 == 0 {
			return // every other call: the write tried again after the merge goes through
		}
		// Rewrite what is stored with other bytes (the same facts, another ETag: MinIO's ETag
		// is the content's MD5), as another pod's save would.
		rec, _, found, err := base.Load(ctx)
		if err != nil || !found {
			return
		}
		b, err := json.Marshal(rec)
		if err != nil {
			t.Error(err)
			return
		}
		bumps++
		b = append(b, bytes.Repeat([]byte(" "), bumps)...)
		if _, err := m.S3Client().PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(recordBucket), Key: aws.String(base.Key), Body: bytes.NewReader(b)}); err != nil {
			t.Errorf("bump: %v", err)
		}
	}}
	r, err := batchembed.Open(ctx, s3Config(t, s, store, "pod-0"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(ctx, r, 0, 200)
	if err != nil {
		t.Fatalf("after %d precondition failures: %v", bumps, err)
	}
	defer res.Close()
	check(t, res, 0, 200)
	if err := r.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.BatchStats(); bumps < 10 || conflicts.Load() < int32(bumps) || st.BatchesCreated != 4 || st.LinesEmbedded+st.LinesFailed != 200 {
		t.Fatalf("%d bumps, %d conflicts; %+v", bumps, conflicts.Load(), st)
	}
	if rec, _, _, err := base.Load(ctx); err != nil || !rec.Done || len(rec.Batches) != 4 {
		t.Fatalf("stored %+v (%v)", rec, err)
	}
}

// failCreate is an HTTP client whose POST /batches never reaches the fake: a pod that died right
// after claiming a batch.
type failCreate struct{ c *http.Client }

func (f failCreate) Do(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/batches") {
		return nil, errors.New("killed before CreateBatch")
	}
	return f.c.Do(req)
}

// A pod that claimed a batch and died before creating it: the next pod waits while the claim is
// young (it could be a live pod about to create it), then takes it over and creates the batch
// once. The clock is injected; each wait advances it by the poll interval.
func TestStaleClaimIsTakenOver(t *testing.T) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	s := startFake(t)
	base := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: "stale/chunk-0003.batches.json"}
	t.Cleanup(func() { _ = base.Delete(ctx) })
	t0 := time.Date(2026, 12, 7, 8, 0, 0, 0, time.UTC)
	now := t0
	clock := func() time.Time { return now }

	dead := s3Config(t, s, base, "pod-dead")
	oc := openai.DefaultConfig(key)
	oc.BaseURL, oc.HTTPClient = s.URL(), failCreate{c: &http.Client{}}
	dead.Client, dead.Now = openai.NewClientWithConfig(oc), clock
	r, err := batchembed.Open(ctx, dead)
	if err != nil {
		t.Fatal(err)
	}
	if err := submitRows(ctx, r, 0, 50); err == nil || !strings.Contains(err.Error(), "killed before CreateBatch") {
		t.Fatalf("want the kill, got %v", err)
	}
	rec, _, _, _ := base.Load(ctx)
	if len(rec.Batches) != 1 || rec.Batches[0].Claim != "pod-dead" || rec.Batches[0].ID != "" {
		t.Fatalf("want b0 claimed by the dead pod and not created: %+v", rec.Batches)
	}

	next := s3Config(t, s, base, "pod-next")
	next.Now, next.ClaimTimeout, next.PollInterval = clock, 5*time.Minute, 30*time.Second
	waits := 0
	next.Sleep = func(ctx context.Context, d time.Duration) error {
		waits++
		now = now.Add(d)
		return ctx.Err()
	}
	r2, err := batchembed.Open(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	// Taken over once the claim was 5 min old (10 waits of 30 s), not before.
	rec, _, _, _ = base.Load(ctx)
	if b := rec.Batches[0]; b.Claim != "pod-next" || b.ID == "" || time.Unix(b.ClaimedAt, 0).Sub(t0) != 5*time.Minute {
		t.Fatalf("after %d waits: batch %+v, want claimed by pod-next 5m after %s and created", waits, b, t0)
	}
	if st := s.BatchStats(); st.BatchesCreated != 1 || st.LinesEmbedded+st.LinesFailed != 50 {
		t.Fatalf("%+v", st)
	}
	res, err := r2.Collect(ctx, 0, 50, dims)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	check(t, res, 0, 50)
	if err := r2.Finish(ctx); err != nil {
		t.Fatal(err)
	}
}

// gateCreate is an HTTP client that holds its POST /batches until gate is closed, or tells
// reached that it got there.
type gateCreate struct {
	c       *http.Client
	gate    <-chan struct{}
	reached func()
}

func (g gateCreate) Do(req *http.Request) (*http.Response, error) {
	if req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/batches") {
		if g.reached != nil {
			g.reached()
		}
		if g.gate != nil {
			select {
			case <-g.gate:
			case <-time.After(20 * time.Second):
			}
		}
	}
	return g.c.Do(req)
}

// The race the claim exists for, made deterministic: pod B reads the record while batch b0 is
// uploaded but unclaimed; pod A then claims b0, finds no batch with its metadata, and stops just
// before CreateBatch until B has either reached CreateBatch too (B overwrote A's claim: two
// batches) or is waiting on A's claim. With conditional writes, B's write after A's claim loses,
// B merges A's claim in and waits, and adopts A's batch: one batch.
func TestClaimedBatchIsCreatedOnce(t *testing.T) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	s := startFake(t)
	base := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: "claim/chunk-0003.batches.json"}
	t.Cleanup(func() { _ = base.Delete(ctx) })
	startB, bLoaded, bThere, aClaimed := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	var bOnce sync.Once
	signalB := func() { bOnce.Do(func() { close(bThere) }) }
	a := &hookStore{Store: base, before: func(n int) {
		if n == 2 { // save 1: b0 uploaded; save 2: A's claim
			close(startB)
			<-bLoaded
		}
	}, after: func(n int) {
		if n == 2 {
			close(aClaimed)
		}
	}}
	// B's first write (the end of its submission, from the record it read before A's claim)
	// comes after A's claim.
	b := &hookStore{Store: base, before: func(n int) {
		if n == 1 {
			<-aClaimed
		}
	}}
	cfgA := s3Config(t, s, a, "pod-a")
	cfgA.Client = fakeClient(s, gateCreate{c: &http.Client{}, gate: bThere})
	cfgB := s3Config(t, s, b, "pod-b")
	cfgB.Client = fakeClient(s, gateCreate{c: &http.Client{}, reached: signalB})
	sleepB := cfgB.Sleep
	cfgB.Sleep = func(ctx context.Context, d time.Duration) error { signalB(); return sleepB(ctx, d) }

	runners := runTwoPods(ctx, t, s, cfgA, cfgB, startB, func() { close(bLoaded) })
	// A created it; B, which lost the claim, adopted it.
	if a, b := runners[0].Stats(), runners[1].Stats(); a.BatchesCreated != 1 || b.BatchesCreated != 0 {
		t.Fatalf("pod A created %d batches, pod B %d; want 1 and 0", a.BatchesCreated, b.BatchesCreated)
	}
	rec, _, _, err := base.Load(ctx)
	if err != nil || len(rec.Batches) != 1 || rec.Batches[0].Claim != "pod-a" || rec.Batches[0].State != "completed" {
		t.Fatalf("stored %+v (%v)", rec, err)
	}
}

// stripConditions is an S3 client option that drops If-Match and If-None-Match from every
// request before it is signed: the real MinIO then sees plain PUTs, as a store that ignores
// conditional writes would.
func stripConditions(o *s3.Options) {
	o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
		return st.Build.Add(middleware.BuildMiddlewareFunc("stripConditions", func(ctx context.Context, in middleware.BuildInput, next middleware.BuildHandler) (middleware.BuildOutput, middleware.Metadata, error) {
			if req, ok := in.Request.(*smithyhttp.Request); ok {
				req.Header.Del("If-Match")
				req.Header.Del("If-None-Match")
			}
			return next.HandleBuild(ctx, in)
		}), middleware.After)
	})
}

// A store that ignores conditional writes is found out when the record is first written, as a
// permanent error naming the cause, instead of letting two pods overwrite each other silently.
// The same store with the conditions honoured passes.
func TestS3StoreThatIgnoresConditionsIsRefused(t *testing.T) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	rec := batchembed.Record{Version: 1, Ingestion: "uid-1", Chunk: 3}

	honours := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: "probe/ok.batches.json"}
	t.Cleanup(func() { _ = honours.Delete(ctx) })
	v, err := honours.Save(ctx, rec, "")
	if err != nil || v == "" {
		t.Fatalf("a store that honours conditions: %q, %v", v, err)
	}
	if _, v2, found, err := honours.Load(ctx); err != nil || !found || v2 != v {
		t.Fatalf("after the probe the record is at %q (found %t, %v), want the version Save returned, %q", v2, found, err, v)
	}

	ignores := batchembed.S3Store{Client: s3.New(m.S3Client().Options(), stripConditions), Bucket: recordBucket, Key: "probe/ignored.batches.json"}
	t.Cleanup(func() { _ = ignores.Delete(ctx) })
	_, err = ignores.Save(ctx, rec, "")
	var perm *worker.PermanentError
	if !errors.As(err, &perm) || !strings.Contains(err.Error(), "ignores S3 conditional writes") {
		t.Fatalf("a store that ignores conditions: want a permanent error naming it, got %v", err)
	}
}

// Clock skew between pods: pod B's clock runs 10 minutes ahead of pod A's, which has claimed b0
// and is about to create it. A claim's age is what B itself has seen of it, not B's clock minus
// A's timestamp, so B waits for A's batch instead of taking the live claim over and creating a
// second batch (which one of them would then have to cancel, paying for what it ran).
func TestClaimAgeIsNotTakenFromTheClaimantsClock(t *testing.T) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	s := startFake(t)
	base := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: "skew/chunk-0003.batches.json"}
	t.Cleanup(func() { _ = base.Delete(ctx) })
	aClaimed, bThere := make(chan struct{}), make(chan struct{})
	var bOnce sync.Once
	signalB := func() { bOnce.Do(func() { close(bThere) }) }
	a := &hookStore{Store: base, after: func(n int) {
		if n == 2 { // save 1: b0 uploaded; save 2: A's claim
			close(aClaimed)
		}
	}}
	cfgA := s3Config(t, s, a, "pod-a")
	// A stops just before CreateBatch until B has decided: reached CreateBatch, or waits.
	cfgA.Client = fakeClient(s, gateCreate{c: &http.Client{}, gate: bThere})
	cfgB := s3Config(t, s, base, "pod-b")
	cfgB.Client = fakeClient(s, gateCreate{c: &http.Client{}, reached: signalB})
	cfgB.Now = func() time.Time { return time.Now().Add(10 * time.Minute) }
	sleepB := cfgB.Sleep
	cfgB.Sleep = func(ctx context.Context, d time.Duration) error { signalB(); return sleepB(ctx, d) }

	runners := runTwoPods(ctx, t, s, cfgA, cfgB, aClaimed, nil)
	if a, b := runners[0].Stats(), runners[1].Stats(); a.BatchesCreated != 1 || b.BatchesCreated != 0 {
		t.Fatalf("pod A created %d batches, pod B (clock 10 min ahead) %d; want 1 and 0", a.BatchesCreated, b.BatchesCreated)
	}
}

// A pod paused between writing its claim and creating the batch (a long GC pause, a frozen
// node) for longer than half the claim timeout may already have lost its claim to another pod:
// its creation deadline runs from the claim's write, not from when it resumes, so it creates
// nothing and fails retryably (the Job's next pod adopts whatever batch the record names).
func TestPausedClaimantDoesNotCreateAfterItsDeadline(t *testing.T) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	s := startFake(t)
	base := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: "pause/chunk-0003.batches.json"}
	t.Cleanup(func() { _ = base.Delete(ctx) })
	const claimTimeout = 400 * time.Millisecond
	paused := &hookStore{Store: base, after: func(n int) {
		if n == 2 { // save 2 is the claim: the pod freezes right after it is stored
			time.Sleep(claimTimeout/2 + 100*time.Millisecond)
		}
	}}
	cfg := s3Config(t, s, paused, "pod-paused")
	cfg.ClaimTimeout = claimTimeout
	r, err := batchembed.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	err = submitRows(ctx, r, 0, 50)
	if !errors.Is(err, context.DeadlineExceeded) || batchembed.IsPermanent(err) {
		t.Fatalf("want the creation refused for its passed deadline (retryable), got %v", err)
	}
	if st := s.BatchStats(); st.BatchesCreated != 0 {
		t.Fatalf("the paused pod created a batch after its claim could be taken over: %+v", st)
	}
	rec, _, _, _ := base.Load(ctx)
	if len(rec.Batches) != 1 || rec.Batches[0].Claim != "pod-paused" || rec.Batches[0].ID != "" {
		t.Fatalf("want b0 claimed and not created: %+v", rec.Batches)
	}
}

// Two pods of one chunk at the collect step: pod A collects, upserts and finishes (deleting the
// chunk's files at OpenAI, record done) while pod B, which read the record before, is about to
// collect. B's reads of the deleted files are answered 404; that is A's finish, not a broken
// record, so B steps back (retryable) instead of failing the chunk permanently, which would fail
// the Job through its podFailurePolicy although A succeeded.
func TestCollectAfterAnotherPodFinishedStepsBack(t *testing.T) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	s := startFake(t)
	base := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: "collect/chunk-0003.batches.json"}
	t.Cleanup(func() { _ = base.Delete(ctx) })
	a, err := batchembed.Open(ctx, s3Config(t, s, base, "pod-a"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(ctx, a, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	check(t, res, 0, 100)
	res.Close()
	b, err := batchembed.Open(ctx, s3Config(t, s, base, "pod-b")) // reads the record before A finishes
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	if again, err := b.Wait(ctx); err != nil || again {
		t.Fatalf("pod B's wait: %t, %v", again, err)
	}
	_, err = b.Collect(ctx, 0, 100, dims)
	if !errors.Is(err, batchembed.ErrSteppedBack) || batchembed.IsPermanent(err) {
		t.Fatalf("pod B collecting files pod A deleted: want ErrSteppedBack (retryable), got %v", err)
	}
	if st := s.BatchStats(); st.BatchesCreated != 2 {
		t.Fatalf("want the 2 batches created once: %+v", st)
	}
}

// hookDoer calls before ahead of, and after behind, every request it sends.
type hookDoer struct {
	c             *http.Client
	before, after func(*http.Request)
}

func (h hookDoer) Do(req *http.Request) (*http.Response, error) {
	if h.before != nil {
		h.before(req)
	}
	resp, err := h.c.Do(req)
	if h.after != nil {
		h.after(req)
	}
	return resp, err
}

// Two pods at the cancel step: the ingestion is cancelled while a chunk pod (still running on a
// partitioned node) has claimed batch b0 and is creating it. The cleanup pod finds no batch to
// cancel, deletes the files and marks the record done; the chunk pod's batch is created just
// before that, and its record write then loses to the finished record. The chunk pod steps back,
// and cancels the batch it created, which nobody else knows of: left alone it would run and be
// billed for up to 24 hours.
func TestBatchCreatedWhileTheCleanupFinishedIsCancelled(t *testing.T) {
	// chunkFirst: the chunk pod's record of its batch is stored before the cleanup's finished
	// record, which then merges it in (as an open batch of a done record) and must cancel it;
	// otherwise the chunk pod's write loses to the finished record and it cancels its own.
	for _, chunkFirst := range []bool{false, true} {
		t.Run(fmt.Sprint("chunk-pod-records-first-", chunkFirst), func(t *testing.T) { cleanupRace(t, chunkFirst) })
	}
}

func cleanupRace(t *testing.T, chunkFirst bool) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	s := startFake(t)
	base := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: "cancel/chunk-0003.batches.json"}
	t.Cleanup(func() { _ = base.Delete(ctx) })
	claimed, cAtDelete, bCreated, cDone, bSaved := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	var atDelete sync.Once
	isCreate := func(req *http.Request) bool {
		return req.Method == http.MethodPost && strings.HasSuffix(req.URL.Path, "/batches")
	}
	chunkStore := &hookStore{Store: base,
		before: func(n int) {
			if n == 3 && !chunkFirst { // the batch's record, after CreateBatch: once the cleanup finished
				<-cDone
			}
		},
		after: func(n int) {
			if n == 2 { // save 1: b0 uploaded; save 2: the claim
				close(claimed)
			}
			if n == 3 {
				close(bSaved)
			}
		}}
	cfgB := s3Config(t, s, chunkStore, "pod-chunk")
	cfgB.Client = fakeClient(s, hookDoer{c: &http.Client{},
		before: func(req *http.Request) {
			if isCreate(req) {
				<-cAtDelete
			}
		},
		after: func(req *http.Request) {
			if isCreate(req) {
				close(bCreated)
			}
		}})
	cleanupStore := &hookStore{Store: base, before: func(n int) {
		if n == 2 && chunkFirst { // save 1: Cancel's; save 2: Finish's done record
			<-bSaved
		}
	}}
	cfgC := s3Config(t, s, cleanupStore, "pod-cleanup")
	cfgC.Client = fakeClient(s, hookDoer{c: &http.Client{}, before: func(req *http.Request) {
		if req.Method == http.MethodDelete && strings.Contains(req.URL.Path, "/files/") {
			atDelete.Do(func() { close(cAtDelete); <-bCreated })
		}
	}})

	var wg sync.WaitGroup
	var errB, errC error
	wg.Add(2)
	go func() {
		defer wg.Done()
		r, err := batchembed.Open(ctx, cfgB)
		if err == nil {
			err = submitRows(ctx, r, 0, 50)
		}
		errB = err
	}()
	go func() {
		defer wg.Done()
		defer close(cDone)
		<-claimed
		r, err := batchembed.Open(ctx, cfgC)
		if err == nil {
			err = r.Abandon(ctx)
		}
		errC = err
	}()
	wg.Wait()
	if errC != nil {
		t.Fatalf("cleanup: %v", errC)
	}
	if !chunkFirst && !errors.Is(errB, batchembed.ErrSteppedBack) {
		t.Fatalf("chunk pod: want ErrSteppedBack, got %v", errB)
	}
	if chunkFirst && errB != nil && !errors.Is(errB, batchembed.ErrSteppedBack) {
		t.Fatalf("chunk pod: %v", errB)
	}
	st := s.BatchStats()
	if st.BatchesCreated != 1 || st.BatchesCanceled != 1 {
		t.Fatalf("want the chunk pod's batch created once and cancelled: %+v", st)
	}
}

// A record deleted under a chunk (by a user, or a lifecycle rule on the dead-letter bucket)
// after a run whose batches still exist at OpenAI: the next run starts at generation 0 again, so
// its batch keys equal the old run's. The lookup by metadata (meant for a batch created by a pod
// killed before recording it) must not adopt the old run's batch, made from another input file:
// its vectors are of the old texts.
func TestOldRunsBatchWithTheSameKeyIsNotAdopted(t *testing.T) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	s := startFake(t)
	base := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: "stale-key/chunk-0003.batches.json"}
	t.Cleanup(func() { _ = base.Delete(ctx) })
	old, err := batchembed.Open(ctx, s3Config(t, s, base, "pod-old"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(ctx, old, 0, 50) // killed after collecting: its files are still at OpenAI
	if err != nil {
		t.Fatal(err)
	}
	res.Close()
	if err := base.Delete(ctx); err != nil {
		t.Fatal(err)
	}

	r, err := batchembed.Open(ctx, s3Config(t, s, base, "pod-new"))
	if err != nil {
		t.Fatal(err)
	}
	text := func(row int64) string { return fmt.Sprintf("the new text of row %d", row) }
	sub := r.Submitter(0)
	for row := range int64(50) {
		if err := sub.Add(ctx, row, text(row), 5); err != nil {
			t.Fatal(err)
		}
	}
	if err := sub.Close(ctx, 50); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	res, err = r.Collect(ctx, 0, 50, dims)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	for row := range int64(50) {
		vec, rowErr, err := res.Lookup(row, nil)
		if err != nil || rowErr != nil {
			t.Fatalf("row %d: %v %+v", row, err, rowErr)
		}
		if want := fake.Vector(text(row), dims); vec[0] != want[0] {
			t.Fatalf("row %d has a vector of another text (the old run's batch was adopted)", row)
		}
	}
	if st := s.BatchStats(); st.BatchesCreated != 2 {
		t.Fatalf("want one batch per run: %+v", st)
	}
}

// A pod that uploads a batch file just as another pod of the chunk finished it: its write of
// the upload loses to the finished record and it steps back; the file it uploaded, which no
// record holds, is deleted at OpenAI rather than left in the organisation's file storage.
func TestUploadAfterAnotherPodFinishedIsDeleted(t *testing.T) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	s := startFake(t)
	base := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: "orphan/chunk-0003.batches.json"}
	t.Cleanup(func() { _ = base.Delete(ctx) })
	late, err := batchembed.Open(ctx, s3Config(t, s, base, "pod-late")) // reads no record
	if err != nil {
		t.Fatal(err)
	}
	a, err := batchembed.Open(ctx, s3Config(t, s, base, "pod-a"))
	if err != nil {
		t.Fatal(err)
	}
	res, err := run(ctx, a, 0, 50)
	if err != nil {
		t.Fatal(err)
	}
	res.Close()
	if err := a.Finish(ctx); err != nil {
		t.Fatal(err)
	}
	before := s.BatchStats()
	if err := submitRows(ctx, late, 0, 50); !errors.Is(err, batchembed.ErrSteppedBack) {
		t.Fatalf("want ErrSteppedBack, got %v", err)
	}
	st := s.BatchStats()
	if st.FilesUploaded != before.FilesUploaded+1 || st.FilesDeleted != before.FilesDeleted+1 || st.BatchesCreated != before.BatchesCreated {
		t.Fatalf("want the late pod's one upload deleted and no batch created: before %+v, after %+v", before, st)
	}
}

// failSave is a Store whose save number n fails (the pod is killed just before that write).
type failSave struct {
	batchembed.Store
	n, saves int
}

func (f *failSave) Save(ctx context.Context, rec batchembed.Record, version string) (string, error) {
	if f.saves++; f.saves == f.n {
		return "", errors.New("killed before recording the batch")
	}
	return f.Store.Save(ctx, rec, version)
}

// A pod killed after creating its batch and before recording it, in a busy organisation: over a
// thousand other batches were created before its replacement looks. The lookup by metadata pages
// back to the batch's input file's creation (OpenAI's clock), not a fixed thousand batches, so
// the batch is adopted instead of created a second time (and both billed).
func TestKilledPodsBatchIsFoundBehindManyOthers(t *testing.T) {
	ctx := context.Background()
	m := harness.StartMinIO(t, recordBucket)
	s := startFake(t)
	base := batchembed.S3Store{Client: m.S3Client(), Bucket: recordBucket, Key: "busy/chunk-0003.batches.json"}
	t.Cleanup(func() { _ = base.Delete(ctx) })
	dead := s3Config(t, s, &failSave{Store: base, n: 3}, "pod-dead") // save 1: upload; 2: claim; 3: the batch
	r, err := batchembed.Open(ctx, dead)
	if err != nil {
		t.Fatal(err)
	}
	if err := submitRows(ctx, r, 0, 50); err == nil || !strings.Contains(err.Error(), "killed before recording") {
		t.Fatalf("want the kill, got %v", err)
	}
	// 1,050 other batches in the organisation (another team's), newer than the dead pod's.
	oc := openai.DefaultConfig(key)
	oc.BaseURL = s.URL()
	other := openai.NewClientWithConfig(oc)
	f, err := other.CreateFileBytes(ctx, openai.FileBytesRequest{Name: "other.jsonl", Purpose: openai.PurposeBatch,
		Bytes: []byte(`{"custom_id":"x","method":"POST","url":"/v1/embeddings","body":{"model":"` + model + `","input":["other"]}}` + "\n")})
	if err != nil {
		t.Fatal(err)
	}
	for range 1050 {
		if _, err := other.CreateBatch(ctx, openai.CreateBatchRequest{InputFileID: f.ID, Endpoint: openai.BatchEndpointEmbeddings, CompletionWindow: "24h"}); err != nil {
			t.Fatal(err)
		}
	}
	next := s3Config(t, s, base, "pod-next")
	next.ClaimTimeout = 2 * time.Second // a missed batch is then created at once, not after 5 min
	r2, err := batchembed.Open(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r2.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if st := r2.Stats(); st.BatchesAdopted != 1 || st.BatchesCreated != 0 {
		t.Fatalf("the replacement pod adopted %d and created %d batches; want 1 and 0", st.BatchesAdopted, st.BatchesCreated)
	}
	res, err := r2.Collect(ctx, 0, 50, dims)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Close()
	check(t, res, 0, 50)
}

// fakeClient is an OpenAI client of the fake s sending through d.
func fakeClient(s *fake.Server, d openai.HTTPDoer) *openai.Client {
	oc := openai.DefaultConfig(key)
	oc.BaseURL, oc.HTTPClient = s.URL(), d
	return openai.NewClientWithConfig(oc)
}

// runTwoPods runs the same 50 lines as pod A (cfgA) and pod B (cfgB) at once, B opening its
// runner once waitB is closed (bOpened, when set, is called right after it opened), and checks
// that each got every line and the fake created one batch and ran each line once. It returns the
// two runners, A's first.
func runTwoPods(ctx context.Context, t *testing.T, s *fake.Server, cfgA, cfgB batchembed.Config,
	waitB <-chan struct{}, bOpened func()) []*batchembed.Runner {
	t.Helper()
	var wg sync.WaitGroup
	errs := make([]error, 2)
	results := make([]*batchembed.Results, 2)
	runners := make([]*batchembed.Runner, 2)
	for i, cfg := range []batchembed.Config{cfgA, cfgB} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if i == 1 {
				<-waitB
			}
			r, err := batchembed.Open(ctx, cfg)
			if i == 1 && bOpened != nil {
				bOpened()
			}
			if err != nil {
				errs[i] = err
				return
			}
			runners[i] = r
			results[i], errs[i] = run(ctx, r, 0, 50)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("pod %d: %v", i, err)
		}
		t.Cleanup(func() { results[i].Close() })
		check(t, results[i], 0, 50)
	}
	if st := s.BatchStats(); st.BatchesCreated != 1 || st.LinesEmbedded+st.LinesFailed != 50 {
		t.Fatalf("want one batch, each line run once: %+v", st)
	}
	return runners
}
