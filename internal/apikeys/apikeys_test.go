package apikeys

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
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
	must(t, os.WriteFile(filepath.Join(sec, "analyst"), []byte("k-analyst\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(sec, "support"), []byte("  k-support  "), 0o600))
	must(t, os.WriteFile(filepath.Join(sec, "blank"), []byte("\n"), 0o600))
	must(t, os.WriteFile(filepath.Join(sec, ".hidden"), []byte("k-hidden"), 0o600))
	got, err := FromPath(sec, false)(context.Background())
	must(t, err)
	want := []Key{{Name: "analyst", Value: "k-analyst"}, {Name: "support", Value: "k-support"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("directory keys %+v, want %+v", got, want)
	}

	file := filepath.Join(dir, "keys.txt")
	must(t, os.WriteFile(file, []byte("one\n\n two \n"), 0o600))
	got, err = FromPath(file, true)(context.Background())
	must(t, err)
	want = []Key{{Name: "keys.txt:1", Value: "one", Write: true}, {Name: "keys.txt:3", Value: "two", Write: true}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("file keys %+v, want %+v", got, want)
	}

	if _, err := FromPath(filepath.Join(dir, "missing"), true)(context.Background()); err == nil {
		t.Error("a missing key path must be an error, not an empty key list")
	}
}

func TestJoinAndValues(t *testing.T) {
	ro := Static(Key{Name: "a", Value: "ra"})
	rw := Static(Key{Name: "b", Value: "wb", Write: true})
	j := Join(ro, nil, rw)
	w, err := Values(j, true)(context.Background())
	must(t, err)
	r, err := Values(j, false)(context.Background())
	must(t, err)
	if !reflect.DeepEqual(w, []string{"wb"}) || !reflect.DeepEqual(r, []string{"ra"}) {
		t.Errorf("write values %v, read values %v", w, r)
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
