package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
)

// chromiumPath finds the browser of the web UI tests. Missing, it fails the test in CI (CI set:
// .ci/run installs Debian's chromium) and skips it, saying why, elsewhere.
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is not installed (apt-get install -y chromium; .ci/run does it): the web UI tests need a real browser")
	}
	t.Skip("SKIP: chromium is not installed; install it (apt-get install -y chromium) to run the web UI browser tests (in CI this fails)")
	return ""
}

// newBrowser starts headless Chromium for the test; every tab shares its cookies.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // containers run the tests as root
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.WindowSize(1280, 900),
	)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser (without a timeout: it would end it)
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

func run(t *testing.T, ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(c, steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// eval runs js in the page and returns its value.
func eval[T any](t *testing.T, ctx context.Context, js string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("evaluate %s: %v", js, err)
	}
	return v
}

// waitJS polls js (an expression) in the page until it is true.
func waitJS(t *testing.T, ctx context.Context, what, js string, timeout time.Duration) {
	t.Helper()
	pollPage(t, what, timeout, func() (bool, error) {
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		return chromedp.Run(c, chromedp.Evaluate[bool]("!!("+js+")"))
	}, func() string {
		page, _ := chromedp.Run(ctx, chromedp.Evaluate[string](pageTextJS))
		return page
	})
}

// pageTextJS is the start of what a page shows, for the message of a wait that timed out.
const pageTextJS = `document.body.innerText.slice(0, 3000)`

// pollPage calls check until it is true or timeout has passed; then it fails the test with what
// the page shows.
func pollPage(t *testing.T, what string, timeout time.Duration, check func() (bool, error), page func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, err := check()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (%v); page:\n%s", timeout, what, err, page())
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// signIn loads the UI and signs in by keyboard: the key field has the focus, Enter submits.
func signIn(t *testing.T, ctx context.Context, base, key string) {
	t.Helper()
	run(t, ctx, "open the UI", chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#login")))
	waitJS(t, ctx, "focus on the key field", `document.activeElement && document.activeElement.id === 'key'`, 10*time.Second)
	run(t, ctx, "sign in", chromedp.SendKeys(chromedp.CSS("#key"), key+kb.Enter))
	waitJS(t, ctx, "signed in", `!document.getElementById('list').hidden || !document.getElementById('detail').hidden`, 20*time.Second)
}

func signOut(t *testing.T, ctx context.Context) {
	t.Helper()
	run(t, ctx, "sign out", chromedp.Click(chromedp.CSS("#logout")), chromedp.WaitVisible(chromedp.CSS("#login")))
}

// screenshotDir is where the tests write their screenshots: $WEBUI_SCREENSHOT_DIR (e.g.
// docs/images, to refresh the README's) or the test's artifact directory (kept with go test
// -artifacts).
func screenshotDir(t *testing.T) string {
	if d := os.Getenv("WEBUI_SCREENSHOT_DIR"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.ArtifactDir()
}

func screenshot(t *testing.T, ctx context.Context, name string) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot %s: %v", name, err)
	}
	saveScreenshot(t, name, png)
}

// saveScreenshot writes a browser's PNG as name.png under screenshotDir.
func saveScreenshot(t *testing.T, name string, png []byte) {
	t.Helper()
	p := filepath.Join(screenshotDir(t), name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", p)
}

// jsString quotes s for JavaScript (JSON is valid JavaScript).
func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// rowJS evaluates expr with tr bound to the list row of key (null without one).
func rowJS(key, expr string) string {
	return fmt.Sprintf(`(() => { const tr = [...document.querySelectorAll('#list-body tr')].find(r => r.dataset.key === %s); return tr ? %s : null; })()`, jsString(key), expr)
}
