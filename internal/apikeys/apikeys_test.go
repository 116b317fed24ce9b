package apikeys

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestMatch(t *testing.T) {
	keys := []Key{
		{Name: "ro", Value: "read-1"},
		{Name: "rw", Value: "write-1", Write: true},
		{Name: "both-ro", Value: "shared"},
		{Name: "both-rw", Value: "shared", Write: true},
		{Name: "empty", Value: ""},
	}
	for _, tc := range []struct {
		given string
		name  string
		write bool
		ok    bool
	}{
		{"read-1", "ro", false, true},
		{"write-1", "rw", true, true},
		{"shared", "both-rw", true, true}, // listed twice: read-write wins
		{"", "", false, false},            // an empty value never matches
		{"read-", "", false, false},
		{"read-1 ", "", false, false},
		{"nope", "", false, false},
	} {
		k, ok := Match(tc.given, keys)
		if ok != tc.ok || k.Name != tc.name || k.Write != tc.write {
			t.Errorf("Match(%q) = %+v, %v; want name %q write %v ok %v", tc.given, k, ok, tc.name, tc.write, tc.ok)
		}
	}
}

func TestFromPathDirectoryAndFile(t *testing.T) {
	dir := t.TempDir()
	// A mounted Secret: a file per data key, plus the kubelet's dot entries.
	sec := filepath.Join(dir, "secret")
	must(t, os.MkdirAll(filepath.Join(sec, "..2025_01_01"), 0o755))
	must(t, os.WriteFile(filepath.Join(sec, "analyst"), []byte("k-analyst-0123456789abcdef0123456789\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(sec, "support"), []byte("  k-support-0123456789abcdef0123456789  "), 0o600))
	must(t, os.WriteFile(filepath.Join(sec, "blank"), []byte("\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(sec, ".hidden"), []byte("k-hidden-0123456789abcdef0123456789"), 0o600))
	got, err := FromPath(sec, false)(context.Background())
	must(t, err)
	want := []Key{{Name: "analyst", Value: "k-analyst-0123456789abcdef0123456789"}, {Name: "support", Value: "k-support-0123456789abcdef0123456789"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("directory keys %+v, want %+v", got, want)
	}

	file := filepath.Join(dir, "keys.txt")
	must(t, os.WriteFile(file, []byte("one-0123456789abcdef0123456789abcdef\n\n two-0123456789abcdef0123456789abcdef \n"), 0o600))
	got, err = FromPath(file, true)(context.Background())
	must(t, err)
	want = []Key{{Name: "keys.txt:1", Value: "one-0123456789abcdef0123456789abcdef", Write: true}, {Name: "keys.txt:3", Value: "two-0123456789abcdef0123456789abcdef", Write: true}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("file keys %+v, want %+v", got, want)
	}

	if _, err := FromPath(filepath.Join(dir, "missing"), true)(context.Background()); err == nil {
		t.Error("a missing key path must be an error, not an empty key list")
	}
}

func TestJoin(t *testing.T) {
	ro := Static(Key{Name: "a", Value: "ra"})
	rw := Static(Key{Name: "b", Value: "wb", Write: true})
	got, err := Join(ro, nil, rw)(context.Background())
	must(t, err)
	if want := []Key{{Name: "a", Value: "ra"}, {Name: "b", Value: "wb", Write: true}}; !reflect.DeepEqual(got, want) {
		t.Errorf("joined %+v, want %+v", got, want)
	}
	boom := errors.New("boom")
	bad := Join(rw, func(context.Context) ([]Key, error) { return nil, boom })
	if _, err := bad(context.Background()); !errors.Is(err, boom) {
		t.Errorf("Join hid a source's error: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// A key's namespaces are a sibling entry: "<name>.namespaces" in a mounted Secret, the rest of
// the line in a file. Bad entries are load errors naming the entry, never a silent default.
func TestNamespacesEntries(t *testing.T) {
	long := "0123456789abcdef0123456789abcdef"
	dir := t.TempDir()
	sec := filepath.Join(dir, "secret")
	must(t, os.MkdirAll(sec, 0o755))
	must(t, os.WriteFile(filepath.Join(sec, "team-a"), []byte("k-a-0123456789abcdef0123456789abcd\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(sec, "team-a.namespaces"), []byte("ns-b, ns-a\nns-a\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(sec, "admin"), []byte("k-admin-0123456789abcdef0123456789"), 0o600))
	must(t, os.WriteFile(filepath.Join(sec, "admin.namespaces"), []byte("*"), 0o600))
	must(t, os.WriteFile(filepath.Join(sec, "plain"), []byte("k-plain-0123456789abcdef0123456789"), 0o600))
	got, err := load(sec, true)
	must(t, err)
	want := []Key{
		{Name: "admin", Value: "k-admin-0123456789abcdef0123456789", Write: true, Namespaces: []string{"*"}},
		{Name: "plain", Value: "k-plain-0123456789abcdef0123456789", Write: true},
		{Name: "team-a", Value: "k-a-0123456789abcdef0123456789abcd", Write: true, Namespaces: []string{"ns-a", "ns-b"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("keys %+v, want %+v", got, want)
	}

	file := filepath.Join(dir, "keys.txt")
	must(t, os.WriteFile(file, []byte("k-one-0123456789abcdef0123456789 ns-a,ns-c\nk-two-0123456789abcdef0123456789\n"), 0o600))
	got, err = load(file, false)
	must(t, err)
	want = []Key{{Name: "keys.txt:1", Value: "k-one-0123456789abcdef0123456789", Namespaces: []string{"ns-a", "ns-c"}}, {Name: "keys.txt:2", Value: "k-two-0123456789abcdef0123456789"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("file keys %+v, want %+v", got, want)
	}

	for name, files := range map[string]map[string]string{
		"short key":      {"k": "only-20-characters!!"},
		"bad name":       {"k": long, "k.namespaces": "Not_A_Namespace"},
		"empty entry":    {"k": long, "k.namespaces": " \n"},
		"orphan entry":   {"k": long, "gone.namespaces": "ns-a"},
		"bad line scope": nil,
	} {
		p := filepath.Join(dir, "bad-"+strings.ReplaceAll(name, " ", "-"))
		if files == nil {
			must(t, os.WriteFile(p, []byte("k-one-0123456789abcdef0123456789 ns_a"), 0o600))
		} else {
			must(t, os.MkdirAll(p, 0o755))
			for f, v := range files {
				must(t, os.WriteFile(filepath.Join(p, f), []byte(v), 0o600))
			}
		}
		if _, err := load(p, true); err == nil || !strings.Contains(err.Error(), "api keys") {
			t.Errorf("%s: load error %v, want one naming the entry", name, err)
		}
	}
}

func TestScope(t *testing.T) {
	for _, tc := range []struct {
		key   Key
		def   []string
		allow []string
		deny  []string
		str   string
	}{
		{Key{}, []string{"api"}, []string{"api"}, []string{"other", ""}, "api"},
		{Key{Namespaces: []string{"a", "b"}}, []string{"api"}, []string{"a", "b"}, []string{"api"}, "a,b"},
		{Key{Namespaces: []string{"*"}}, nil, []string{"a", "anything"}, nil, "all namespaces"},
		{Key{}, nil, nil, []string{"a", ""}, "no namespace"},
		{Key{}, []string{"*"}, []string{"x"}, nil, "all namespaces"},
	} {
		s := ScopeOf(tc.key, tc.def)
		for _, n := range tc.allow {
			if !s.Allows(n) {
				t.Errorf("%+v (default %v) refuses %q", tc.key, tc.def, n)
			}
		}
		for _, n := range tc.deny {
			if s.Allows(n) {
				t.Errorf("%+v (default %v) allows %q", tc.key, tc.def, n)
			}
		}
		if s.String() != tc.str {
			t.Errorf("%+v (default %v) is %q, want %q", tc.key, tc.def, s.String(), tc.str)
		}
	}
}

// In a key file, the namespaces may follow the key after a tab as well as a space: the key itself
// is never the key and its namespaces glued together (which would accept neither the key alone).
func TestKeyFileTabBeforeNamespaces(t *testing.T) {
	file := filepath.Join(t.TempDir(), "keys.txt")
	must(t, os.WriteFile(file, []byte("k-tab-0123456789abcdef0123456789ab\tns-a, ns-b\n"), 0o600))
	got, err := FromPath(file, false)(context.Background())
	must(t, err)
	want := []Key{{Name: "keys.txt:1", Value: "k-tab-0123456789abcdef0123456789ab", Namespaces: []string{"ns-a", "ns-b"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("keys %+v, want %+v", got, want)
	}
}
