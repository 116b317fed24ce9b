package mapping

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"math"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
)

var testHeader = []string{"id", "formatted_text", "record_type", "price", "in_stock", "zip", "title", "notes"}

var testFixed = Fixed{
	DefaultNamespace: "v2",
	Source:           "s3_csv",
	S3Key:            "exports/239-200-300.csv",
	TaskID:           "task-1",
	QuestionID:       239,
	ChunkID:          3,
	ProcessedAt:      "2025-01-10T00:00:00Z",
}

func legacySpec() v1alpha1.MappingSpec {
	return v1alpha1.MappingSpec{
		IDColumn:   "id",
		IDPrefix:   "239.",
		TextColumn: "formatted_text",
		Sanitize:   SanitizeBasic,
		Metadata:   v1alpha1.MetadataSpec{Include: IncludeAll, TextField: DefaultTextField, TextMaxChars: 1000},
	}
}

func testRow() []string {
	return []string{" 12345 ", "<p>Hello&nbsp;world</p>", "product", "19.99", "TRUE", "02134", "", "n"}
}

func mustNew(t *testing.T, spec v1alpha1.MappingSpec, header []string, fixed Fixed) *Mapper {
	t.Helper()
	m, err := New(spec, header, fixed)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return m
}

func mustMap(t *testing.T, m *Mapper, row int64, fields []string) Record {
	t.Helper()
	rec, rerr := m.Map(row, fields)
	if rerr != nil {
		t.Fatalf("Map: %v", rerr)
	}
	return rec
}

func fixedWant(row int64, rowID string) map[string]any {
	return map[string]any{
		KeySource: "s3_csv", KeyS3Key: "exports/239-200-300.csv", KeyTaskID: "task-1", KeyQuestionID: 239.0,
		KeyChunkID: 3.0, KeyProcessedAt: "2025-01-10T00:00:00Z", KeyRecordIndex: float64(row), KeyRowID: rowID,
	}
}

func with(base map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(base)+len(kv)/2)
	for k, v := range base {
		out[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		out[kv[i].(string)] = kv[i+1]
	}
	return out
}

func TestMapRecord(t *testing.T) {
	m := mustNew(t, legacySpec(), testHeader, testFixed)
	rec := mustMap(t, m, 7, testRow())
	if rec.ID != "239.12345" || rec.Namespace != "v2" || rec.Text != "Hello world" || rec.Row != 7 {
		t.Fatalf("record = %+v", rec)
	}
	want := with(fixedWant(7, "12345"),
		"record_type", "product", "price", "19.99", "in_stock", "TRUE", "zip", "02134", "notes", "n",
		"text", "Hello world")
	if got := rec.MetadataMap(); !reflect.DeepEqual(got, want) {
		t.Fatalf("metadata\n got %v\nwant %v", got, want)
	}
}

func TestMapInferTypes(t *testing.T) {
	spec := legacySpec()
	spec.Metadata.InferTypes = true
	m := mustNew(t, spec, testHeader, testFixed)
	md := mustMap(t, m, 0, testRow()).MetadataMap()
	if md["price"] != 19.99 || md["in_stock"] != true || md["zip"] != "02134" || md["record_type"] != "product" {
		t.Fatalf("inferred metadata = %v", md)
	}
	// The fixed row_id stays a string even when it looks like a number.
	if md[KeyRowID] != "12345" {
		t.Fatalf("row_id = %#v", md[KeyRowID])
	}

	cases := []struct {
		in   string
		want any
	}{
		{"42", 42.0},
		{"-3.5", -3.5},
		{"1e3", 1000.0},
		{"2.5E-1", 0.25},
		{"0", 0.0},
		{"0.5", 0.5},
		{"9007199254740992", 9007199254740992.0},
		{"true", true},
		{"False", false},
		{"tRuE", true},
		{"9007199254740993", "9007199254740993"}, // beyond 2^53: a float64 would change it
		{"1e400", "1e400"},
		{"02134", "02134"},
		{"+5", "+5"},
		{".5", ".5"},
		{"1.", "1."},
		{"1,000", "1,000"},
		{"NaN", "NaN"},
		{"Inf", "Inf"},
		{"0x10", "0x10"},
		{"1_000", "1_000"},
		{"yes", "yes"},
		{"1", 1.0},
	}
	for _, tc := range cases {
		if got := m.value(tc.in).Any(); got != tc.want {
			t.Errorf("value(%q) = %#v, want %#v", tc.in, got, tc.want)
		}
	}
}

func TestMapMetadataSelection(t *testing.T) {
	row := []string{"1", "body", "product", "9", "true", "02134", "A title", "a note"}
	base := with(fixedWant(0, "1"), "text", "body")
	cases := []struct {
		name string
		md   v1alpha1.MetadataSpec
		want map[string]any
	}{
		{"all", v1alpha1.MetadataSpec{Include: IncludeAll, TextField: "text"},
			with(base, "record_type", "product", "price", "9", "in_stock", "true", "zip", "02134", "title", "A title", "notes", "a note")},
		{"empty include means all", v1alpha1.MetadataSpec{TextField: "text", Exclude: []string{"zip", "notes", "title"}},
			with(base, "record_type", "product", "price", "9", "in_stock", "true")},
		{"all less exclude", v1alpha1.MetadataSpec{Include: IncludeAll, TextField: "text", Exclude: []string{"price", "notes", "not_a_column"}},
			with(base, "record_type", "product", "in_stock", "true", "zip", "02134", "title", "A title")},
		{"columns", v1alpha1.MetadataSpec{Include: IncludeColumns, Columns: []string{"title", "price"}, TextField: "text"},
			with(base, "title", "A title", "price", "9")},
		{"columns less exclude", v1alpha1.MetadataSpec{Include: IncludeColumns, Columns: []string{"title", "price"}, Exclude: []string{"price"}, TextField: "text"},
			with(base, "title", "A title")},
		{"columns may name the id and text columns", v1alpha1.MetadataSpec{Include: IncludeColumns, Columns: []string{"id", "formatted_text"}, TextField: "text"},
			with(base, "id", "1", "formatted_text", "body")},
		{"none keeps fixed fields and text", v1alpha1.MetadataSpec{Include: IncludeNone, TextField: "text"}, base},
		{"empty textField leaves text out", v1alpha1.MetadataSpec{Include: IncludeNone}, fixedWant(0, "1")},
		{"renamed textField", v1alpha1.MetadataSpec{Include: IncludeNone, TextField: "body"}, with(fixedWant(0, "1"), "body", "body")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := legacySpec()
			spec.Metadata = tc.md
			got := mustMap(t, mustNew(t, spec, testHeader, testFixed), 0, row).MetadataMap()
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("metadata\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestMapOmitsEmptyValues(t *testing.T) {
	spec := legacySpec()
	spec.Metadata.InferTypes = true
	m := mustNew(t, spec, testHeader, Fixed{ProcessedAt: "2025-01-10T00:00:00Z"})
	rec := mustMap(t, m, 0, []string{"1", "body", "", "  ", "\t", "", "", ""})
	want := map[string]any{KeyChunkID: 0.0, KeyProcessedAt: "2025-01-10T00:00:00Z", KeyRecordIndex: 0.0, KeyRowID: "1", "text": "body"}
	if got := rec.MetadataMap(); !reflect.DeepEqual(got, want) {
		t.Fatalf("metadata\n got %v\nwant %v", got, want)
	}
	for _, f := range rec.Metadata {
		if f.Value.Kind == KindString && f.Value.Str == "" {
			t.Fatalf("empty value for %q", f.Key)
		}
	}
}

func TestFixedFields(t *testing.T) {
	m := mustNew(t, legacySpec(), testHeader, Fixed{DefaultNamespace: "v2", ChunkID: 1})
	md := mustMap(t, m, 5, testRow()).MetadataMap()
	for _, k := range []string{KeySource, KeyS3Key, KeyTaskID, KeyQuestionID} {
		if _, ok := md[k]; ok {
			t.Errorf("%s present although unknown: %v", k, md[k])
		}
	}
	ts, ok := md[KeyProcessedAt].(string)
	if !ok {
		t.Fatalf("processed_at missing: %v", md)
	}
	parsed, err := time.Parse(time.RFC3339, ts)
	if err != nil || !strings.HasSuffix(ts, "Z") || time.Since(parsed) > time.Hour || time.Until(parsed) > time.Hour {
		t.Fatalf("processed_at %q: %v", ts, err)
	}
	if md[KeyChunkID] != 1.0 || md[KeyRecordIndex] != 5.0 || md[KeyRowID] != "12345" {
		t.Fatalf("fixed fields = %v", md)
	}
	if got := FormatTime(time.Date(2025, 1, 10, 17, 45, 23, 0, time.FixedZone("x", -5*3600))); got != "2025-01-10T22:45:23Z" {
		t.Fatalf("FormatTime = %q", got)
	}
}

func TestTextMaxCharsMultibyte(t *testing.T) {
	spec := legacySpec()
	spec.Metadata.TextMaxChars = 12
	m := mustNew(t, spec, testHeader, testFixed)
	text := strings.Repeat("é", 10) + strings.Repeat("😀", 5)
	rec := mustMap(t, m, 0, []string{"1", text, "", "", "", "", "", ""})
	if rec.Text != text {
		t.Fatalf("embedded text was cut: %q", rec.Text)
	}
	got := rec.MetadataMap()["text"].(string)
	if want := strings.Repeat("é", 10) + strings.Repeat("😀", 2); got != want {
		t.Fatalf("metadata text = %q, want %q", got, want)
	}

	// Exactly textMaxChars runes is not cut; the default applies when it is 0.
	spec.Metadata.TextMaxChars = 0
	m = mustNew(t, spec, testHeader, testFixed)
	long := strings.Repeat("ж", 1500)
	got = mustMap(t, m, 0, []string{"1", long, "", "", "", "", "", ""}).MetadataMap()["text"].(string)
	if n := utf8.RuneCountInString(got); n != DefaultTextMaxChars || !utf8.ValidString(got) {
		t.Fatalf("default cut: %d runes, valid %v", n, utf8.ValidString(got))
	}
}

func TestNamespaceRouting(t *testing.T) {
	spec := legacySpec()
	spec.NamespaceColumn = "record_type"
	m := mustNew(t, spec, testHeader, testFixed)
	for _, tc := range []struct{ value, want string }{
		{"product", "product"},
		{" auction ", "auction"},
		{"", "v2"},
		{"   ", "v2"},
	} {
		row := testRow()
		row[2] = tc.value
		if got := mustMap(t, m, 0, row).Namespace; got != tc.want {
			t.Errorf("namespace for %q = %q, want %q", tc.value, got, tc.want)
		}
	}
	// The namespace column stays in metadata (legacy record_type did).
	if got := mustMap(t, m, 0, testRow()).MetadataMap()["record_type"]; got != "product" {
		t.Fatalf("record_type metadata = %v", got)
	}
	// Without namespaceColumn every row goes to the default namespace.
	m = mustNew(t, legacySpec(), testHeader, Fixed{DefaultNamespace: ""})
	if got := mustMap(t, m, 0, testRow()).Namespace; got != "" {
		t.Fatalf("namespace = %q, want the default (empty)", got)
	}
}

func TestTextTemplate(t *testing.T) {
	spec := legacySpec()
	spec.TextColumn = ""
	spec.TextTemplate = `{{.title}}: {{.notes}}{{if .zip}} ({{index . "zip"}}){{end}}`
	m := mustNew(t, spec, testHeader, testFixed)
	rec := mustMap(t, m, 0, []string{"1", "ignored", "p", "1", "true", "02134", "<b>Big</b> &amp; bold", "note"})
	if rec.Text != "Big & bold: note (02134)" {
		t.Fatalf("text = %q", rec.Text)
	}
	// With a template there is no text column: formatted_text becomes metadata like any other.
	if got := rec.MetadataMap()["formatted_text"]; got != "ignored" {
		t.Fatalf("formatted_text metadata = %v", got)
	}
	// A second row gets its own values (the data map is reused).
	rec2 := mustMap(t, m, 1, []string{"2", "x", "p", "1", "true", "", "Other", "n2"})
	if rec2.Text != "Other: n2" || rec.Text != "Big & bold: note (02134)" {
		t.Fatalf("texts = %q, %q", rec.Text, rec2.Text)
	}
}

func TestNewErrors(t *testing.T) {
	cases := []struct {
		name   string
		spec   func(*v1alpha1.MappingSpec)
		header []string
		want   []string // substrings of the error
	}{
		{"missing columns are all listed with the header", func(s *v1alpha1.MappingSpec) {
			s.IDColumn, s.TextColumn, s.NamespaceColumn = "uid", "body", "kind"
			s.Metadata = v1alpha1.MetadataSpec{Include: IncludeColumns, Columns: []string{"nope", "title"}}
		}, testHeader, []string{`idColumn "uid"`, `textColumn "body"`, `namespaceColumn "kind"`, `metadata.columns "nope"`, `"formatted_text"`}},
		{"named id column missing", func(s *v1alpha1.MappingSpec) { s.IDColumn = "key" },
			[]string{"id", "formatted_text"}, []string{`idColumn "key"`}},
		{"template parse error", func(s *v1alpha1.MappingSpec) { s.TextColumn, s.TextTemplate = "", "{{.title" },
			testHeader, []string{"textTemplate", "{{.title"}},
		{"template names a missing column", func(s *v1alpha1.MappingSpec) {
			s.TextColumn, s.TextTemplate = "", `{{.title}} {{$.summary}} {{index . "body text"}}`
		}, testHeader, []string{`textTemplate "summary"`, `textTemplate "body text"`}},
		{"both text sources", func(s *v1alpha1.MappingSpec) { s.TextTemplate = "{{.title}}" }, testHeader, []string{"not both"}},
		{"no text source", func(s *v1alpha1.MappingSpec) { s.TextColumn = "" }, testHeader, []string{"textColumn or textTemplate"}},
		{"unknown sanitize", func(s *v1alpha1.MappingSpec) { s.Sanitize = "strict" }, testHeader, []string{`"strict"`}},
		{"unknown include", func(s *v1alpha1.MappingSpec) { s.Metadata.Include = "some" }, testHeader, []string{`"some"`}},
		{"columns without a list", func(s *v1alpha1.MappingSpec) { s.Metadata.Include = IncludeColumns }, testHeader, []string{"at least one"}},
		{"negative textMaxChars", func(s *v1alpha1.MappingSpec) { s.Metadata.TextMaxChars = -1 }, testHeader, []string{"textMaxChars"}},
		{"column named like a fixed field", func(s *v1alpha1.MappingSpec) {},
			[]string{"id", "formatted_text", "source", "text"}, []string{`"source"`, `"text"`, "metadata.exclude"}},
		{"duplicated metadata column", func(s *v1alpha1.MappingSpec) {},
			[]string{"id", "formatted_text", "a", "a"}, []string{`metadata "a"`}},
		{"duplicated id column", func(s *v1alpha1.MappingSpec) { s.Metadata.Include = IncludeNone },
			[]string{"id", "formatted_text", "id"}, []string{`idColumn "id"`}},
		{"blank header name with include all", func(s *v1alpha1.MappingSpec) {},
			[]string{"id", "formatted_text", ""}, []string{"column 3 has no name"}},
		{"invalid UTF-8 header", func(s *v1alpha1.MappingSpec) {},
			[]string{"id", "formatted_text", "a\xff"}, []string{"column 3", "UTF-8"}},
		{"empty header", func(s *v1alpha1.MappingSpec) {}, nil, []string{"no columns"}},
		{"invalid idPrefix", func(s *v1alpha1.MappingSpec) { s.IDPrefix = "\xff." }, testHeader, []string{"idPrefix"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := legacySpec()
			tc.spec(&spec)
			_, err := New(spec, tc.header, testFixed)
			if err == nil {
				t.Fatal("New succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestNewAcceptsWorkarounds(t *testing.T) {
	// Each header problem above has a way out that New accepts.
	spec := legacySpec()
	spec.Metadata.Exclude = []string{"source", "text"}
	mustNew(t, spec, []string{"id", "formatted_text", "source", "text"}, testFixed)

	spec = legacySpec()
	spec.Metadata.Exclude = []string{"a"}
	mustNew(t, spec, []string{"id", "formatted_text", "a", "a"}, testFixed)

	spec = legacySpec()
	spec.Metadata = v1alpha1.MetadataSpec{Include: IncludeColumns, Columns: []string{"b"}}
	mustNew(t, spec, []string{"id", "formatted_text", "", "b"}, testFixed)

	// A byte-order mark on the first column name is ignored.
	m := mustNew(t, legacySpec(), []string{"\uFEFFid", "formatted_text"}, testFixed)
	if rec := mustMap(t, m, 0, []string{"9", "x"}); rec.ID != "239.9" {
		t.Fatalf("id = %q", rec.ID)
	}
}

func TestRowErrors(t *testing.T) {
	nsSpec := legacySpec()
	nsSpec.NamespaceColumn = "record_type"
	tmplSpec := legacySpec()
	tmplSpec.TextColumn, tmplSpec.TextTemplate = "", "{{slice .title 5}}"

	row := func(edit func([]string)) []string {
		r := testRow()
		edit(r)
		return r
	}
	cases := []struct {
		name   string
		spec   v1alpha1.MappingSpec
		fields []string
		reason string
	}{
		{"too few fields", legacySpec(), []string{"1", "x"}, ReasonWrongFieldCount},
		{"too many fields", legacySpec(), append(testRow(), "extra"), ReasonWrongFieldCount},
		{"no fields", legacySpec(), nil, ReasonWrongFieldCount},
		{"empty id", legacySpec(), row(func(r []string) { r[0] = "" }), ReasonMissingID},
		{"blank id", legacySpec(), row(func(r []string) { r[0] = " \t" }), ReasonMissingID},
		{"invalid UTF-8 id", legacySpec(), row(func(r []string) { r[0] = "a\xffb" }), ReasonInvalidUTF8},
		{"invalid UTF-8 text", legacySpec(), row(func(r []string) { r[1] = "caf\xe9" }), ReasonInvalidUTF8},
		{"invalid UTF-8 metadata", legacySpec(), row(func(r []string) { r[7] = "\xc3" }), ReasonInvalidUTF8},
		{"invalid UTF-8 namespace", nsSpec, row(func(r []string) { r[2] = "\xed\xa0\x80" }), ReasonInvalidUTF8},
		{"NUL in id", legacySpec(), row(func(r []string) { r[0] = "a\x00b" }), ReasonInvalidID},
		{"id too long", legacySpec(), row(func(r []string) { r[0] = strings.Repeat("9", MaxIDBytes-len("239.")+1) }), ReasonIDTooLong},
		{"text empty after sanitize", legacySpec(), row(func(r []string) { r[1] = "<br/> &nbsp; <p></p>" }), ReasonEmptyText},
		{"text empty", legacySpec(), row(func(r []string) { r[1] = "" }), ReasonEmptyText},
		{"template fails", tmplSpec, row(func(r []string) { r[6] = "abc" }), ReasonTemplateError},
		{"namespace too long", nsSpec, row(func(r []string) { r[2] = strings.Repeat("n", MaxNamespaceChars+1) }), ReasonBadNamespace},
		{"namespace with NUL", nsSpec, row(func(r []string) { r[2] = "a\x00" }), ReasonBadNamespace},
		{"metadata too large", legacySpec(), row(func(r []string) { r[7] = strings.Repeat("x", MetadataBudget) }), ReasonMetadataTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := mustNew(t, tc.spec, testHeader, testFixed)
			rec, rerr := m.Map(42, tc.fields)
			if rerr == nil {
				t.Fatalf("Map succeeded: %+v", rec)
			}
			if rerr.Reason != tc.reason || rerr.Row != 42 || rerr.Detail == "" {
				t.Fatalf("RowError = %+v, want reason %s for row 42 with a detail", rerr, tc.reason)
			}
			if !strings.Contains(rerr.Error(), tc.reason) {
				t.Fatalf("Error() = %q", rerr.Error())
			}
		})
	}
}

func TestRowLimitsAccepted(t *testing.T) {
	spec := legacySpec()
	spec.NamespaceColumn = "record_type"
	m := mustNew(t, spec, testHeader, testFixed)
	r := testRow()
	r[0] = strings.Repeat("9", MaxIDBytes-len("239."))
	r[2] = strings.Repeat("ñ", MaxNamespaceChars) // characters, not bytes
	rec := mustMap(t, m, 0, r)
	if len(rec.ID) != MaxIDBytes || utf8.RuneCountInString(rec.Namespace) != MaxNamespaceChars {
		t.Fatalf("id %d bytes, namespace %d chars", len(rec.ID), utf8.RuneCountInString(rec.Namespace))
	}
}

// jsonSize is the metadata's size as JSON without HTML escaping.
func jsonSize(t *testing.T, md map[string]any) int {
	t.Helper()
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(md); err != nil {
		t.Fatal(err)
	}
	return b.Len() - 1 // Encode adds a newline
}

func TestMetadataSizeTrimsTextFirst(t *testing.T) {
	spec := legacySpec()
	spec.Metadata.TextMaxChars = 40000
	m := mustNew(t, spec, testHeader, testFixed)
	text := strings.Repeat(`ab"\`, 10000) // quotes and backslashes take two bytes in JSON

	// Other metadata leaves room for part of the text: it is shortened to fit.
	r := testRow()
	r[1] = text
	r[7] = strings.Repeat("n", 30000)
	rec := mustMap(t, m, 0, r)
	md := rec.MetadataMap()
	got, ok := md["text"].(string)
	if !ok || got == "" || len(got) >= len(text) || !strings.HasPrefix(text, got) {
		t.Fatalf("text not shortened: %d bytes", len(got))
	}
	if size := pineconeSize(t, rec); size > MetadataBudget || size < MetadataBudget-10 {
		t.Fatalf("metadata is %d bytes as Pinecone measures; want just under %d", size, MetadataBudget)
	}
	if rec.Text != text {
		t.Fatal("the embedded text must not be shortened")
	}

	// Other metadata leaves no room: the text field is dropped and the row still succeeds, up to
	// exactly the limit; one byte more fails the row.
	noText := legacySpec()
	noText.Metadata.TextField = ""
	r[7] = ""
	base := pineconeSize(t, mustMap(t, mustNew(t, noText, testHeader, testFixed), 0, r))
	r[7] = strings.Repeat("n", MetadataBudget-base-len(`,"notes":""`))
	rec = mustMap(t, m, 0, r)
	md = rec.MetadataMap()
	if _, ok := md["text"]; ok {
		t.Fatalf("text kept: %d bytes", len(md["text"].(string)))
	}
	if size := pineconeSize(t, rec); size != MetadataBudget {
		t.Fatalf("metadata is %d bytes, want exactly %d", size, MetadataBudget)
	}
	r[7] += "n"
	if _, rerr := m.Map(0, r); rerr == nil || rerr.Reason != ReasonMetadataTooLarge {
		t.Fatalf("one byte over the limit: %v", rerr)
	}
}

// Invalid UTF-8 in a column the mapping uses fails the row (counted, dead-lettered, with the
// column and the bytes); it is never silently replaced. Columns the mapping does not read do not
// matter.
func TestInvalidUTF8FailsTheRowNamingTheColumn(t *testing.T) {
	m := mustNew(t, legacySpec(), testHeader, testFixed)
	r := testRow()
	r[1] = "caf\xe9 ok"
	_, rerr := m.Map(0, r)
	if rerr == nil || rerr.Reason != ReasonInvalidUTF8 || !strings.Contains(rerr.Detail, `"formatted_text"`) ||
		!strings.Contains(rerr.Detail, "byte 3") || !strings.Contains(rerr.Detail, "e9") || !strings.Contains(rerr.Detail, "encoding") {
		t.Fatalf("RowError = %+v", rerr)
	}
	spec := legacySpec()
	spec.Metadata.Exclude = []string{"notes"}
	r = testRow()
	r[7] = "bad\xff"
	rec := mustMap(t, mustNew(t, spec, testHeader, testFixed), 0, r)
	if _, err := rec.MetadataStruct(); err != nil {
		t.Fatalf("MetadataStruct: %v", err)
	}
}

// Without idColumn, the column named id is used when there is one (the old default); otherwise
// the id is derived from the whole row: deterministic, different for different rows, the same for
// identical rows, and independent of the chunk.
func TestDerivedIDWithoutIDColumn(t *testing.T) {
	spec := legacySpec()
	spec.IDColumn = ""
	if got := ResolveIDColumn(spec, []string{"\uFEFFid", "x"}); got != "id" {
		t.Fatalf("ResolveIDColumn with an id column = %q", got)
	}
	header := []string{"formatted_text", "title"}
	if got := ResolveIDColumn(spec, header); got != "" {
		t.Fatalf("ResolveIDColumn without an id column = %q", got)
	}
	m := mustNew(t, spec, header, testFixed)
	a := mustMap(t, m, 0, []string{"hello", "t1"})
	b := mustMap(t, mustNew(t, spec, header, Fixed{ChunkID: 9}), 5, []string{"hello", "t1"})
	c := mustMap(t, m, 1, []string{"hello", "t2"})
	// Field boundaries count: ("ab","c") and ("a","bc") differ.
	d := mustMap(t, m, 2, []string{"hellot", "1"})
	if a.ID != b.ID || a.ID == c.ID || a.ID == d.ID || !strings.HasPrefix(a.ID, "239.") || len(a.ID) != len("239.")+32 {
		t.Fatalf("ids %q %q %q %q", a.ID, b.ID, c.ID, d.ID)
	}
	// The documented formula: SHA-256 over (8-byte big-endian length, bytes) of each field.
	var buf []byte
	for _, f := range []string{"hello", "t1"} {
		buf = binary.BigEndian.AppendUint64(buf, uint64(len(f)))
		buf = append(buf, f...)
	}
	sum := sha256.Sum256(buf)
	if want := "239." + hex.EncodeToString(sum[:16]); a.ID != want {
		t.Fatalf("id %q, want %q", a.ID, want)
	}
	if md := a.MetadataMap(); md[KeyRowID] != strings.TrimPrefix(a.ID, "239.") || md["formatted_text"] != nil || md["title"] != "t1" {
		t.Fatalf("metadata %v", md)
	}
}

// Key trims ids, so "12" and " 12" are the same vector (the planner's duplicate check relies on it).
func TestKeyTrimsAndIncludesNamespace(t *testing.T) {
	spec := legacySpec()
	spec.NamespaceColumn = "record_type"
	m := mustNew(t, spec, testHeader, testFixed)
	r1, r2 := testRow(), testRow()
	r1[0], r2[0] = "12", " 12\t"
	k1, e1 := m.Key(0, r1)
	k2, e2 := m.Key(1, r2)
	if e1 != nil || e2 != nil || k1 != k2 || k1.ID != "239.12" || k1.Namespace != "product" {
		t.Fatalf("keys %+v %+v (%v %v)", k1, k2, e1, e2)
	}
	r2[2] = ""
	if k, _ := m.Key(1, r2); k.Namespace != "v2" || k == k1 {
		t.Fatalf("empty namespace column: %+v", k)
	}
}

func TestMetadataStruct(t *testing.T) {
	spec := legacySpec()
	spec.Metadata.InferTypes = true
	rec := mustMap(t, mustNew(t, spec, testHeader, testFixed), 7, testRow())
	s, err := rec.MetadataStruct()
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s.AsMap(), rec.MetadataMap()) {
		t.Fatalf("struct %v != map %v", s.AsMap(), rec.MetadataMap())
	}
	if _, ok := s.Fields["in_stock"].Kind.(*structpb.Value_BoolValue); !ok {
		t.Fatalf("in_stock kind = %T", s.Fields["in_stock"].Kind)
	}
	if _, ok := s.Fields["price"].Kind.(*structpb.Value_NumberValue); !ok {
		t.Fatalf("price kind = %T", s.Fields["price"].Kind)
	}

	for name, bad := range map[string]Record{
		"invalid UTF-8": {ID: "x", Metadata: []Field{{Key: "k", Value: Value{Str: "\xff"}}}},
		"duplicate key": {ID: "x", Metadata: []Field{{Key: "k", Value: Value{Str: "a"}}, {Key: "k", Value: Value{Str: "b"}}}},
		"NaN":           {ID: "x", Metadata: []Field{{Key: "k", Value: Value{Kind: KindNumber, Num: nan()}}}},
	} {
		if _, err := bad.MetadataStruct(); err == nil {
			t.Errorf("%s: MetadataStruct succeeded", name)
		}
	}
}

func nan() float64 { var z float64; return z / z }

// Records are kept after Map returns (they wait for a batch), so mapping the next row must not
// change them.
func TestRecordsDoNotShareBuffers(t *testing.T) {
	spec := legacySpec()
	spec.Sanitize = SanitizeLegacy
	m := mustNew(t, spec, testHeader, testFixed)
	r1 := testRow()
	r1[1] = "<p>first 2025-01-10</p>"
	rec1 := mustMap(t, m, 0, r1)
	r2 := testRow()
	r2[0], r2[1] = "2", "<p>a second and much longer text 01/02/2025 that reuses the buffers</p>"
	rec2 := mustMap(t, m, 1, r2)
	// The old function's outputs (see legacyCases).
	if rec1.Text != "first January 10th, 2025 12:00:00 AM" || rec1.MetadataMap()["text"] != rec1.Text {
		t.Fatalf("first record changed: %q", rec1.Text)
	}
	if rec2.Text != "a second and much longer text January 2nd, 2025 12:00:00 AM that reuses the buffers" {
		t.Fatalf("second text = %q", rec2.Text)
	}
}

// Map never panics and what it returns always fits Pinecone's limits.
func FuzzMap(f *testing.F) {
	f.Add("1", "<p>text 2025-01-10</p>", "product", "1.5", "true", "", "t", "n", 0)
	f.Add("", "", "", "", "", "", "", "", 3)
	f.Add("a\xff", "\x00", "ns\x00", "1e999", "TRUE", "-0", "x", "y", 8)
	spec := legacySpec()
	spec.Sanitize = SanitizeLegacy
	spec.NamespaceColumn = "record_type"
	spec.Metadata.InferTypes = true
	m, err := New(spec, testHeader, testFixed)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, a, b, c, d, e, g, h, i string, n int) {
		fields := []string{a, b, c, d, e, g, h, i}
		if n >= 0 && n < len(fields) {
			fields = fields[:n]
		}
		rec, rerr := m.Map(1, fields)
		if rerr != nil {
			if rerr.Reason == "" || rerr.Row != 1 {
				t.Fatalf("bad RowError %+v", rerr)
			}
			return
		}
		if rec.ID == "" || len(rec.ID) > MaxIDBytes || strings.TrimSpace(rec.Text) == "" {
			t.Fatalf("record %+v", rec)
		}
		s, err := rec.MetadataStruct()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := protojson.Marshal(s); err != nil {
			t.Fatal(err)
		}
		if size := jsonSize(t, rec.MetadataMap()); size > MetadataBudget {
			t.Fatalf("metadata is %d bytes", size)
		}
		if size := pineconeSize(t, rec); size > MetadataBudget {
			t.Fatalf("metadata is %d bytes as Pinecone measures", size)
		}
	})
}

// pineconeSize is rec's metadata as Pinecone measures it.
func pineconeSize(t testing.TB, rec Record) int {
	t.Helper()
	s, err := rec.MetadataStruct()
	if err != nil {
		t.Fatal(err)
	}
	return pinecone.MetadataSize(s)
}

// The size estimate is what encoding/json writes (without HTML escaping), and two bytes more for
// an integral number, which Pinecone's measure writes as "12.0"; never less than Pinecone's
// measure (1e-7 is "1e-07" to it).
func TestFieldLenMatchesEncodingJSON(t *testing.T) {
	values := []Value{
		{Str: "plain"}, {Str: `q"uote\back`}, {Str: "nl\n\t\r ctl\x01\x1f"}, {Str: "sep\u2028\u2029"},
		{Str: "<&>"}, {Str: "é😀"},
		{Kind: KindNumber, Num: 0}, {Kind: KindNumber, Num: 239}, {Kind: KindNumber, Num: -3.25},
		{Kind: KindNumber, Num: 1e20}, {Kind: KindNumber, Num: 1e21}, {Kind: KindNumber, Num: 1e-7},
		{Kind: KindNumber, Num: 0.000001}, {Kind: KindNumber, Num: 123456789.125}, {Kind: KindNumber, Num: 1.5e300},
		{Kind: KindBool, Bool: true}, {Kind: KindBool, Bool: false},
	}
	for _, v := range values {
		f := Field{Key: "k\"\u2028", Value: v}
		want := jsonSize(t, map[string]any{f.Key: v.Any()}) - 1 // less the braces, plus the comma
		if v.Kind == KindNumber && v.Num == math.Trunc(v.Num) && math.Abs(v.Num) < 1e16 {
			want += 2
		}
		if v.Kind == KindNumber {
			// The value as Pinecone reads it, if longer than encoding/json's.
			md, err := structpb.NewStruct(map[string]any{"a": v.Any()})
			if err != nil {
				t.Fatal(err)
			}
			pc, js := pinecone.MetadataSize(md)-len(`{"a":}`), jsonSize(t, map[string]any{"a": v.Any()})-len(`{"a":}`)
			if v.Num == math.Trunc(v.Num) && math.Abs(v.Num) < 1e16 {
				js += 2
			}
			want += max(0, pc-js)
		}
		if got := fieldLen(f); got != want {
			t.Errorf("fieldLen(%#v) = %d, want %d (the larger of encoding/json's and Pinecone's)", v.Any(), got, want)
		}
	}
	// cutJSON never goes over its budget and never splits a rune.
	s := "a\"\u2028é\n😀"
	for budget := 0; budget < 30; budget++ {
		got := cutJSON(s, budget)
		if !utf8.ValidString(got) || !strings.HasPrefix(s, got) || (got != "" && jsonStringLen(got) > budget) {
			t.Fatalf("cutJSON(budget %d) = %q", budget, got)
		}
	}
}

func TestNewListsEachMissingColumnOnce(t *testing.T) {
	spec := legacySpec()
	spec.TextColumn, spec.TextTemplate = "", "{{.summary}} {{if .summary}}{{.summary}}{{end}}"
	_, err := New(spec, testHeader, testFixed)
	if err == nil || strings.Count(err.Error(), `"summary"`) != 1 {
		t.Fatalf("error = %v; want summary named once", err)
	}
}

// TestHugeTextIsNotSanitized: a text over MaxTextBytes fails its row before sanitizing (which
// costs several copies of it), or is cut to MaxTextBytes first with overlongText: truncate.
func TestHugeTextIsNotSanitized(t *testing.T) {
	huge := strings.Repeat("北京欢迎你東京タワー", 12<<20/30)
	r := testRow()
	r[1] = huge
	m := mustNew(t, legacySpec(), testHeader, testFixed)
	var rerr *RowError
	grew := allocated(func() { _, rerr = m.Map(0, r) })
	if rerr == nil || rerr.Reason != ReasonTooManyTokens {
		t.Fatalf("Map = %v, want %s", rerr, ReasonTooManyTokens)
	}
	if grew > 1<<20 {
		t.Errorf("failing a 12 MiB text allocated %d bytes: it was sanitized", grew)
	}
	spec := legacySpec()
	spec.OverlongText = OverlongTruncate
	m = mustNew(t, spec, testHeader, testFixed)
	rec := mustMap(t, m, 0, r)
	if len(rec.Text) > MaxTextBytes || !strings.HasPrefix(huge, rec.Text) || !utf8.ValidString(rec.Text) {
		t.Fatalf("truncate: text of %d bytes", len(rec.Text))
	}
	spec.OverlongText = "split"
	if _, err := New(spec, testHeader, testFixed); err == nil {
		t.Fatal("New accepted overlongText: split")
	}
}

func allocated(fn func()) uint64 {
	var a, b runtime.MemStats
	runtime.ReadMemStats(&a)
	fn()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// One metadata budget: the mapper trims to the limit the upserter checks, in both formats, and
// leaves room for the fields the writer adds after mapping (the content hash), so a row whose
// text can be trimmed is never dead-lettered by the upserter as metadata_too_large.
func TestOneMetadataBudget(t *testing.T) {
	if MetadataBudget != pinecone.MetadataLimit {
		t.Fatalf("mapper budget %d, upserter limit %d", MetadataBudget, pinecone.MetadataLimit)
	}
	hash := Field{Key: "content_hash", Value: Value{Kind: KindString, Str: strings.Repeat("0", 32)}}
	for _, format := range []string{FormatStandard, FormatLegacy} {
		for _, writer := range [][]Field{nil, {hash}} {
			spec := legacySpec()
			spec.Metadata.Format = format
			spec.Metadata.TextMaxChars = 100000
			fixed := testFixed
			fixed.WriterFields = writer
			m := mustNew(t, spec, testHeader, fixed)
			row := testRow()
			row[1] = strings.Repeat("long text ", 8000) // 80,000 bytes: must be trimmed
			row[7] = strings.Repeat("n", 20000)         // a large column
			rec := mustMap(t, m, 1, row)
			md := rec.Metadata
			if writer != nil {
				md = append(md, writer...)
			}
			r := rec
			r.Metadata = md
			size := pineconeSize(t, r)
			if size > pinecone.MetadataLimit || size < pinecone.MetadataLimit-200 {
				t.Errorf("%s format, writer fields %d: metadata is %d bytes as Pinecone measures, want just under the upserter's %d",
					format, len(writer), size, pinecone.MetadataLimit)
			}
		}
	}
}
