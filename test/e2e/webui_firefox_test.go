package e2e

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/webui"
	"github.com/vectordb-io/vectordb-operator/test/bidi"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
	"github.com/vectordb-io/vectordb-operator/test/stack"
)

// The web UI in Firefox (Debian's firefox-esr, driven over WebDriver BiDi) against the whole
// stack, as TestWebUI does in Chromium: sign-in by keyboard; the list's progress bar advances
// with no reload (the live stream works in Firefox); the run's page opened by keyboard shows
// its chunk grid; suspend and resume by mouse reach the API server and the events; the narrow
// layout has no sideways overflow. Screenshots of each page go under the test's output.
func TestWebUIFirefox(t *testing.T) {
	skipShort(t)
	ff := newFirefox(t)
	base := "http://" + st.HTTPAddr

	// Slow enough to watch and to act on before it ends: 2,400 rows of 20 per request at 2
	// requests a second take at least a minute.
	_, key := scenario(t, "webui-ff", csvgen.Options{Rows: 2400, Seed: 74})
	obj := st.LegacyIngestion("webui-ff", "q239", key)
	obj.Spec.Chunking.RowsPerChunk, obj.Spec.Chunking.Parallelism = 200, 1
	obj.Spec.Embedding.RequestsPerMinute, obj.Spec.Embedding.MaxInputsPerRequest = 120, 20
	apply(t, obj)
	row := "webui-ff/q239"

	// --- sign in by keyboard: the key field has the focus, Enter submits ---
	ffDo(t, "open the UI", func(ctx context.Context) error { return ff.Navigate(ctx, base+"/ui/") })
	ffWait(t, ff, "focus on the key field", `document.activeElement && document.activeElement.id === 'key'`, 20*time.Second)
	ffDo(t, "type the key and Enter", func(ctx context.Context) error { return ff.Type(ctx, stack.APIKey+bidi.Enter) })
	ffWait(t, ff, "signed in with the read-write key", `document.getElementById('who').textContent.includes('read-write')`, 20*time.Second)

	// --- the list, live ---
	ffWait(t, ff, "the run's row", rowJS(row, `true`)+` === true`, 60*time.Second)
	ffEval[any](t, ff, `window.__sameDocument = 'yes'`)
	progressJS := rowJS(row, `Number(tr.querySelector('[role=progressbar]').getAttribute('aria-valuenow'))`)
	ffWait(t, ff, "the run under way", progressJS+` > 0`, 3*time.Minute)
	first := ffEval[float64](t, ff, progressJS)
	ffWait(t, ff, fmt.Sprintf("progress past %.1f%%", first), fmt.Sprintf(`%s > %f`, progressJS, first), 3*time.Minute)
	if ffEval[string](t, ff, `String(window.__sameDocument)`) != "yes" {
		t.Fatal("the page was reloaded")
	}
	t.Logf("Firefox: progress bar moved from %.1f%% to %.1f%% without a reload", first, ffEval[float64](t, ff, progressJS))
	ffScreenshot(t, ff, "webui-firefox-list")

	// --- the run's page, opened by keyboard ---
	ffEval[any](t, ff, rowJS(row, `(tr.querySelector('a').focus(), null)`))
	ffDo(t, "open it with Enter", func(ctx context.Context) error { return ff.Type(ctx, bidi.Enter) })
	ffWait(t, ff, "the run's page with its grid", `location.hash === '#/i/webui-ff/q239' && document.getElementById('grid').childElementCount > 0`, 30*time.Second)
	if n, want := ffEval[int](t, ff, `document.getElementById('grid').childElementCount`), int(get(t, obj).Status.Chunks.Total); n != want {
		t.Errorf("chunk grid of %d cells, want %d", n, want)
	}
	ffWait(t, ff, "completed chunks in the grid", `document.querySelectorAll('#grid i.c').length > 0`, 2*time.Minute)
	ffScreenshot(t, ff, "webui-firefox-detail")

	// --- suspend and resume by mouse ---
	ffWait(t, ff, "suspend offered", `!document.getElementById('act-suspend').disabled`, 30*time.Second)
	ffDo(t, "click Suspend", func(ctx context.Context) error { return ff.Click(ctx, "#act-suspend") })
	waitFor(t, "spec.suspend set", 30*time.Second, func() (bool, string) {
		return get(t, obj).Spec.Suspend, "not suspended"
	})
	ffWait(t, ff, "the page shows it suspended", `document.getElementById('d-phase').textContent.includes('(suspended)') && !document.getElementById('act-resume').disabled`, 30*time.Second)
	ffDo(t, "click Resume", func(ctx context.Context) error { return ff.Click(ctx, "#act-resume") })
	waitFor(t, "spec.suspend unset", 30*time.Second, func() (bool, string) {
		return !get(t, obj).Spec.Suspend, "still suspended"
	})
	waitEvents(t, get(t, obj), webui.ReasonSuspendRequested, webui.ReasonResumeRequested)

	// --- narrow screen ---
	ffDo(t, "narrow viewport", func(ctx context.Context) error { return ff.SetViewport(ctx, 390, 844) })
	ffWait(t, ff, "no sideways overflow at 390px", `document.documentElement.scrollWidth <= window.innerWidth + 1`, 10*time.Second)
	ffScreenshot(t, ff, "webui-firefox-detail-narrow")

	// The checks that needed a slow run are done: the rest of it runs at full speed.
	speedUp(t, obj)
	if done := waitTerminal(t, obj, 5*time.Minute); done.Status.Phase != v1alpha1.PhaseCompleted {
		t.Errorf("the run ended %s: %s", done.Status.Phase, done.Status.Message)
	}
	ffWait(t, ff, "the page shows Completed", `document.getElementById('d-phase').textContent === 'Completed'`, 30*time.Second)
}

// newFirefox starts headless Firefox for the test. Missing, it fails the test in CI (.ci/run
// installs Debian's firefox-esr) and skips it, saying why, elsewhere.
func newFirefox(t *testing.T) *bidi.Browser {
	t.Helper()
	path, err := bidi.FindFirefox()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v: .ci/run installs it; the web UI must work in Firefox too", err)
		}
		t.Skipf("SKIP: %v; install it to run the web UI's Firefox test (in CI this fails)", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := bidi.Start(ctx, path, t.TempDir())
	if err != nil {
		t.Fatalf("start firefox: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	if ua, err := b.Version(ctx); err == nil {
		t.Logf("browser: %s", ua)
	}
	return b
}

func ffDo(t *testing.T, what string, step func(context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := step(ctx); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func ffEval[T any](t *testing.T, b *bidi.Browser, js string) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	v, err := bidi.Evaluate[T](ctx, b, js)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// ffWait polls js in the page until it is true.
func ffWait(t *testing.T, b *bidi.Browser, what, js string, timeout time.Duration) {
	t.Helper()
	pollPage(t, what, timeout, func() (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return bidi.Evaluate[bool](ctx, b, "!!("+js+")")
	}, func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		page, _ := bidi.Evaluate[string](ctx, b, pageTextJS)
		return page
	})
}

func ffScreenshot(t *testing.T, b *bidi.Browser, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	png, err := b.Screenshot(ctx)
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	saveScreenshot(t, name, png)
}
