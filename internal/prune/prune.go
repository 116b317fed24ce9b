// Package prune decides which vectors spec.sync.deleteMissing deletes and deletes them: the
// vectors listed under the ingestion's id prefix (spec.mapping.idPrefix) in the namespaces it
// writes to whose ids are not in the file and whose owner marker says they are this source's
// (package ownership), unless the delete guard says they are too many. A raw prefix listing
// also returns other sources' ids that start with the same characters: their owner is fetched
// before anything is deleted, and they are counted and left alone.
//
// Memory: the file's keys are held as sorted 64-bit hashes, 8 bytes a row (1M rows: 8 MiB), not
// as strings. A hash collision can only make a vector look as if it were in the file, so it is
// kept, never deleted by mistake. The ids to delete are held as strings until deleting starts,
// but only while the guard can still pass: at most about maxDeletePercent/(100-maxDeletePercent)
// of the file's rows (with the default 10 %, 11 % of them: 110,000 ids of ~40 bytes for 1M rows,
// ~5 MiB); past that only their count is kept for the guard's message.
package prune

import (
	"context"
	"fmt"
	"hash/maphash"
	"maps"
	"slices"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/vectordb-io/vectordb-operator/internal/ownership"
)

// Index is what pruning needs of the target index (*pinecone.Upserter has it).
type Index interface {
	// ListPage returns one page of ids of namespace starting with prefix, and the next page's
	// token ("" after the last).
	ListPage(ctx context.Context, namespace, prefix, token string) ([]string, string, error)
	// FetchMetadataValues returns the value of metadata key of those of ids namespace holds
	// (nil: the vector lacks the key; absent: the vector is gone).
	FetchMetadataValues(ctx context.Context, namespace string, ids []string, key string) (map[string]*structpb.Value, error)
	// DeleteIDs deletes ids from namespace and returns how many the accepted requests carried.
	DeleteIDs(ctx context.Context, namespace string, ids []string) (int64, error)
}

// FileIDs is the set of vector keys (namespace, id) a file writes. Add every key, then Seal
// before Has.
type FileIDs struct {
	seed       maphash.Seed
	hashes     []uint64
	namespaces map[string]bool
	sealed     bool
}

// NewFileIDs returns an empty set.
func NewFileIDs() *FileIDs {
	return &FileIDs{seed: maphash.MakeSeed(), namespaces: map[string]bool{}}
}

func (f *FileIDs) hash(namespace, id string) uint64 {
	var h maphash.Hash
	h.SetSeed(f.seed)
	h.WriteString(namespace)
	h.WriteByte(0)
	h.WriteString(id)
	return h.Sum64()
}

// Add records that the file writes id into namespace.
func (f *FileIDs) Add(namespace, id string) {
	f.hashes = append(f.hashes, f.hash(namespace, id))
	f.namespaces[namespace] = true
	f.sealed = false
}

// Seal sorts the set (and drops repeated keys) so Has can search it.
func (f *FileIDs) Seal() {
	if f.sealed {
		return
	}
	slices.Sort(f.hashes)
	f.hashes = slices.Compact(f.hashes)
	f.hashes = slices.Clip(f.hashes)
	f.sealed = true
}

// Has reports whether the file writes id into namespace (sealing the set first if needed, so
// only concurrent-safe once sealed).
func (f *FileIDs) Has(namespace, id string) bool {
	if !f.sealed {
		f.Seal()
	}
	_, ok := slices.BinarySearch(f.hashes, f.hash(namespace, id))
	return ok
}

// Len is the number of distinct keys (after Seal).
func (f *FileIDs) Len() int { return len(f.hashes) }

// Namespaces are the namespaces the file writes to, plus extra (the target's default namespace,
// which holds the vectors of a file whose rows all moved elsewhere), sorted.
func (f *FileIDs) Namespaces(extra ...string) []string {
	set := maps.Clone(f.namespaces)
	for _, ns := range extra {
		set[ns] = true
	}
	return slices.Sorted(maps.Keys(set))
}

// Exceeds is the delete guard: deleting missing of the listed vectors under the prefix is more
// than maxPercent of them. Nothing to delete never exceeds.
func Exceeds(missing, listed int64, maxPercent int32) bool {
	if missing <= 0 {
		return false
	}
	return missing*100 > int64(maxPercent)*listed
}

// certain reports whether the guard will stop the run whatever the rest of the listing finds:
// at the end, listed ≤ missing + fileKeys (each listed id is either missing or one of the file's),
// and missing/(missing+fileKeys) only grows with missing.
func certain(missing int64, fileKeys int, maxPercent int32) bool {
	return Exceeds(missing, missing+int64(fileKeys), maxPercent)
}

// MinPercent is the smallest maxDeletePercent that lets missing of listed be deleted.
func MinPercent(missing, listed int64) int64 {
	if missing <= 0 || listed <= 0 {
		return 0
	}
	return (missing*100 + listed - 1) / listed
}

// GuardError is the delete guard stopping a run: nothing was deleted.
type GuardError struct {
	Prefix          string
	Missing, Listed int64
	MaxPercent      int32
}

func (e *GuardError) Error() string {
	return fmt.Sprintf("delete guard: %d of the %d vectors under id prefix %q (%.1f%%) are not in the file, more than spec.sync.maxDeletePercent (%d%%); nothing was deleted. "+
		"If the file is complete and they should go, create a new CsvIngestion with spec.sync.maxDeletePercent of at least %d (spec.sync is immutable)",
		e.Missing, e.Listed, e.Prefix, percent(e.Missing, e.Listed), e.MaxPercent, MinPercent(e.Missing, e.Listed))
}

func percent(part, whole int64) float64 {
	if whole <= 0 {
		return 0
	}
	return float64(part) * 100 / float64(whole)
}

// Plan is what Find found: the vectors under the prefix, those of them not in the file, and
// what the ownership check (package ownership) made of those.
type Plan struct {
	Prefix     string
	Namespaces []string
	// Listed are the vectors under the prefix in Namespaces; Missing those not in the file.
	Listed, Missing int64
	// Of Missing: Owned carry this source's marker, Adopted are unmarked but adopted
	// (spec.sync.adoptUnmarked); both are deleted. Foreign carry another source's marker,
	// Unmarked none; both are left alone. Gone were deleted by someone else meanwhile.
	Owned, Adopted, Foreign, Unmarked, Gone int64
	// ListRequests are the list pages read, FetchRequests the owner look-ups.
	ListRequests, FetchRequests int64
	maxPercent                  int32
	fileKeys                    int
	// toDelete holds the deletable ids by namespace; dropped once the guard is certain to stop.
	mu       sync.Mutex
	toDelete map[string][]string
	dropped  bool
}

// Deletable is how many vectors the plan deletes (if the guard lets it).
func (p *Plan) Deletable() int64 { return p.Owned + p.Adopted }

// LeftAlone are the vectors under the prefix, not in the file, that belong to another source
// (another marker, or none and not adopted).
func (p *Plan) LeftAlone() int64 { return p.Foreign + p.Unmarked }

// Owned are the vectors under the prefix this source owns: the listed ones minus those the
// check found to be another's or gone (ids the file has count as its own).
func (p *Plan) ownedListed() int64 { return p.Listed - p.Foreign - p.Unmarked - p.Gone }

// Parallel is how many namespaces Find lists at once.
const Parallel = 4

// Find lists every id under owner.Prefix in namespaces (Parallel at a time), looks up the owner
// marker of each one the file does not have (in fetches of fetchBatch ids), and keeps those
// owner may delete.
func Find(ctx context.Context, idx Index, owner ownership.Owner, namespaces []string, file *FileIDs, maxPercent int32) (*Plan, error) {
	prefix := owner.Prefix
	if prefix == "" {
		// Never the whole namespace: the API requires the prefix, and this is the last line.
		return nil, fmt.Errorf("prune: empty id prefix: deleteMissing only deletes under spec.mapping.idPrefix")
	}
	// Sealed here, before the namespaces are listed in parallel: Has seals lazily, and two
	// goroutines sealing at once corrupt the set (and Len counts repeats until sealed).
	file.Seal()
	p := &Plan{Prefix: prefix, Namespaces: namespaces, maxPercent: maxPercent, fileKeys: file.Len(), toDelete: map[string][]string{}}
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(Parallel)
	for _, ns := range namespaces {
		g.Go(func() error { return p.findIn(ctx, idx, owner, ns, file) })
	}
	return p, g.Wait()
}

// fetchBatch is how many candidates one owner look-up carries (Pinecone's fetch limit).
const fetchBatch = 1000

func (p *Plan) findIn(ctx context.Context, idx Index, owner ownership.Owner, ns string, file *FileIDs) error {
	prefix := owner.Prefix
	var candidates []string
	check := func() error {
		if len(candidates) == 0 {
			return nil
		}
		vals, err := idx.FetchMetadataValues(ctx, ns, candidates, ownership.Key)
		if err != nil {
			return fmt.Errorf("look up the owners of %d vectors under %q in namespace %q: %w", len(candidates), prefix, ns, err)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		p.FetchRequests += int64((len(candidates) + fetchBatch - 1) / fetchBatch)
		for _, id := range candidates {
			v, present := vals[id]
			c := owner.Classify(id, marker(v, present))
			switch c {
			case ownership.Owned:
				p.Owned++
			case ownership.Adopted:
				p.Adopted++
			case ownership.Foreign:
				p.Foreign++
			case ownership.Unmarked:
				p.Unmarked++
			case ownership.Gone:
				p.Gone++
			}
			if c.Deletable() && !p.dropped {
				p.toDelete[ns] = append(p.toDelete[ns], id)
			}
		}
		if !p.dropped && certain(p.Deletable(), p.fileKeys, p.maxPercent) {
			p.toDelete, p.dropped = nil, true
		}
		candidates = candidates[:0]
		return nil
	}
	token := ""
	for {
		ids, next, err := idx.ListPage(ctx, ns, prefix, token)
		if err != nil {
			return fmt.Errorf("list ids under %q in namespace %q: %w", prefix, ns, err)
		}
		var missing int64
		for _, id := range ids {
			if !file.Has(ns, id) {
				missing++
				candidates = append(candidates, id)
			}
		}
		p.mu.Lock()
		p.ListRequests++
		p.Listed += int64(len(ids))
		p.Missing += missing
		p.mu.Unlock()
		if len(candidates) >= fetchBatch {
			if err := check(); err != nil {
				return err
			}
		}
		if next == "" {
			break
		}
		if next == token {
			return fmt.Errorf("list ids under %q in namespace %q: the index returned the same page token twice", prefix, ns)
		}
		token = next
	}
	return check()
}

func marker(v *structpb.Value, present bool) ownership.Marker {
	m := ownership.Marker{Present: present}
	if v == nil {
		return m
	}
	m.Set = true
	if s, ok := v.Kind.(*structpb.Value_StringValue); ok {
		m.Value = s.StringValue
	} else {
		m.NotString = true
	}
	return m
}

// Guard returns a *GuardError when the plan deletes more than the guard allows: the vectors to
// delete against the vectors under the prefix this source owns (another source's are not its
// to count).
func (p *Plan) Guard() error {
	if p.dropped || Exceeds(p.Deletable(), p.ownedListed(), p.maxPercent) {
		return &GuardError{Prefix: p.Prefix, Missing: p.Deletable(), Listed: p.ownedListed(), MaxPercent: p.maxPercent}
	}
	return nil
}

// Execute deletes the deletable ids, namespace by namespace, after checking the guard again. On
// error, deleted counts what was deleted before it.
func (p *Plan) Execute(ctx context.Context, idx Index) (deleted int64, err error) {
	if err := p.Guard(); err != nil {
		return 0, err
	}
	for _, ns := range slices.Sorted(maps.Keys(p.toDelete)) {
		ids := p.toDelete[ns]
		n, err := idx.DeleteIDs(ctx, ns, ids)
		deleted += n
		if err != nil {
			return deleted, fmt.Errorf("delete %d ids under %q from namespace %q (%d deleted so far): %w", len(ids), p.Prefix, ns, deleted, err)
		}
	}
	return deleted, nil
}

// Sizing of the sync step's deadline, deliberately slower than the measured rates
// (docs/benchmarks.md): a deadline that is too long only bounds a hang later, one that is too
// short fails a run whose chunks all succeeded.
const (
	// listedPerRow: the ids listed per row of the file, leaving room for as many vectors again
	// under the prefix that are not in it (another source's, or removed rows).
	listedPerRow = 2
	// listPageTime is one list page of MaxListLimit (100) ids.
	listPageTime = 250 * time.Millisecond
	// checkTime is one owner look-up or delete of up to 1,000 ids.
	checkTime = 500 * time.Millisecond
	// readRowsPerSecond: reading the file's ids from S3 (gzip included).
	readRowsPerSecond = 5000
	// minDeadline covers start-up, connections and small files.
	minDeadline = 10 * time.Minute
	// maxDeadlineRows bounds the rows Deadline sizes for (~10^12, some 3.6 years): past it the
	// arithmetic below would overflow time.Duration and give a negative deadline.
	maxDeadlineRows = 1 << 40
)

// Deadline is how long one attempt of the sync step may take for a file of rows rows: read the
// rows, list listedPerRow ids per row 100 a page in one namespace (namespaces are listed in
// parallel, so more of them only shortens it), and look up and delete every listed id that is
// not in the file, 1,000 a request.
func Deadline(rows int64) time.Duration {
	rows = min(max(rows, 0), maxDeadlineRows)
	listed := rows * listedPerRow
	pages := (listed + 99) / 100
	checks := 2 * ((listed - rows + 999) / 1000) // look-ups and deletes of the ids beyond the file's
	d := minDeadline + time.Duration(pages)*listPageTime + time.Duration(checks)*checkTime +
		time.Duration(rows/readRowsPerSecond)*time.Second
	return d.Round(time.Minute)
}
