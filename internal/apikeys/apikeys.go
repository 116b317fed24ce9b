// Package apikeys reads the shim's API keys with their names and access (read-only or
// read-write) and matches a presented key against them in constant time. The legacy REST API and
// the web UI share it: one set of keys, one rule for what each may do.
package apikeys

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
}

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

// Values keeps the values of src's keys whose Write equals write: the shim's key lists.
func Values(src Source, write bool) func(ctx context.Context) ([]string, error) {
	return func(ctx context.Context) ([]string, error) {
		ks, err := src(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]string, 0, len(ks))
		for _, k := range ks {
			if k.Write == write {
				out = append(out, k.Value)
			}
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
	add := func(name, v string) {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, Key{Name: name, Value: v, Write: write})
		}
	}
	if info.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("api keys: %w", err)
		}
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
			add(e.Name(), string(b))
		}
	} else {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("api keys: %w", err)
		}
		base := filepath.Base(path)
		for i, line := range strings.Split(string(b), "\n") {
			add(base+":"+strconv.Itoa(i+1), line)
		}
	}
	// Sorted so every call compares in the same order.
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}
