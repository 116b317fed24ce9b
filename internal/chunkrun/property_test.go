package chunkrun_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/vectordb-io/vectordb-operator/internal/chunkrun"
	"github.com/vectordb-io/vectordb-operator/internal/csvplan"
	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/mapping"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	fakeopenai "github.com/vectordb-io/vectordb-operator/test/fakes/openai"
)

const (
	propMarker    = "zqxrefusedzqx"
	propOpenAIMsg = "Invalid input: refused by the test."
	propPCMsg     = "Vector refused by the test"
)

// hostileRow is one generated row: its raw CSV line and what must become of it ("" = upserted).
type hostileRow struct {
	line   string
	id, ns string // of an upserted row
	reason string
}

// genHostile writes a random CSV (BOM and quoted header or not, CRLF or not) whose rows are mostly
// ordinary and otherwise one of: a duplicate id (trimmed, same namespace) of an earlier ordinary row,
// invalid UTF-8, text the fake OpenAI refuses, an id the fake Pinecone refuses, text that sanitizes
// to nothing, a wrong field count, text after a closing quote. It returns the file and, per row,
// the expected outcome.
func genHostile(rng *rand.Rand, n int, refusedIDs map[string]bool) ([]byte, []hostileRow) {
	var b strings.Builder
	eol := "\n"
	if rng.IntN(2) == 0 {
		eol = "\r\n"
	}
	q := func(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
	quoteAll := rng.IntN(2) == 0
	field := func(s string) string {
		if quoteAll || strings.ContainsAny(s, ",\"\r\n") {
			return q(s)
		}
		return s
	}
	if rng.IntN(2) == 0 {
		b.WriteString("\xEF\xBB\xBF")
		if rng.IntN(2) == 0 {
			b.WriteString(eol) // a blank first line
		}
	}
	b.WriteString(strings.Join([]string{field("id"), field("formatted_text"), field("record_type"), field("title")}, ",") + eol)
	var rows []hostileRow
	var clean []int
	words := []string{"lamp", "chair", "北京", "naïve", "red, blue", "say \"hi\"", "two\nlines", "<b>bold</b>", "€5"}
	text := func() string {
		var parts []string
		for range 1 + rng.IntN(6) {
			parts = append(parts, words[rng.IntN(len(words))])
		}
		return strings.Join(parts, " ")
	}
	for i := range n {
		id := fmt.Sprintf("r%d-%d", i, rng.IntN(1000))
		ns := []string{"", "product", "event"}[rng.IntN(3)]
		txt, title := text(), text()
		r := hostileRow{id: id, ns: ns}
		line := ""
		switch k := rng.IntN(100); {
		case k < 8 && len(clean) > 0:
			orig := rows[clean[rng.IntN(len(clean))]]
			id = []string{orig.id, " " + orig.id, orig.id + "\t", "  " + orig.id + " "}[rng.IntN(4)]
			ns = orig.ns
			r.reason = chunkrun.ReasonDuplicateID
		case k < 12:
			txt = "caf\xe9 " + txt
			r.reason = mapping.ReasonInvalidUTF8
		case k < 15:
			txt += " " + propMarker
			r.reason = embedding.ReasonRefused
		case k < 18:
			refusedIDs["239."+id] = true
			r.reason = pinecone.ReasonRefused
		case k < 20:
			txt = "<p> &nbsp; </p>"
			r.reason = mapping.ReasonEmptyText
		case k < 22:
			line = strings.Join([]string{field(id), field(txt), field(ns)}, ",")
			r.reason = csvplan.ReasonWrongFieldCount
		case k < 24:
			line = strings.Join([]string{field(id), `"ab"cd`, field(ns), field(title)}, ",")
			r.reason = csvplan.ReasonUnbalancedQuote
		}
		if line == "" {
			line = strings.Join([]string{field(id), field(txt), field(ns), field(title)}, ",")
		}
		r.line = line
		if r.reason == "" {
			clean = append(clean, i)
		}
		rows = append(rows, r)
		b.WriteString(line + eol)
	}
	return []byte(b.String()), rows
}

// TestPropertyEveryRowUpsertedOrDeadLettered runs random files of ordinary and hostile rows
// through the planner and every chunk (MinIO, the strict fakes). Whatever the mix, every row ends
// either upserted (as the vector of its own row) or dead-lettered with the reason its hostility
// calls for, processed + failed + skipped equals the rows, and no chunk fails.
func TestPropertyEveryRowUpsertedOrDeadLettered(t *testing.T) {
	for seed := range uint64(8) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			e := newEnv(t, fakeopenai.Options{})
			e.openai.RefuseMarker(propMarker, propOpenAIMsg)
			rng := rand.New(rand.NewPCG(seed, 99))
			refused := map[string]bool{}
			data, rows := genHostile(rng, 200+rng.IntN(300), refused)
			e.index.RefuseVectors(func(id string) bool { return refused[id] }, propPCMsg)
			key := e.prefix + "hostile.csv"
			if seed%2 == 1 {
				var gz bytes.Buffer
				zw := gzip.NewWriter(&gz)
				_, _ = zw.Write(data)
				_ = zw.Close()
				data = gz.Bytes()
			}
			e.put(key, data)
			ing := e.ingestion(key)
			ing.Spec.Chunking.RowsPerChunk = []int32{37, 100, 1000, 64}[seed%4]
			ing.Spec.Embedding.MaxInputsPerRequest = int32(8 + rng.IntN(64))
			ing.Spec.Embedding.TokensPerMinute = 10000000
			ing.Spec.Embedding.RequestsPerMinute = 100000
			plan := e.plan(ing)
			if plan.TotalRows != int64(len(rows)) {
				t.Fatalf("plan has %d rows, generated %d", plan.TotalRows, len(rows))
			}
			results, err := e.runChunks(ing, plan, 3)
			if err != nil {
				t.Fatalf("a chunk failed: %v", err)
			}
			processed, failed, skipped := sum(results, func(r worker.Result) int64 { return r.Processed }),
				sum(results, func(r worker.Result) int64 { return r.Failed }), sum(results, func(r worker.Result) int64 { return r.Skipped })
			if processed+failed+skipped != int64(len(rows)) {
				t.Fatalf("processed %d + failed %d + skipped %d != %d rows", processed, failed, skipped, len(rows))
			}

			got := map[int64][2]string{}
			list, err := e.s3.ListObjectsV2(context.Background(), &s3.ListObjectsV2Input{
				Bucket: aws.String(bucket), Prefix: aws.String(ing.Spec.DeadLetter.KeyPrefix + ing.ObjectID() + "/")})
			if err != nil {
				t.Fatal(err)
			}
			for _, o := range list.Contents {
				data, err := e.get(aws.ToString(o.Key))
				if err != nil {
					t.Fatal(err)
				}
				for _, rec := range readCSV(t, data)[1:] {
					row, err := strconv.ParseInt(rec[len(rec)-3], 10, 64)
					if err != nil {
						t.Fatalf("dead letter row %q", rec)
					}
					if _, dup := got[row]; dup {
						t.Fatalf("row %d dead-lettered twice", row)
					}
					got[row] = [2]string{rec[len(rec)-2], rec[len(rec)-1]}
				}
			}
			var wantUpserted int
			for i, r := range rows {
				g, dead := got[int64(i)]
				if r.reason != "" {
					if !dead || g[0] != r.reason || g[1] == "" {
						t.Errorf("row %d (%q): dead-lettered as %q, want reason %s with a detail", i, r.line, g, r.reason)
					}
					continue
				}
				wantUpserted++
				if dead {
					t.Errorf("row %d (%q) dead-lettered as %q, want it upserted", i, r.line, g)
					continue
				}
				ns := r.ns
				if ns == "" {
					ns = "v2"
				}
				v, ok := e.index.Vectors(ns)["239."+r.id]
				if !ok || v.Metadata["record_index"] != float64(i) {
					t.Errorf("row %d (%q): vector %s in %q missing or from another row (%v)", i, r.line, r.id, ns, ok)
				}
			}
			if e.index.Count() != wantUpserted || processed != int64(wantUpserted) {
				t.Errorf("index holds %d vectors, processed %d, want %d", e.index.Count(), processed, wantUpserted)
			}
			t.Logf("%d rows: %d upserted, %d failed, %d skipped, %d chunks", len(rows), processed, failed, skipped, plan.Chunks())
		})
	}
}
