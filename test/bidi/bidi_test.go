package bidi

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"
)

// The client against a real Firefox and a page served here: keys reach the focused field and
// Enter submits its form, a click lands on the button it names, values of each JSON kind come
// back, an exception is an error, the viewport changes and the screenshot is a PNG.
func TestFirefox(t *testing.T) {
	path, err := FindFirefox()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v: .ci/run installs it; the web UI's Firefox test needs it", err)
		}
		t.Skipf("SKIP: %v", err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `<!doctype html><html><body>
<form id="f"><input id="k" autofocus></form>
<p id="out"></p>
<div style="height:40px"></div>
<button id="b" style="margin-left:200px" onclick="document.getElementById('out').textContent += 'clicked'">go</button>
<script>
document.getElementById('f').addEventListener('submit', (e) => { e.preventDefault(); document.getElementById('out').textContent = 'sent:' + document.getElementById('k').value + ';'; });
document.getElementById('k').focus();
</script></body></html>`)
	}))
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	b, err := Start(ctx, path, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ua, err := b.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("browser: %s", ua)
	if err := b.Navigate(ctx, srv.URL); err != nil {
		t.Fatal(err)
	}
	if err := b.Type(ctx, "héllo"+Enter); err != nil {
		t.Fatal(err)
	}
	if err := b.Click(ctx, "#b"); err != nil {
		t.Fatal(err)
	}
	out, err := Evaluate[string](ctx, b, `document.getElementById('out').textContent`)
	if err != nil {
		t.Fatal(err)
	}
	if out != "sent:héllo;clicked" {
		t.Errorf("page says %q after typing, Enter and a click, want %q", out, "sent:héllo;clicked")
	}
	if err := b.Click(ctx, "#nothing"); err == nil {
		t.Error("a click on a missing element succeeded")
	}

	n, err := Evaluate[float64](ctx, b, `Promise.resolve(1.5 * 2)`)
	if err != nil || n != 3 {
		t.Errorf("awaited number: %v, %v", n, err)
	}
	list, err := Evaluate[[]string](ctx, b, `['a', 'b']`)
	if err != nil || len(list) != 2 || list[1] != "b" {
		t.Errorf("array: %v, %v", list, err)
	}
	if _, err := Evaluate[bool](ctx, b, `(() => { throw new Error('boom') })()`); err == nil || !bytes.Contains([]byte(err.Error()), []byte("boom")) {
		t.Errorf("a thrown error came back as %v", err)
	}

	if err := b.SetViewport(ctx, 390, 700); err != nil {
		t.Fatal(err)
	}
	if w, err := Evaluate[int](ctx, b, `window.innerWidth`); err != nil || w != 390 {
		t.Errorf("viewport width %d (%v), want 390", w, err)
	}
	png, err := b.Screenshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Errorf("screenshot is not a PNG (%d bytes)", len(png))
	}
}
