// Package bidi drives a stock Firefox over WebDriver BiDi, the W3C protocol Firefox speaks on
// its own (--remote-debugging-port), so the web UI is tested in Firefox as well as in Chromium
// (chromedp, which speaks only the Chrome DevTools protocol). It covers the few commands the
// tests use: navigate, evaluate, keyboard and pointer input, the viewport and screenshots. No Go
// library speaks BiDi; this is the smallest client that does, over gorilla/websocket.
package bidi

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// Key codes of the WebDriver specification for keys without a character.
const (
	Enter = "\uE007"
	Tab   = "\uE004"
)

// Browser is one headless Firefox with one browsing context (tab).
type Browser struct {
	cmd     *exec.Cmd
	conn    *websocket.Conn
	context string // the tab's browsing context id

	writeMu sync.Mutex
	mu      sync.Mutex
	nextID  int
	pending map[int]chan reply
	readErr error
	done    chan struct{}
	stderr  *tailBuffer
}

type reply struct {
	Type    string          `json:"type"` // success or error
	ID      *int            `json:"id"`
	Result  json.RawMessage `json:"result"`
	Error   string          `json:"error"`
	Message string          `json:"message"`
}

var listening = regexp.MustCompile(`WebDriver BiDi listening on (ws://\S+)`)

// Start runs path (firefox or firefox-esr) headless with a fresh profile under dir and opens a
// BiDi session. Close ends both.
func Start(ctx context.Context, path, dir string) (*Browser, error) {
	profile := filepath.Join(dir, "firefox-profile")
	if err := os.MkdirAll(profile, 0o755); err != nil {
		return nil, fmt.Errorf("firefox profile: %w", err)
	}
	// The machine has no internet: keep Firefox from reaching out at start (updates, telemetry,
	// remote settings), which only slows it and fills its log.
	prefs := strings.Join([]string{
		`user_pref("app.update.disabledForTesting", true);`,
		`user_pref("browser.shell.checkDefaultBrowser", false);`,
		`user_pref("datareporting.policy.dataSubmissionEnabled", false);`,
		`user_pref("toolkit.telemetry.reportingpolicy.firstRun", false);`,
		`user_pref("browser.safebrowsing.update.enabled", false);`,
		`user_pref("network.captive-portal-service.enabled", false);`,
		`user_pref("network.connectivity-service.enabled", false);`,
		`user_pref("services.settings.server", "http://127.0.0.1:9/");`,
		`user_pref("remote.active-protocols", 1);`,
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(profile, "user.js"), []byte(prefs), 0o644); err != nil {
		return nil, fmt.Errorf("firefox profile: %w", err)
	}
	cmd := exec.Command(path, "--headless", "--no-remote", "--profile", profile, "--remote-debugging-port=0", "about:blank")
	cmd.Env = append(os.Environ(), "MOZ_CRASHREPORTER_DISABLE=1")
	pipe, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stdout = io.Discard
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	b := &Browser{cmd: cmd, pending: map[int]chan reply{}, done: make(chan struct{}), stderr: &tailBuffer{max: 8 << 10}}
	// Firefox prints the socket's address on stderr; the rest of stderr is kept for errors.
	found := make(chan string, 1)
	stderrClosed := make(chan struct{})
	go func() {
		defer close(stderrClosed)
		sc := bufio.NewScanner(pipe)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			b.stderr.add(line)
			if m := listening.FindStringSubmatch(line); m != nil && !sent {
				found <- m[1]
				sent = true
			}
		}
		_, _ = io.Copy(io.Discard, pipe)
	}()
	var addr string
	select {
	case addr = <-found:
	case <-stderrClosed:
		b.kill()
		return nil, fmt.Errorf("firefox exited before opening its WebDriver BiDi socket; its log: %s", b.stderr)
	case <-ctx.Done():
		b.kill()
		return nil, fmt.Errorf("firefox did not open its WebDriver BiDi socket: %w; its log: %s", ctx.Err(), b.stderr)
	}
	dialer := websocket.Dialer{HandshakeTimeout: 30 * time.Second}
	conn, _, err := dialer.DialContext(ctx, addr+"/session", nil)
	if err != nil {
		b.kill()
		return nil, fmt.Errorf("connect to firefox at %s: %w", addr, err)
	}
	conn.SetReadLimit(256 << 20) // screenshots come back base64 in one message
	b.conn = conn
	go b.read()
	if err := b.Call(ctx, "session.new", map[string]any{"capabilities": map[string]any{}}, nil); err != nil {
		_ = b.Close()
		return nil, err
	}
	var tree struct {
		Contexts []struct {
			Context string `json:"context"`
		} `json:"contexts"`
	}
	if err := b.Call(ctx, "browsingContext.getTree", map[string]any{}, &tree); err != nil {
		_ = b.Close()
		return nil, err
	}
	if len(tree.Contexts) == 0 {
		_ = b.Close()
		return nil, errors.New("firefox has no open tab")
	}
	b.context = tree.Contexts[0].Context
	return b, nil
}

// read hands each command's reply to its caller; events (no id) are not subscribed to.
func (b *Browser) read() {
	defer close(b.done)
	for {
		_, data, err := b.conn.ReadMessage()
		if err != nil {
			b.mu.Lock()
			b.readErr = err
			for id, ch := range b.pending {
				close(ch)
				delete(b.pending, id)
			}
			b.mu.Unlock()
			return
		}
		var r reply
		if json.Unmarshal(data, &r) != nil || r.ID == nil {
			continue
		}
		b.mu.Lock()
		ch := b.pending[*r.ID]
		delete(b.pending, *r.ID)
		b.mu.Unlock()
		if ch != nil {
			ch <- r
		}
	}
}

// Call sends one command and decodes its result into out (nil: ignored).
func (b *Browser) Call(ctx context.Context, method string, params, out any) error {
	b.mu.Lock()
	if b.readErr != nil {
		err := b.readErr
		b.mu.Unlock()
		return fmt.Errorf("%s: connection to firefox lost: %w", method, err)
	}
	b.nextID++
	id := b.nextID
	ch := make(chan reply, 1)
	b.pending[id] = ch
	b.mu.Unlock()

	msg, err := json.Marshal(map[string]any{"id": id, "method": method, "params": params})
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	b.writeMu.Lock()
	err = b.conn.WriteMessage(websocket.TextMessage, msg)
	b.writeMu.Unlock()
	if err != nil {
		return fmt.Errorf("%s: %w", method, err)
	}
	select {
	case r, ok := <-ch:
		if !ok {
			return fmt.Errorf("%s: connection to firefox lost; its log: %s", method, b.stderr)
		}
		if r.Type == "error" {
			return fmt.Errorf("%s: %s: %s", method, r.Error, r.Message)
		}
		if out != nil {
			if err := json.Unmarshal(r.Result, out); err != nil {
				return fmt.Errorf("%s: decode result: %w", method, err)
			}
		}
		return nil
	case <-ctx.Done():
		b.mu.Lock()
		delete(b.pending, id)
		b.mu.Unlock()
		return fmt.Errorf("%s: %w", method, ctx.Err())
	}
}

// Navigate loads url and waits for the document to be complete.
func (b *Browser) Navigate(ctx context.Context, url string) error {
	return b.Call(ctx, "browsingContext.navigate", map[string]any{"context": b.context, "url": url, "wait": "complete"}, nil)
}

// Evaluate runs the JavaScript expression js in the page (awaiting a promise) and decodes its
// value, passed through JSON.stringify, into a T.
func Evaluate[T any](ctx context.Context, b *Browser, js string) (T, error) {
	var zero T
	var res struct {
		Type   string `json:"type"`
		Result struct {
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"result"`
		ExceptionDetails struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	expr := "(async () => JSON.stringify(await (" + js + ")))()"
	if err := b.Call(ctx, "script.evaluate", map[string]any{
		"expression": expr, "target": map[string]any{"context": b.context}, "awaitPromise": true,
		"userActivation": true,
	}, &res); err != nil {
		return zero, err
	}
	if res.Type == "exception" {
		return zero, fmt.Errorf("evaluate %s: %s", js, res.ExceptionDetails.Text)
	}
	if res.Result.Type != "string" {
		return zero, fmt.Errorf("evaluate %s: the value (%s) does not encode as JSON", js, res.Result.Type)
	}
	var v T
	if err := json.Unmarshal([]byte(res.Result.Value), &v); err != nil {
		return zero, fmt.Errorf("evaluate %s: %w", js, err)
	}
	return v, nil
}

// Type presses and releases each key of keys (characters, or Enter and the like) in turn, into
// whatever has the focus.
func (b *Browser) Type(ctx context.Context, keys string) error {
	actions := make([]map[string]any, 0, 2*len(keys))
	for _, r := range keys {
		actions = append(actions, map[string]any{"type": "keyDown", "value": string(r)}, map[string]any{"type": "keyUp", "value": string(r)})
	}
	return b.Call(ctx, "input.performActions", map[string]any{"context": b.context, "actions": []any{
		map[string]any{"type": "key", "id": "keyboard", "actions": actions},
	}}, nil)
}

// Click moves the mouse to the middle of the first element matching the CSS selector and
// clicks it with the left button, as a person would (the element must be visible).
func (b *Browser) Click(ctx context.Context, selector string) error {
	var res struct {
		Type   string `json:"type"`
		Result struct {
			Type     string `json:"type"`
			SharedID string `json:"sharedId"`
		} `json:"result"`
		ExceptionDetails struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	sel, _ := json.Marshal(selector)
	if err := b.Call(ctx, "script.evaluate", map[string]any{
		"expression": "document.querySelector(" + string(sel) + ")", "target": map[string]any{"context": b.context},
		"awaitPromise": false,
	}, &res); err != nil {
		return err
	}
	if res.Type == "exception" {
		return fmt.Errorf("click %s: %s", selector, res.ExceptionDetails.Text)
	}
	if res.Result.Type != "node" || res.Result.SharedID == "" {
		return fmt.Errorf("click %s: no such element", selector)
	}
	origin := map[string]any{"type": "element", "element": map[string]any{"sharedId": res.Result.SharedID}}
	return b.Call(ctx, "input.performActions", map[string]any{"context": b.context, "actions": []any{
		map[string]any{"type": "pointer", "id": "mouse", "parameters": map[string]any{"pointerType": "mouse"}, "actions": []any{
			map[string]any{"type": "pointerMove", "x": 0, "y": 0, "origin": origin},
			map[string]any{"type": "pointerDown", "button": 0},
			map[string]any{"type": "pointerUp", "button": 0},
		}},
	}}, nil)
}

// SetViewport resizes the page's viewport (CSS pixels).
func (b *Browser) SetViewport(ctx context.Context, width, height int) error {
	return b.Call(ctx, "browsingContext.setViewport", map[string]any{"context": b.context,
		"viewport": map[string]any{"width": width, "height": height}}, nil)
}

// Screenshot returns a PNG of the whole document.
func (b *Browser) Screenshot(ctx context.Context) ([]byte, error) {
	var res struct {
		Data string `json:"data"`
	}
	if err := b.Call(ctx, "browsingContext.captureScreenshot", map[string]any{"context": b.context, "origin": "document"}, &res); err != nil {
		return nil, err
	}
	png, err := base64.StdEncoding.DecodeString(res.Data)
	if err != nil {
		return nil, fmt.Errorf("screenshot: %w", err)
	}
	return png, nil
}

// Version is the browser's name and version, as the session reports it.
func (b *Browser) Version(ctx context.Context) (string, error) {
	return Evaluate[string](ctx, b, "navigator.userAgent")
}

// Close ends the session and the browser.
func (b *Browser) Close() error {
	if b.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_ = b.Call(ctx, "browser.close", map[string]any{}, nil)
		cancel()
		_ = b.conn.Close()
	}
	exited := make(chan struct{})
	go func() { _ = b.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		_ = b.cmd.Process.Kill()
		<-exited
	}
	return nil
}

// kill ends a browser that never got a session.
func (b *Browser) kill() {
	_ = b.cmd.Process.Kill()
	_ = b.cmd.Wait()
}

// FindFirefox returns the path of Firefox (Debian's firefox-esr, or firefox).
func FindFirefox() (string, error) {
	for _, name := range []string{"firefox-esr", "firefox"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("firefox is not installed (apt-get install -y firefox-esr)")
}

// tailBuffer keeps the last max bytes of Firefox's log for error messages.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) add(line string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, line...)
	t.buf = append(t.buf, '\n')
	if len(t.buf) > t.max {
		t.buf = append([]byte(nil), t.buf[len(t.buf)-t.max:]...)
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.buf)
}
