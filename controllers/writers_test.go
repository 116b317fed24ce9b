package controllers

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
)

func wr(name string, sec int, mut ...func(*writer)) writer {
	w := writer{UID: types.UID("uid-" + name), Namespace: "ns", Name: name, Created: time.Unix(1_800_000_000+int64(sec), 0).UTC(), TargetNamespace: "v2"}
	for _, m := range mut {
		m(&w)
	}
	return w
}

// The record keeps writers newest first, once each, at most maxWriters, remembering the newest
// dropped one.
func TestWritersAdd(t *testing.T) {
	var ws writers
	if !ws.add(wr("b", 2)) || !ws.add(wr("a", 1)) || !ws.add(wr("c", 3)) || ws.add(wr("a", 1)) {
		t.Fatal("add reports a change for each new writer and none for a repeat")
	}
	var names []string
	for _, w := range ws.List {
		names = append(names, w.Name)
	}
	if strings.Join(names, ",") != "c,b,a" {
		t.Fatalf("order %v, want newest first", names)
	}
	// Same second: ordered by name, as newerThan orders runs.
	ws.add(wr("c2", 3))
	if ws.List[0].Name != "c2" {
		t.Fatalf("same-second writers: %s first, want c2", ws.List[0].Name)
	}
	var full writers
	for i := range maxWriters + 3 {
		full.add(wr(fmt.Sprintf("r%03d", i), i))
	}
	if len(full.List) != maxWriters || full.List[len(full.List)-1].Name != "r003" || len(full.Dropped) != 1 || full.Dropped[0].Name != "r002" {
		t.Fatalf("bounded record: %d kept, oldest %s, dropped %+v", len(full.List), full.List[len(full.List)-1].Name, full.Dropped)
	}
}

// Which recorded writers stop an older run's sync step.
func TestWritersNewer(t *testing.T) {
	self := wr("self", 10).ingestion()
	other := func(w *writer) { w.TargetNamespace = "other" }
	routed := func(w *writer) { w.TargetNamespace, w.NamespaceColumn = "other", "ns_col" }
	otherHost := func(w *writer) { w.Host = "h2" }
	for _, tc := range []struct {
		name string
		ws   writers
		live []string
		want string
	}{
		{"empty record", writers{}, nil, ""},
		{"only self", writers{List: []writer{wr("self", 10)}}, nil, ""},
		{"older writers never stop it", writers{List: []writer{wr("self", 10), wr("old", 9)}}, nil, ""},
		{"a newer writer that is gone", writers{List: []writer{wr("new", 11), wr("self", 10)}}, nil, "ns/new (deleted since)"},
		{"a newer writer the cache shows", writers{List: []writer{wr("new", 11)}}, []string{"new"}, "ns/new"},
		{"same second, later name", writers{List: []writer{wr("self2", 10)}}, nil, "ns/self2 (deleted since)"},
		{"same second, earlier name", writers{List: []writer{wr("sel", 10)}}, nil, ""},
		{"another target namespace", writers{List: []writer{wr("new", 11, other)}}, nil, ""},
		{"another namespace but routed by column", writers{List: []writer{wr("new", 11, routed)}}, nil, "ns/new (deleted since)"},
		{"a host against one left to be looked up", writers{List: []writer{wr("new", 11, func(w *writer) { w.Host = "h1" })}}, nil, "ns/new (deleted since)"},
		{"another host", writers{List: []writer{wr("new", 11, func(w *writer) { w.Host = "h1" })}}, nil, ""},
		{"two newer ones", writers{List: []writer{wr("z", 12), wr("m", 11)}}, nil, "ns/m (deleted since) (and 1 more)"},
		{"older than a dropped writer", writers{List: []writer{wr("x", 9)}, Dropped: []writer{wr("d", 10, func(w *writer) { w.Name = "self3" })}}, nil, fmt.Sprintf("ns/self3 (no longer in the record, which keeps the newest %d writers)", maxWriters)},
		{"newer than the dropped writer", writers{Dropped: []writer{wr("d", 5)}}, nil, ""},
		{"older than a dropped writer to another namespace", writers{Dropped: []writer{wr("d", 11, other)}}, nil, ""},
		{"older than the collapsed dropped writers", writers{Dropped: []writer{wr("d", 11, func(w *writer) { w.TargetNamespace, w.NamespaceColumn = "other", anyNamespace })}}, nil, fmt.Sprintf("ns/d (no longer in the record, which keeps the newest %d writers)", maxWriters)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			live := map[types.UID]bool{}
			for _, n := range tc.live {
				live[types.UID("uid-"+n)] = true
			}
			s := self
			if tc.name == "another host" {
				s = wr("self", 10, otherHost).ingestion()
			}
			if got := tc.ws.newer(s, live); got != tc.want {
				t.Errorf("newer = %q, want %q", got, tc.want)
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }

// A claim is recorded once.
func TestWritersClaim(t *testing.T) {
	var ws writers
	if !ws.claim(wr("a", 1)) || ws.claim(wr("a", 1)) || len(ws.Deleters) != 1 {
		t.Fatalf("claim: %+v", ws.Deleters)
	}
}

// A hand-edited record whose entries do not name a run is damaged (a deleter without a name
// cannot be looked up, a writer without a time cannot be ordered); a well-formed one is not.
func TestWritersValid(t *testing.T) {
	for _, tc := range []struct {
		name string
		ws   writers
		bad  bool
	}{
		{"empty", writers{}, false},
		{"well formed", writers{List: []writer{wr("a", 1)}, Deleters: []writer{wr("a", 1)}, Dropped: []writer{wr("d", 0)}}, false},
		{"writer without uid", writers{List: []writer{wr("a", 1, func(w *writer) { w.UID = "" })}}, true},
		{"writer without time", writers{List: []writer{wr("a", 1, func(w *writer) { w.Created = time.Time{} })}}, true},
		{"deleter without name", writers{Deleters: []writer{wr("a", 1, func(w *writer) { w.Name = "" })}}, true},
		{"deleter without namespace", writers{Deleters: []writer{wr("a", 1, func(w *writer) { w.Namespace = "" })}}, true},
		{"dropped without uid", writers{Dropped: []writer{wr("d", 0, func(w *writer) { w.UID = "" })}}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.ws.valid(); (err != nil) != tc.bad {
				t.Errorf("valid() = %v, want damaged %v", err, tc.bad)
			}
		})
	}
}

// The bound must not supersede a run because of writers to other namespaces: 64 newer runs
// under the same index and prefix that write to other target namespaces (one per tenant, say)
// push the oldest entries out, and a run of a namespace none of them writes to still deletes;
// a dropped writer to its namespace, or one routed by column, still supersedes it.
func TestWritersBoundPerNamespace(t *testing.T) {
	self := wr("self", 10).ingestion() // target namespace v2
	tenant := func(i int) func(*writer) {
		return func(w *writer) { w.TargetNamespace = fmt.Sprintf("tenant-%d", i) }
	}
	var ws writers
	ws.add(wr("self", 10))
	for i := range maxWriters + 1 {
		ws.add(wr(fmt.Sprintf("t%03d", i), 20+i, tenant(i)))
	}
	if got := ws.newer(self, nil); got != "" {
		t.Fatalf("newer = %q after %d writers to other namespaces, want none", got, maxWriters+1)
	}
	// A writer to its namespace, pushed out by newer ones elsewhere, still counts.
	ws = writers{}
	ws.add(wr("same", 11))
	for i := range maxWriters + 1 {
		ws.add(wr(fmt.Sprintf("t%03d", i), 20+i, tenant(i)))
	}
	if got := ws.newer(self, nil); !strings.HasPrefix(got, "ns/same ") {
		t.Fatalf("newer = %q, want the dropped writer to the same namespace", got)
	}
	ws = writers{}
	ws.add(wr("routed", 11, func(w *writer) { w.TargetNamespace, w.NamespaceColumn = "other", "ns_col" }))
	for i := range maxWriters + 1 {
		ws.add(wr(fmt.Sprintf("t%03d", i), 20+i, tenant(i)))
	}
	if got := ws.newer(self, nil); !strings.HasPrefix(got, "ns/routed ") {
		t.Fatalf("newer = %q, want the dropped writer routed by column", got)
	}
	// More dropped targets than the record keeps collapse into one that shares every namespace:
	// it supersedes conservatively.
	ws = writers{}
	for i := range 3*maxWriters + 1 {
		ws.add(wr(fmt.Sprintf("t%03d", i), 20+i, tenant(i)))
	}
	if len(ws.Dropped) > maxWriters {
		t.Fatalf("%d dropped entries kept, want at most %d", len(ws.Dropped), maxWriters)
	}
	if got := ws.newer(self, nil); got == "" {
		t.Fatal("after the dropped targets collapsed, an older run of any namespace must be superseded")
	}
	if err := ws.valid(); err != nil {
		t.Fatal(err)
	}
}
