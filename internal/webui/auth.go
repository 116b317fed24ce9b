package webui

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
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
//	base64url(key name) "." expiry (unix seconds) "." session id "." hex(HMAC-SHA256(key value, name "|" expiry "|" id))
//
// The key itself is never stored in the cookie, the page or the browser's storage. Any replica
// can check a cookie (it knows the keys), and removing or rotating a key ends its sessions at
// once. Signing out revokes the session id on the server (Revocations, shared by the replicas),
// so a copied cookie stops working too. Keys have at least 32 characters (apikeys.MinKeyLength),
// so the HMAC cannot be used to guess a key offline. The cookie is HttpOnly (page scripts cannot
// read it), SameSite=Strict and limited to /ui/, and Secure when the request came over HTTPS.
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
	// errSessionsDown: the revoked-session list cannot be read; sessions are refused (closed).
	errSessionsDown = errors.New("the list of signed-out sessions is unavailable")
)

func sessionMAC(value, name string, exp int64, sid string) []byte {
	m := hmac.New(sha256.New, []byte(value))
	m.Write([]byte("vectordb-ui-session|" + name + "|" + strconv.FormatInt(exp, 10) + "|" + sid))
	return m.Sum(nil)
}

// newSessionID is a random session id (128 bits, hex).
func newSessionID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

func makeSession(k apikeys.Key, exp time.Time, sid string) string {
	e := exp.Unix()
	return base64.RawURLEncoding.EncodeToString([]byte(k.Name)) + "." + strconv.FormatInt(e, 10) + "." + sid + "." +
		hex.EncodeToString(sessionMAC(k.Value, k.Name, e, sid))
}

// checkSession returns the key a cookie value was made with, its session id and expiry, if that
// key is still accepted and the cookie has not expired (revocation is checked by the caller).
func checkSession(v string, keys []apikeys.Key, now time.Time) (apikeys.Key, string, time.Time, bool) {
	parts := strings.Split(v, ".")
	if len(parts) != 4 {
		return apikeys.Key{}, "", time.Time{}, false
	}
	nb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return apikeys.Key{}, "", time.Time{}, false
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil || now.Unix() >= exp {
		return apikeys.Key{}, "", time.Time{}, false
	}
	sid := parts[2]
	if len(sid) != 32 {
		return apikeys.Key{}, "", time.Time{}, false
	}
	mac, err := hex.DecodeString(parts[3])
	if err != nil {
		return apikeys.Key{}, "", time.Time{}, false
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
		if hmac.Equal(mac, sessionMAC(k.Value, k.Name, exp, sid)) && (!ok || (k.Write && !found.Write)) {
			found, ok = k, true
		}
	}
	return found, sid, time.Unix(exp, 0), ok
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
	k, sid, exp, ok := checkSession(c.Value, keys, s.now())
	if !ok {
		return apikeys.Key{}, errNoSession
	}
	revoked, err := s.revocations.Revoked(ctx, k.Name, sid, exp)
	if err != nil {
		s.log.Error(err, "cannot read revoked sessions")
		return apikeys.Key{}, errSessionsDown
	}
	if revoked {
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
// when present. Origin must name the request's own host, or publicOrigin when it is set (a proxy
// in front that rewrites Host). It returns why a request fails it, or "".
func sameOrigin(r *http.Request, publicOrigin string) string {
	if r.Header.Get(csrfHeader) != "1" {
		return "missing " + csrfHeader + " header (requests must come from the UI's own pages)"
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" && site != "same-origin" {
		return "cross-site request refused (Sec-Fetch-Site: " + site + ")"
	}
	if o := r.Header.Get("Origin"); o != "" {
		if publicOrigin != "" {
			if !strings.EqualFold(strings.TrimSuffix(o, "/"), strings.TrimSuffix(publicOrigin, "/")) {
				return "cross-origin request refused (Origin " + o + "; this UI is served at " + publicOrigin + ")"
			}
			return ""
		}
		u, err := url.Parse(o)
		if err != nil || !strings.EqualFold(u.Host, r.Host) {
			return "cross-origin request refused (Origin " + o + ")"
		}
	}
	return ""
}
