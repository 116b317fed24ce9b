package e2e

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/webui"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// The web UI in headless Chromium against the whole stack (the manager binary serves it): the
// list shows exactly the ingestions the API server has; a running ingestion's progress bar moves
// with no reload; a failed chunk shows its reason; cancel is refused to the read-only key and
// done with the read-write key, which the ingestion's events record by the key's name.
func TestWebUI(t *testing.T) {
	skipShort(t)
	browser := newBrowser(t)
	ctx := context.Background()
	base := "http://" + st.HTTPAddr

	// A run slow enough to watch (a budget of 4 requests a second, 25 rows each), one that fails
	// (a wrong OpenAI key), and one to cancel (slower still).
	_, runKey := scenario(t, "webui-run", csvgen.Options{Rows: 3000, Seed: 71})
	runObj := st.LegacyIngestion("webui-run", "q239", runKey)
	runObj.Spec.Chunking.RowsPerChunk, runObj.Spec.Chunking.Parallelism = 150, 2
	runObj.Spec.Embedding.RequestsPerMinute, runObj.Spec.Embedding.MaxInputsPerRequest = 240, 25
	apply(t, runObj)

	_, badKey := scenario(t, "webui-bad", csvgen.Options{Rows: 600, Seed: 72})
	bad := &corev1.Secret{}
	if err := st.Cluster.Client.Get(ctx, client.ObjectKey{Namespace: "webui-bad", Name: "openai"}, bad); err != nil {
		t.Fatal(err)
	}
	bad.Data = map[string][]byte{"api-key": []byte("sk-wrong-webui")}
	if err := st.Cluster.Client.Update(ctx, bad); err != nil {
		t.Fatal(err)
	}
	badObj := st.LegacyIngestion("webui-bad", "q239", badKey)
	badObj.Spec.Chunking.RowsPerChunk = 200
	apply(t, badObj)

	_, cancelKey := scenario(t, "webui-cancel", csvgen.Options{Rows: 3000, Seed: 73})
	cancelObj := st.LegacyIngestion("webui-cancel", "q239", cancelKey)
	cancelObj.Spec.Chunking.RowsPerChunk, cancelObj.Spec.Chunking.Parallelism = 300, 1
	cancelObj.Spec.Embedding.RequestsPerMinute, cancelObj.Spec.Embedding.MaxInputsPerRequest = 60, 10
	apply(t, cancelObj)

	// --- the list, signed in with the read-only key ---
	signIn(t, browser, base, stack.ReadAPIKey)
	waitJS(t, browser, "the read-only key named", `document.getElementById('who').textContent.includes('read-only')`, 10*time.Second)
	// Exactly the rows the API server has (other scenarios' ingestions included).
	waitFor(t, "the list's rows match the API server", 60*time.Second, func() (bool, string) {
		var all v1alpha1.CsvIngestionList
		if err := st.Cluster.Client.List(ctx, &all); err != nil {
			return false, err.Error()
		}
		want := make([]string, 0, len(all.Items))
		for _, o := range all.Items {
			want = append(want, o.Namespace+"/"+o.Name)
		}
		sort.Strings(want)
		got := eval[[]string](t, browser, `[...document.querySelectorAll('#list-body tr')].map(tr => tr.dataset.key).sort()`)
		return fmt.Sprint(got) == fmt.Sprint(want), fmt.Sprintf("page %v, API server %v", got, want)
	})
	runRow := "webui-run/q239"
	if got := eval[string](t, browser, rowJS(runRow, `tr.cells[10].textContent`)); got != get(t, runObj).Status.TaskID && get(t, runObj).Status.TaskID != "" {
		t.Errorf("task id cell %q, want %q", got, get(t, runObj).Status.TaskID)
	}

	// The progress bar advances while the page stays the same document: a marker set now
	// survives, so nothing reloaded it.
	run(t, browser, "mark the page", chromedp.Evaluate[chromedp.Void](`window.__sameDocument = 'yes'; null`))
	progressJS := rowJS(runRow, `Number(tr.querySelector('[role=progressbar]').getAttribute('aria-valuenow'))`)
	waitJS(t, browser, "the run under way", progressJS+` > 0`, 3*time.Minute)
	first := eval[float64](t, browser, progressJS)
	screenshot(t, browser, "webui-list")
	waitJS(t, browser, fmt.Sprintf("progress past %.1f%%", first), fmt.Sprintf(`%s > %f`, progressJS, first), 3*time.Minute)
	if eval[string](t, browser, `String(window.__sameDocument)`) != "yes" {
		t.Fatal("the page was reloaded")
	}
	t.Logf("progress bar moved from %.1f%% to %.1f%% without a reload", first, eval[float64](t, browser, progressJS))

	// Narrow screen: the table becomes cards and nothing overflows sideways.
	run(t, browser, "narrow viewport", chromedp.EmulateViewport(390, 844))
	waitJS(t, browser, "no sideways overflow at 390px", `document.documentElement.scrollWidth <= window.innerWidth + 1`, 10*time.Second)
	screenshot(t, browser, "webui-list-narrow")
	run(t, browser, "wide viewport", chromedp.EmulateViewport(1280, 900))

	// --- a page per ingestion, opened by keyboard ---
	run(t, browser, "focus the run's link", chromedp.Evaluate[chromedp.Void](
		rowJS(runRow, `(tr.querySelector('a').focus(), null)`)))
	run(t, browser, "open it with Enter", chromedp.KeyEvent(kb.Enter))
	waitJS(t, browser, "the run's page", `location.hash === '#/i/webui-run/q239' && document.getElementById('grid').childElementCount > 0`, 30*time.Second)
	if n, want := eval[int](t, browser, `document.getElementById('grid').childElementCount`), int(get(t, runObj).Status.Chunks.Total); n != want {
		t.Errorf("chunk grid of %d cells, want %d", n, want)
	}
	waitJS(t, browser, "completed chunks in the grid", `document.querySelectorAll('#grid i.c').length > 0`, 2*time.Minute)
	screenshot(t, browser, "webui-detail")

	// A failed chunk shows its reason and its dead-letter object.
	run(t, browser, "open the failed run", chromedp.Evaluate[chromedp.Void](`location.hash = '#/i/webui-bad/q239'; null`))
	waitJS(t, browser, "a failed chunk with its reason", `[...document.querySelectorAll('#failed-body tr')].some(tr => tr.cells[2].textContent === 'Unauthorized')`, 2*time.Minute)
	failedRow := eval[string](t, browser, `document.querySelector('#failed-body tr').innerText`)
	if !strings.Contains(failedRow, "s3://"+stack.Bucket+"/failed/") || strings.Contains(failedRow, "sk-wrong-webui") {
		t.Errorf("failed chunk row %q: want the dead-letter object and no key", failedRow)
	}
	waitJS(t, browser, "failed cells in the grid", `document.querySelectorAll('#grid i.f').length > 0`, 30*time.Second)
	screenshot(t, browser, "webui-detail-failed")

	// A malformed address (a bad %-escape, as a truncated link has) shows the list and says so,
	// never a blank page.
	run(t, browser, "a malformed hash", chromedp.Evaluate[chromedp.Void](`location.hash = '#/i/%E0%A4%A/x'; null`))
	waitJS(t, browser, "the list and a notice", `!document.getElementById('list').hidden && document.getElementById('notice').textContent.includes('Unknown address')`, 20*time.Second)

	// --- cancel: refused to the read-only key ---
	run(t, browser, "open the run to cancel", chromedp.Evaluate[chromedp.Void](`location.hash = '#/i/webui-cancel/q239'; null`))
	waitJS(t, browser, "the cancel button enabled", `!document.getElementById('act-cancel').disabled && document.getElementById('detail-title').textContent === 'webui-cancel/q239'`, 2*time.Minute)
	run(t, browser, "cancel with the read-only key", chromedp.Click(chromedp.CSS("#act-cancel")), chromedp.WaitVisible(chromedp.CSS("#confirm-yes")), chromedp.Click(chromedp.CSS("#confirm-yes")))
	waitJS(t, browser, "the refusal", `document.getElementById('action-result').textContent.includes('403') && document.getElementById('action-result').textContent.includes('read-only')`, 20*time.Second)
	t.Logf("read-only key: %s", eval[string](t, browser, `document.getElementById('action-result').textContent`))
	screenshot(t, browser, "webui-cancel-refused")
	if c := get(t, cancelObj); c.Spec.Cancel || c.Status.Phase == v1alpha1.PhaseCancelled {
		t.Fatalf("the read-only key cancelled it: cancel %v, phase %s", c.Spec.Cancel, c.Status.Phase)
	}

	// --- and done with the read-write key ---
	signOut(t, browser)
	signIn(t, browser, base, stack.APIKey)
	run(t, browser, "open the run to cancel", chromedp.Evaluate[chromedp.Void](`location.hash = '#/i/webui-cancel/q239'; null`))
	// On a freshly loaded page no action is offered before the ingestion's state has arrived.
	if !eval[bool](t, browser, `document.getElementById('act-cancel').disabled || document.getElementById('d-phase').textContent !== ''`) {
		t.Error("the cancel button was enabled before the ingestion's state was shown")
	}
	waitJS(t, browser, "the cancel button enabled", `!document.getElementById('act-cancel').disabled && document.getElementById('detail-title').textContent === 'webui-cancel/q239'`, 30*time.Second)
	run(t, browser, "cancel with the read-write key", chromedp.Click(chromedp.CSS("#act-cancel")), chromedp.WaitVisible(chromedp.CSS("#confirm-yes")), chromedp.Click(chromedp.CSS("#confirm-yes")))
	final := waitTerminal(t, cancelObj, 2*time.Minute)
	if final.Status.Phase != v1alpha1.PhaseCancelled || !final.Spec.Cancel {
		t.Fatalf("after cancel: phase %s, spec.cancel %v", final.Status.Phase, final.Spec.Cancel)
	}
	waitJS(t, browser, "the page shows Cancelled", `document.getElementById('d-phase').textContent === 'Cancelled'`, 30*time.Second)
	waitEvents(t, final, webui.ReasonCancelRequested)
	waitJS(t, browser, "the action in the page's events", `[...document.querySelectorAll('#events-body tr')].some(tr => tr.innerText.includes('CancelRequested') && tr.innerText.includes('api-keys:1'))`, 30*time.Second)
	screenshot(t, browser, "webui-cancelled")

	// The run itself finishes (nothing the UI did disturbed it), at full speed now that the checks
	// that needed it slow are done.
	speedUp(t, runObj)
	if done := waitTerminal(t, runObj, 5*time.Minute); done.Status.Phase != v1alpha1.PhaseCompleted {
		t.Errorf("the watched run ended %s: %s", done.Status.Phase, done.Status.Message)
	}
}

// speedUp lifts a deliberately throttled run's budget and parallelism once the checks that needed
// it slow are done, so the test does not wait out the throttle: chunk Jobs created from now on get
// the new budget (the running ones keep the share they were created with).
func speedUp(t *testing.T, obj *v1alpha1.CsvIngestion) {
	t.Helper()
	update(t, obj, func(o *v1alpha1.CsvIngestion) {
		o.Spec.Embedding.RequestsPerMinute = 100000
		o.Spec.Embedding.TokensPerMinute = 1000000000
		o.Spec.Embedding.MaxInputsPerRequest = 2048
		o.Spec.Chunking.Parallelism = 4
	})
}
