package webui

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
)

// The browser proves it holds an API key with a session cookie made at login:
//
//	base64url(key name) "." expiry (unix seconds) "." hex(HMAC-SHA256(key value, name "|" expiry))
//
// The key itself is never stored in the cookie, the page or the browser's storage. Any replica
// can check a cookie without shared state (it knows the keys), and removing or rotating a key
// ends its sessions at once. The cookie is HttpOnly (page scripts cannot read it), SameSite=Strict
// and limited to /ui/, and Secure when the request came over HTTPS.
const (
	cookieName = "vectordb_ui"
	// csrfHeader must be on every POST. A page of another origin cannot set a custom header
	// without a CORS preflight, which this server never grants; Origin and Sec-Fetch-Site are
	// checked as well when the browser sends them.
	csrfHeader = "X-Vectordb-UI"
)

var (
	errNoSession = errors.New("not signed in")
	errKeysDown  = errors.New("API keys are unavailable")
)

func sessionMAC(value, name string, exp int64) []byte {
	m := hmac.New(sha256.New, []byte(value))
	m.Write([]byte("vectordb-ui-session|" + name + "|" + strconv.FormatInt(exp, 10)))
	return m.Sum(nil)
}

func makeSession(k apikeys.Key, exp time.Time) string {
	e := exp.Unix()
	return base64.RawURLEncoding.EncodeToString([]byte(k.Name)) + "." + strconv.FormatInt(e, 10) + "." +
		hex.EncodeToString(sessionMAC(k.Value, k.Name, e))
}

// checkSession returns the key a cookie value was made with, if that key is still accepted and
// the cookie has not expired.
func checkSession(v string, keys []apikeys.Key, now time.Time) (apikeys.Key, bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return apikeys.Key{}, false
	}
	nb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return apikeys.Key{}, false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || now.Unix() >= exp {
		return apikeys.Key{}, false
	}
	mac, err := hex.DecodeString(parts[2])
	if err != nil {
		return apikeys.Key{}, false
	}
	name := string(nb)
	var found apikeys.Key
	ok := false
	// Names may repeat across key files: any key of that name whose MAC matches. The read-write
	// one wins, as in apikeys.Match.
	for _, k := range keys {
		if k.Name != name || k.Value == "" {
			continue
		}
		if hmac.Equal(mac, sessionMAC(k.Value, k.Name, exp)) && (!ok || (k.Write && !found.Write)) {
			found, ok = k, true
		}
	}
	return found, ok
}

// session returns the signed-in key of r.
func (s *Server) session(ctx context.Context, r *http.Request) (apikeys.Key, error) {
	c, err := r.Cookie(cookieName)
	if err != nil || c.Value == "" {
		return apikeys.Key{}, errNoSession
	}
	keys, err := s.keys(ctx)
	if err != nil {
		return apikeys.Key{}, err
	}
	k, ok := checkSession(c.Value, keys, s.now())
	if !ok {
		return apikeys.Key{}, errNoSession
	}
	return k, nil
}

func (s *Server) keys(ctx context.Context) ([]apikeys.Key, error) {
	if s.cfg.Keys == nil {
		return nil, errKeysDown
	}
	ks, err := s.cfg.Keys(ctx)
	if err != nil {
		s.log.Error(err, "cannot read API keys")
		return nil, errKeysDown
	}
	return ks, nil
}

func secure(r *http.Request) bool {
	return r.TLS != nil || strings.EqualFold(r.Header.Get("X-Forwarded-Proto"), "https")
}

func (s *Server) setSession(w http.ResponseWriter, r *http.Request, value string, exp time.Time) {
	c := &http.Cookie{Name: cookieName, Value: value, Path: "/ui/", HttpOnly: true, SameSite: http.SameSiteStrictMode,
		Secure: secure(r)}
	if value == "" {
		c.MaxAge = -1
	} else {
		c.Expires = exp
	}
	http.SetCookie(w, c)
}

// sameOrigin is the CSRF check of every POST: the custom header, and Origin and Sec-Fetch-Site
// when present. It returns why a request fails it, or "".
func sameOrigin(r *http.Request) string {
	if r.Header.Get(csrfHeader) != "1" {
		return "missing " + csrfHeader + " header (requests must come from the UI's own pages)"
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return "cross-site request refused (Sec-Fetch-Site: " + site + ")"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return "cross-origin request refused (Origin " + o + ")"
		}
	}
	return ""
}
