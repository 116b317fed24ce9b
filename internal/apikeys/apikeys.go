// Package apikeys reads the shim's API keys with their names, access (read-only or read-write)
// and namespaces, and matches a presented key against them in constant time. The legacy REST API
// and the web UI share it: one set of keys, one rule for what each may see and do.
//
// A key's namespaces are a sibling entry of the key: in a mounted Secret (a directory), the data
// key "<name>.namespaces" holds the namespaces of key "<name>", separated by commas, spaces or
// newlines, or "*" for every namespace the manager watches; in a file of one key a line, the
// namespaces follow the key on its line after a space or tab ("k3y… team-a,team-b"). A key without the
// entry gets its server's default scope (the REST API's own namespace); cluster-wide is never
// implied.
package apikeys

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Key is one accepted key. Name identifies it in events and logs (the Secret data key, or file and
// line); Value is the secret itself and must never be shown or logged.
type Key struct {
	Name  string
	Value string
	// Write allows actions (create, suspend, resume, cancel); without it the key only reads.
	Write bool
	// Namespaces the key may see and act on, as its entry lists them (AllNamespaces for every
	// one); nil when it has no entry: the server's default scope applies (see ScopeOf).
	Namespaces []string
}

// MinKeyLength is the shortest key accepted from a file or Secret: the web UI's session cookie
// carries an HMAC keyed by the key, so a short key could be guessed offline from a cookie.
const MinKeyLength = 32

// CheckValue refuses a key value shorter than MinKeyLength, saying which key and how to make one.
func CheckValue(name, value string) error {
	if n := len([]rune(value)); n < MinKeyLength {
		return fmt.Errorf("key %q is %d characters long; keys must have at least %d (make one with: openssl rand -hex 24)", name, n, MinKeyLength)
	}
	return nil
}

// AllNamespaces in a key's namespaces entry makes it cluster-wide.
const AllNamespaces = "*"

// NamespacesSuffix names a key's namespaces entry in a mounted Secret: "<key name>.namespaces".
const NamespacesSuffix = ".namespaces"

// Scope is the set of namespaces a key may see and act on. The zero Scope allows nothing.
type Scope struct {
	all bool
	ns  map[string]bool
}

// ScopeOf is k's scope: its own namespaces, or def when it names none.
func ScopeOf(k Key, def []string) Scope {
	list := k.Namespaces
	if list == nil {
		list = def
	}
	s := Scope{ns: map[string]bool{}}
	for _, n := range list {
		if n == AllNamespaces {
			s.all = true
		} else if n != "" {
			s.ns[n] = true
		}
	}
	return s
}

// ClusterWide is a scope of every namespace (tests and the explicit "*").
func ClusterWide() Scope { return Scope{all: true} }

// Allows reports whether ns is in the scope.
func (s Scope) Allows(ns string) bool { return s.all || s.ns[ns] }

// All reports whether the scope is every namespace.
func (s Scope) All() bool { return s.all }

// Namespaces lists the scope's namespaces, sorted (nil when All).
func (s Scope) Namespaces() []string {
	if s.all {
		return nil
	}
	out := make([]string, 0, len(s.ns))
	for n := range s.ns {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// String describes the scope for logs and messages.
func (s Scope) String() string {
	if s.all {
		return "all namespaces"
	}
	if len(s.ns) == 0 {
		return "no namespace"
	}
	return strings.Join(s.Namespaces(), ",")
}

// ParseNamespaces reads a namespaces entry: names separated by commas or white space, each a
// DNS-1123 label, or "*". An empty entry is an error: a key that should see nothing is removed.
func ParseNamespaces(v string) ([]string, error) {
	fields := strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' })
	if len(fields) == 0 {
		return nil, errors.New("no namespace listed (name namespaces separated by commas, or * for all)")
	}
	seen := map[string]bool{}
	out := make([]string, 0, len(fields))
	for _, f := range fields {
		if f != AllNamespaces && !dns1123Label.MatchString(f) {
			return nil, fmt.Errorf("%q is not a namespace name (lower-case letters, digits and '-', at most 63) nor *", f)
		}
		if !seen[f] {
			seen[f] = true
			out = append(out, f)
		}
	}
	sort.Strings(out)
	return out, nil
}

var dns1123Label = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)

// Source returns the keys accepted now.
type Source func(ctx context.Context) ([]Key, error)

// Static is a fixed set of keys (tests, and flags that name keys directly).
func Static(keys ...Key) Source {
	keys = append([]Key(nil), keys...)
	return func(context.Context) ([]Key, error) { return keys, nil }
}

// Join concatenates sources; any source's error is the result's error, so a missing key file is
// reported rather than silently dropping its keys.
func Join(srcs ...Source) Source {
	return func(ctx context.Context) ([]Key, error) {
		var out []Key
		for _, s := range srcs {
			if s == nil {
				continue
			}
			ks, err := s(ctx)
			if err != nil {
				return nil, err
			}
			out = append(out, ks...)
		}
		return out, nil
	}
}

// Match finds given among keys in time that depends on neither where a key differs nor its
// length: both sides are hashed to a fixed size and every key is compared. When the same value
// is listed as read-only and read-write, the read-write entry wins (the legacy Secret's keys
// keep the access they always had).
func Match(given string, keys []Key) (Key, bool) {
	g := sha256.Sum256([]byte(given))
	var found Key
	ok := false
	for _, k := range keys {
		if k.Value == "" {
			continue
		}
		h := sha256.Sum256([]byte(k.Value))
		if subtle.ConstantTimeCompare(g[:], h[:]) == 1 && (!ok || (k.Write && !found.Write)) {
			found, ok = k, true
		}
	}
	return found, ok
}

// refresh is how long keys read from files are reused: a mounted Secret changes within a minute or
// so anyway, and a request must not cost a directory read.
const refresh = 5 * time.Second

// FromPath reads keys from a file (one key a line, named <file>:<line>) or a directory (a mounted
// Secret: each file one key, named by the file, i.e. the Secret's data key). Files starting with
// a dot (the ..data links of a mounted Secret) are skipped; values are trimmed; empty ones are
// ignored. It re-reads at most every few seconds, so keys rotate without a restart.
func FromPath(path string, write bool) Source {
	var (
		mu    sync.Mutex
		keys  []Key
		read  time.Time
		cause error
	)
	return func(context.Context) ([]Key, error) {
		mu.Lock()
		defer mu.Unlock()
		if time.Since(read) > refresh {
			keys, cause = load(path, write)
			read = time.Now()
		}
		return keys, cause
	}
}

func load(path string, write bool) ([]Key, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("api keys: %w", err)
	}
	var out []Key
	var short []error
	add := func(name, v string, ns []string) {
		if v = strings.TrimSpace(v); v != "" {
			if err := CheckValue(name, v); err != nil {
				short = append(short, err)
				return
			}
			out = append(out, Key{Name: name, Value: v, Write: write, Namespaces: ns})
		}
	}
	if info.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("api keys: %w", err)
		}
		values := map[string]string{}
		scopes := map[string]string{}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			b, err := os.ReadFile(filepath.Join(path, e.Name()))
			if err != nil {
				if errors.Is(err, os.ErrNotExist) || isDir(filepath.Join(path, e.Name())) {
					continue // a dangling link or a directory, not a key
				}
				return nil, fmt.Errorf("api keys: %w", err)
			}
			if base, ok := strings.CutSuffix(e.Name(), NamespacesSuffix); ok {
				scopes[base] = string(b)
				continue
			}
			values[e.Name()] = string(b)
		}
		for name, v := range values {
			var ns []string
			if sv, ok := scopes[name]; ok {
				if ns, err = ParseNamespaces(sv); err != nil {
					return nil, fmt.Errorf("api keys: %s: entry %s%s: %w", path, name, NamespacesSuffix, err)
				}
			}
			add(name, v, ns)
		}
		for name := range scopes {
			if _, ok := values[name]; !ok {
				return nil, fmt.Errorf("api keys: %s: entry %s%s names no key %q in the same Secret", path, name, NamespacesSuffix, name)
			}
		}
	} else {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("api keys: %w", err)
		}
		base := filepath.Base(path)
		for i, line := range strings.Split(string(b), "\n") {
			name := base + ":" + strconv.Itoa(i+1)
			// The key ends at the first space or tab (a key never holds either).
			key, rest := strings.TrimSpace(line), ""
			if i := strings.IndexAny(key, " \t"); i >= 0 {
				key, rest = key[:i], key[i+1:]
			}
			var ns []string
			if rest = strings.TrimSpace(rest); rest != "" {
				if ns, err = ParseNamespaces(rest); err != nil {
					return nil, fmt.Errorf("api keys: %s: the namespaces of the key on line %d: %w", path, i+1, err)
				}
			}
			add(name, key, ns)
		}
	}
	if len(short) > 0 {
		// Every key is refused until the short one is replaced: a key that silently stops working
		// would be found later and by its users.
		return nil, fmt.Errorf("api keys: %s: %w", path, errors.Join(short...))
	}
	// Sorted so every call compares in the same order.
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

// DocRow is one row of the key table of docs/security.md.
type DocRow struct {
	Surface, Request, ReadOnly, ReadWrite, OtherNamespace string
}

// DocKeyTable reads the key table of docs/security.md (the table after the "key-table" marker),
// so tests of the REST API and the web UI check the document against their routes.
func DocKeyTable(path string) ([]DocRow, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- key-table")
	if !ok {
		return nil, fmt.Errorf("%s has no key-table marker", path)
	}
	var rows []DocRow
	lines := strings.Split(rest, "\n")[1:]
	for i, line := range lines {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "|") {
			if len(rows) > 0 || i > 2 {
				break
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for j := range cells {
			cells[j] = strings.Trim(strings.TrimSpace(cells[j]), "`")
		}
		if len(cells) != 5 || cells[0] == "surface" || strings.HasPrefix(cells[0], "---") {
			continue
		}
		rows = append(rows, DocRow{cells[0], cells[1], cells[2], cells[3], cells[4]})
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("%s: the key table has no rows", path)
	}
	return rows, nil
}
