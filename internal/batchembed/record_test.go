package batchembed

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// The merge of a record this writer holds with the one another pod of the chunk stored first:
// every fact either recorded survives, the stored claim or upload wins, and what this writer
// made that nobody will use is returned to delete (files) or cancel (batches).
func TestMergeBatch(t *testing.T) {
	up := func(file, claim string) Batch {
		return Batch{Pass: 0, Index: 1, InputFileID: file, State: StateUploaded, Claim: claim, ClaimedAt: 100}
	}
	created := func(file, id, state string, done int) Batch {
		b := up(file, "")
		b.ID, b.State, b.Completed = id, state, done
		return b
	}
	for _, tc := range []struct {
		name         string
		mine, stored Batch
		want         Batch
		orphan, dup  string
	}{
		{"same upload, no claims", up("f1", ""), up("f1", ""), up("f1", ""), "", ""},
		{"my claim merged into a stored entry without one", up("f1", "me"), up("f1", ""), up("f1", "me"), "", ""},
		{"the stored claim wins", up("f1", "me"), up("f1", "other"), up("f1", "other"), "", ""},
		{"two uploads: the stored one wins, mine is deleted", up("f-mine", ""), up("f-stored", ""), up("f-stored", ""), "f-mine", ""},
		{"two uploads, claimed by the other: mine is deleted", up("f-mine", "me"), up("f-stored", "other"), up("f-stored", "other"), "f-mine", ""},
		{"I created it, the stored entry has only my claim", created("f1", "b1", "validating", 0), up("f1", "me"), created("f1", "b1", "validating", 0), "", ""},
		{"I created it over a stale claim another writer took meanwhile", created("f1", "b1", "validating", 0), up("f1", "third"), created("f1", "b1", "validating", 0), "", ""},
		{"the other created it: adopted", up("f1", "me"), created("f1", "b1", "in_progress", 3), created("f1", "b1", "in_progress", 3), "", ""},
		{"the other created it from its own upload: mine is deleted", up("f-mine", ""), created("f-stored", "b1", "in_progress", 0), created("f-stored", "b1", "in_progress", 0), "f-mine", ""},
		{"two batches for one: mine is cancelled", created("f1", "b-mine", "validating", 0), created("f1", "b-stored", "validating", 0), created("f1", "b-stored", "validating", 0), "", "b-mine"},
		{"two batches from two uploads: mine cancelled and deleted", created("f-mine", "b-mine", "in_progress", 0), created("f-stored", "b-stored", "validating", 0), created("f-stored", "b-stored", "validating", 0), "f-mine", "b-mine"},
		{"same batch: my later state wins", created("f1", "b1", "completed", 50), created("f1", "b1", "in_progress", 10), created("f1", "b1", "completed", 50), "", ""},
		{"same batch: the stored later state wins", created("f1", "b1", "in_progress", 10), created("f1", "b1", "expired", 20), created("f1", "b1", "expired", 20), "", ""},
		{"same batch and state: more lines done wins", created("f1", "b1", "in_progress", 30), created("f1", "b1", "in_progress", 10), created("f1", "b1", "in_progress", 30), "", ""},
		{"same batch, cancelling after in_progress", created("f1", "b1", "in_progress", 30), created("f1", "b1", "cancelling", 0), created("f1", "b1", "cancelling", 0), "", ""},
		{"a later try (after the token cap) wins", func() Batch { b := up("f1", ""); b.Try = 1; return b }(),
			created("f1", "b1", "failed", 0), func() Batch { b := up("f1", ""); b.Try = 1; return b }(), "", ""},
		{"the stored later try wins", created("f1", "b1", "failed", 0),
			func() Batch { b := created("f1", "b2", "validating", 0); b.Try = 1; return b }(),
			func() Batch { b := created("f1", "b2", "validating", 0); b.Try = 1; return b }(), "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, orphan, dup := mergeBatch(tc.mine, tc.stored)
			if got != tc.want || orphan != tc.orphan || dup != tc.dup {
				t.Fatalf("got %+v, orphan %q, duplicate %q\nwant %+v, orphan %q, duplicate %q", got, orphan, dup, tc.want, tc.orphan, tc.dup)
			}
		})
	}
}

func TestMergeRecords(t *testing.T) {
	rec := func(gen int, done bool, passes []Pass, batches ...Batch) Record {
		return Record{Version: 1, Ingestion: "uid-1", Chunk: 3, Generation: gen, Done: done, Passes: passes, Batches: batches}
	}
	b := func(pass, index int, file, id string) Batch {
		st := StateUploaded
		if id != "" {
			st = "validating"
		}
		return Batch{Pass: pass, Index: index, InputFileID: file, ID: id, State: st}
	}
	for _, tc := range []struct {
		name          string
		mine, stored  Record
		want          Record
		orphans, dups []string
		err           error
	}{
		{
			name:   "the other is ahead: its batches and NextRow are taken, mine kept",
			mine:   rec(0, false, []Pass{{NextRow: 50}}, b(0, 0, "f0", "b0")),
			stored: rec(0, false, []Pass{{NextRow: 150}}, b(0, 0, "f0", "b0"), b(0, 1, "f1", ""), b(0, 2, "f2", "b2")),
			want:   rec(0, false, []Pass{{NextRow: 150}}, b(0, 0, "f0", "b0"), b(0, 1, "f1", ""), b(0, 2, "f2", "b2")),
		},
		{
			name:   "mine is ahead: nothing of mine is lost, in creation order",
			mine:   rec(0, false, []Pass{{NextRow: 200, Submitted: true}, {}}, b(0, 0, "f0", "b0"), b(0, 1, "f1", "b1"), b(1, 0, "g0", "")),
			stored: rec(0, false, []Pass{{NextRow: 100}}, b(0, 0, "f0", "")),
			want:   rec(0, false, []Pass{{NextRow: 200, Submitted: true}, {}}, b(0, 0, "f0", "b0"), b(0, 1, "f1", "b1"), b(1, 0, "g0", "")),
		},
		{
			name:    "both uploaded the same batch and both created another",
			mine:    rec(0, false, []Pass{{NextRow: 100}}, b(0, 0, "f0-mine", ""), b(0, 1, "f1", "b1-mine")),
			stored:  rec(0, false, []Pass{{NextRow: 100}}, b(0, 0, "f0", ""), b(0, 1, "f1", "b1")),
			want:    rec(0, false, []Pass{{NextRow: 100}}, b(0, 0, "f0", ""), b(0, 1, "f1", "b1")),
			orphans: []string{"f0-mine"}, dups: []string{"b1-mine"},
		},
		{
			name:   "I finished: done is kept",
			mine:   rec(2, true, []Pass{{NextRow: 10, Submitted: true}}, b(0, 0, "f0", "b0")),
			stored: rec(2, false, []Pass{{NextRow: 10, Submitted: true}}, b(0, 0, "f0", "b0")),
			want:   rec(2, true, []Pass{{NextRow: 10, Submitted: true}}, b(0, 0, "f0", "b0")),
		},
		{
			name:   "the other finished the chunk: step back",
			mine:   rec(2, false, []Pass{{NextRow: 10, Submitted: true}}, b(0, 0, "f0", "b0")),
			stored: rec(2, true, []Pass{{NextRow: 10, Submitted: true}}, b(0, 0, "f0", "b0")),
			err:    ErrSteppedBack,
		},
		{
			name:   "the other started the next generation: step back",
			mine:   rec(2, false, []Pass{{}}),
			stored: rec(3, false, []Pass{{}}),
			err:    ErrSteppedBack,
		},
		{
			name:   "I started the next generation over the finished record, rewritten late",
			mine:   rec(3, false, []Pass{{NextRow: 5}}, b(0, 0, "h0", "")),
			stored: rec(2, true, []Pass{{NextRow: 10, Submitted: true}}, b(0, 0, "f0", "b0")),
			want:   rec(3, false, []Pass{{NextRow: 5}}, b(0, 0, "h0", "")),
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := merge(tc.mine, tc.stored)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("want %v, got %v (%+v)", tc.err, err, got.rec)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprintf("%+v", got.rec) != fmt.Sprintf("%+v", tc.want) || !slices.Equal(got.orphanFiles, tc.orphans) || !slices.Equal(got.duplicates, tc.dups) {
				t.Fatalf("got %+v\norphans %v, duplicates %v\nwant %+v\norphans %v, duplicates %v", got.rec, got.orphanFiles, got.duplicates, tc.want, tc.orphans, tc.dups)
			}
		})
	}
	// A record of another ingestion or chunk stored under the key is refused, permanently.
	other := rec(0, false, nil)
	other.Chunk = 4
	if _, err := merge(rec(0, false, nil), other); err == nil {
		t.Fatal("merged another chunk's record")
	} else if _, ok := worker.AsPermanent(err); !ok {
		t.Fatalf("want a permanent error, got %v", err)
	}
}
