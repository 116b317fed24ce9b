// Package mapping turns one CSV row into a vector record without its embedding: the vector id, the
// Pinecone namespace, the text to embed and the metadata, following the row contract of DESIGN §6.
//
// A Mapper is compiled once per chunk (New) from the mapping spec and the CSV header, then Map is
// called for every row. Map is on the hot path (up to a million rows per ingestion): it does no
// regexp work, reuses its scratch buffers and the template's data map, and keeps metadata as a
// slice of fields rather than a map. A Mapper is therefore not safe for concurrent use; give each
// goroutine its own.
package mapping

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"text/template/parse"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// Limits of a record (Pinecone's, and DESIGN §6).
const (
	MaxIDBytes        = 512
	MaxNamespaceChars = 512
	MaxMetadataBytes  = 40 * 1024
	// MetadataBudget is what a record's metadata is trimmed to: a margin under Pinecone's limit
	// (the same as the upserter's pinecone.MetadataLimit), measured by fieldLen, which is never
	// less than Pinecone's measure.
	MetadataBudget = MaxMetadataBytes - 512
)

// Defaults applied when the spec leaves a field empty (the API server applies the same ones).
const (
	DefaultIDColumn     = "id"
	DefaultTextField    = "text"
	DefaultTextMaxChars = 1000
)

// Values of spec.mapping.metadata.format.
const (
	// FormatStandard: typed columns, numeric chunk_id and record_index, the id column left out.
	FormatStandard = "standard"
	// FormatLegacy: exactly the metadata the old service wrote (see legacyMap).
	FormatLegacy = "legacy"
)

// Values of spec.mapping.metadata.include.
const (
	IncludeAll     = "all"
	IncludeColumns = "columns"
	IncludeNone    = "none"
)

// Metadata keys of the fixed fields every record carries. Columns of these names cannot be put in
// metadata (New fails and says to exclude them), so a CSV column never silently overwrites them.
const (
	KeySource      = "source"
	KeyS3Key       = "s3_key"
	KeyChunkID     = "chunk_id"
	KeyRecordIndex = "record_index"
	KeyTaskID      = "task_id"
	KeyQuestionID  = "question_id"
	KeyRowID       = "row_id"
	KeyProcessedAt = "processed_at"
)

// Reasons a row fails. They end up in dead-letter objects and failed-row samples.
const (
	// ReasonWrongFieldCount: the row has a different number of fields than the header.
	ReasonWrongFieldCount = "wrong_field_count"
	// ReasonMissingID: the id column is empty (or only white space).
	ReasonMissingID = "missing_id"
	// ReasonInvalidID: the id is not valid UTF-8 or holds a NUL byte, which Pinecone rejects.
	ReasonInvalidID = "invalid_id"
	// ReasonIDTooLong: idPrefix + id is longer than MaxIDBytes.
	ReasonIDTooLong = "id_too_long"
	// ReasonBadNamespace: the namespace column holds a value Pinecone rejects (longer than
	// MaxNamespaceChars characters, invalid UTF-8 or a NUL byte). An empty value is not an error:
	// the row goes to the default namespace.
	ReasonBadNamespace = "bad_namespace"
	// ReasonTemplateError: executing textTemplate failed for this row.
	ReasonTemplateError = "template_error"
	// ReasonSanitizeError: sanitize legacy cannot clean the text because the old service's
	// sanitize_text raised on it (a numeric character reference of more than 4,300 digits), so the
	// old service never embedded such a row either.
	ReasonSanitizeError = "sanitize_error"
	// ReasonEmptyText: the text is empty or white space after sanitizing.
	ReasonEmptyText = "empty_text"
	// ReasonMetadataTooLarge: the metadata exceeds MaxMetadataBytes even without the text field.
	ReasonMetadataTooLarge = "metadata_too_large"
	// ReasonInvalidUTF8: a column the mapping uses holds bytes that are not UTF-8 (the file is
	// read as UTF-8; spec.source.csv.encoding names another encoding). Such a row is failed rather
	// than ingested with replacement characters, so no text changes without a count.
	ReasonInvalidUTF8 = "invalid_utf8"
	// ReasonTooManyTokens: the text is over the model's limit (here: over MaxTextBytes before
	// sanitizing; the embedder counts the rest). The embedder uses the same reason.
	ReasonTooManyTokens = "too_many_tokens"
)

// Values of spec.mapping.overlongText.
const (
	OverlongFail     = "fail"
	OverlongTruncate = "truncate"
)

// MaxTextBytes bounds the text a row may bring to sanitizing: sanitizing costs several copies
// of the text, and no text of this size is within the model's 8,191 tokens after it (that would
// take ≥ 75% markup; an 8,191-token text is at most 1 MiB). A longer text fails its row
// (overlongText: fail) or is cut to this size first (truncate), so one huge field never sets a
// chunk's memory.
const MaxTextBytes = 4 << 20

// RowError says why one row was not turned into a record.
type RowError struct {
	Row    int64
	Reason string
	Detail string
}

func (e *RowError) Error() string {
	return fmt.Sprintf("row %d: %s: %s", e.Row, e.Reason, e.Detail)
}

// Fixed is what every record of a chunk carries besides its row's columns.
type Fixed struct {
	// DefaultNamespace is spec.target.pinecone.namespace, used unless the row names another.
	DefaultNamespace string
	// Source is the data source: "s3_csv" or "metabase". Left out of metadata when empty.
	Source string
	// S3Key is the object the rows come from. Left out when empty.
	S3Key string
	// TaskID of the ingestion. Left out when empty.
	TaskID string
	// QuestionID is the Metabase question id when known; 0 leaves it out.
	QuestionID int64
	// ChunkID is the chunk index.
	ChunkID int
	// FirstRow is the 0-based data row number of the chunk's first row: the legacy format's
	// record_index counts from it (the old service numbered rows within their chunk).
	FirstRow int64
	// ProcessedAt is stamped on every record of the chunk (one timestamp per chunk, so that
	// formatting a time is not paid per row). Empty means FormatTime(time.Now()) at New.
	ProcessedAt string
	// WriterFields are metadata fields the writer adds to every record after mapping (the
	// incremental sync's content_hash): only their size matters, so that the text is trimmed to
	// leave room for them within the one budget the upserter checks.
	WriterFields []Field
}

// FormatTime renders t as processed_at does: UTC, ISO-8601, seconds, e.g. "2025-01-10T22:45:23Z".
func FormatTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// FormatPythonISO renders t as the old service's Python datetime.utcnow().isoformat() did: naive
// UTC with microseconds, e.g. "2025-01-10T14:03:07.123456", and no fraction at all when the
// microseconds are 0 (Python leaves them out then).
func FormatPythonISO(t time.Time) string {
	t = t.UTC()
	if t.Nanosecond()/1000 == 0 {
		return t.Format("2006-01-02T15:04:05")
	}
	return t.Format("2006-01-02T15:04:05.000000")
}

// FormatProcessedAt renders processed_at for a metadata format.
func FormatProcessedAt(format string, t time.Time) string {
	if format == FormatLegacy {
		return FormatPythonISO(t)
	}
	return FormatTime(t)
}

// Kind is the type of a metadata value.
type Kind uint8

const (
	KindString Kind = iota
	KindNumber
	KindBool
)

// Value is a metadata value: a string, a number or a boolean (no nulls, nothing nested).
type Value struct {
	Kind Kind
	Str  string
	Num  float64
	Bool bool
}

// Any returns the value as string, float64 or bool.
func (v Value) Any() any {
	switch v.Kind {
	case KindNumber:
		return v.Num
	case KindBool:
		return v.Bool
	}
	return v.Str
}

// Field is one metadata entry.
type Field struct {
	Key   string
	Value Value
}

// Record is a row ready to be embedded and upserted.
type Record struct {
	// Row is the 0-based data row number the record came from.
	Row       int64
	ID        string
	Namespace string
	// Text is the sanitized text to embed.
	Text string
	// Metadata has unique keys and no empty values.
	Metadata []Field
}

// MetadataMap returns the metadata as a map of string, float64 and bool values.
func (r Record) MetadataMap() map[string]any {
	m := make(map[string]any, len(r.Metadata))
	for _, f := range r.Metadata {
		m[f.Key] = f.Value.Any()
	}
	return m
}

// MetadataStruct returns the metadata as the protobuf Struct the Pinecone client takes.
func (r Record) MetadataStruct() (*structpb.Struct, error) {
	s := &structpb.Struct{Fields: make(map[string]*structpb.Value, len(r.Metadata))}
	for _, f := range r.Metadata {
		if !utf8.ValidString(f.Key) {
			return nil, fmt.Errorf("metadata key %q of record %q is not valid UTF-8", f.Key, r.ID)
		}
		if _, dup := s.Fields[f.Key]; dup {
			return nil, fmt.Errorf("metadata key %q of record %q appears twice", f.Key, r.ID)
		}
		var v *structpb.Value
		switch f.Value.Kind {
		case KindString:
			if !utf8.ValidString(f.Value.Str) {
				return nil, fmt.Errorf("metadata %q of record %q is not valid UTF-8", f.Key, r.ID)
			}
			v = structpb.NewStringValue(f.Value.Str)
		case KindNumber:
			if math.IsNaN(f.Value.Num) || math.IsInf(f.Value.Num, 0) {
				return nil, fmt.Errorf("metadata %q of record %q is not a finite number", f.Key, r.ID)
			}
			v = structpb.NewNumberValue(f.Value.Num)
		case KindBool:
			v = structpb.NewBoolValue(f.Value.Bool)
		default:
			return nil, fmt.Errorf("metadata %q of record %q has unknown kind %d", f.Key, r.ID, f.Value.Kind)
		}
		s.Fields[f.Key] = v
	}
	return s, nil
}

// metaColumn is a CSV column that becomes metadata.
type metaColumn struct {
	index int
	key   string
}

// tmplColumn feeds one column into the template's data map.
type tmplColumn struct {
	index int
	name  string
}

// Mapper maps the rows of one chunk. Not safe for concurrent use.
type Mapper struct {
	reserved int // bytes of metadata the writer adds after mapping (Fixed.WriterFields)
	width    int
	idCol    int // -1: the id is derived from the row (DerivedID)
	idPrefix string
	used     []int // columns the mapping reads, checked for valid UTF-8
	header   []string
	textCol  int // -1 with a template
	nsCol    int // -1 without namespaceColumn

	tmpl     *template.Template
	tmplCols []tmplColumn
	tmplData map[string]string
	tmplBuf  bytes.Buffer

	san *Sanitizer
	// truncate is spec.overlongText: truncate; a text over MaxTextBytes is then cut before
	// sanitizing instead of failing its row.
	truncate bool

	meta         []metaColumn
	inferTypes   bool
	textField    string // "" leaves the text out of metadata
	textMaxChars int

	defaultNS string
	fixed     []Field // source, s3_key, task_id, question_id, chunk_id, processed_at
	fixedLen  int     // their estimated JSON size

	// legacy is set with metadata.format legacy; the fields below serve it.
	legacy      bool
	firstRow    int64
	legacyHead  []Field // source, s3_key, chunk_id (record_index follows)
	legacyMid   []Field // task_id, question_id (row_id follows)
	legacyTail  []Field // processed_at
	legacyFixed int     // estimated JSON size of the three
}

// New compiles spec against the CSV header. It fails, naming what to fix, when a column the spec
// names is not in the header, when textTemplate does not parse, when a column that would become
// metadata has no name, a duplicated name or the name of a fixed field, or when an enum is
// unknown. Empty spec fields take the API defaults (idColumn id, sanitize basic, include all,
// textMaxChars 1000); an empty textField leaves the text out of metadata, as the API documents.
// A UTF-8 byte-order mark on the first header name is ignored.
func New(spec v1alpha1.MappingSpec, header []string, fixed Fixed) (*Mapper, error) {
	h := make([]string, len(header))
	copy(h, header)
	if len(h) > 0 {
		h[0] = strings.TrimPrefix(h[0], "\uFEFF")
	}
	if len(h) == 0 {
		return nil, fmt.Errorf("mapping: the CSV header has no columns")
	}
	index := make(map[string]int, len(h))
	dup := map[string]bool{}
	for i, name := range h {
		if !utf8.ValidString(name) {
			return nil, fmt.Errorf("mapping: CSV header column %d (%q) is not valid UTF-8", i+1, name)
		}
		if _, seen := index[name]; seen {
			dup[name] = true
			continue
		}
		index[name] = i
	}

	var missing, dupUsed []string
	need := func(field, name string) int {
		what := fmt.Sprintf("%s %q", field, name)
		if dup[name] && !slices.Contains(dupUsed, what) {
			dupUsed = append(dupUsed, what)
		}
		i, ok := index[name]
		if !ok {
			if !slices.Contains(missing, what) {
				missing = append(missing, what)
			}
			return -1
		}
		return i
	}

	if !utf8.ValidString(spec.IDPrefix) || strings.IndexByte(spec.IDPrefix, 0) >= 0 {
		return nil, fmt.Errorf("mapping: idPrefix %q is not valid UTF-8 or holds a NUL byte", spec.IDPrefix)
	}
	m := &Mapper{width: len(h), idPrefix: spec.IDPrefix, textCol: -1, nsCol: -1, defaultNS: fixed.DefaultNamespace}

	m.header = h
	if idColumn := ResolveIDColumn(spec, h); idColumn != "" {
		m.idCol = need("idColumn", idColumn)
	} else {
		m.idCol = -1
	}

	switch {
	case spec.TextColumn != "" && spec.TextTemplate != "":
		return nil, fmt.Errorf("mapping: set textColumn or textTemplate, not both")
	case spec.TextColumn != "":
		m.textCol = need("textColumn", spec.TextColumn)
	case spec.TextTemplate != "":
		t, err := template.New("textTemplate").Option("missingkey=error").Parse(spec.TextTemplate)
		if err != nil {
			return nil, fmt.Errorf("mapping: parse textTemplate %q: %w", spec.TextTemplate, err)
		}
		for _, name := range templateColumns(t) {
			need("textTemplate", name)
		}
		m.tmpl = t
		m.tmplData = make(map[string]string, len(index))
		for name, i := range index {
			m.tmplCols = append(m.tmplCols, tmplColumn{index: i, name: name})
		}
	default:
		return nil, fmt.Errorf("mapping: set textColumn or textTemplate")
	}

	if spec.NamespaceColumn != "" {
		m.nsCol = need("namespaceColumn", spec.NamespaceColumn)
	}

	md := spec.Metadata
	switch md.Format {
	case "", FormatStandard:
	case FormatLegacy:
		if md.InferTypes {
			return nil, fmt.Errorf("mapping: metadata.inferTypes cannot be used with format legacy: the old service stored every column as a string")
		}
		m.legacy = true
	default:
		return nil, fmt.Errorf("mapping: unknown metadata.format %q: want standard or legacy", md.Format)
	}
	excluded := make(map[string]bool, len(md.Exclude))
	for _, name := range md.Exclude {
		excluded[name] = true
	}
	switch md.Include {
	case "", IncludeAll:
		for i, name := range h {
			// The old service kept the id column as metadata too; only the embedded text was left out.
			if (i == m.idCol && !m.legacy) || i == m.textCol || excluded[name] {
				continue
			}
			if strings.TrimSpace(name) == "" {
				return nil, fmt.Errorf("mapping: CSV header column %d has no name, so it cannot become metadata with include: all; "+
					"list the wanted columns with include: columns, or name the column", i+1)
			}
			if dup[name] {
				if index[name] == i {
					dupUsed = append(dupUsed, fmt.Sprintf("metadata %q", name))
				}
				continue
			}
			m.meta = append(m.meta, metaColumn{index: i, key: name})
		}
	case IncludeColumns:
		if len(md.Columns) == 0 {
			return nil, fmt.Errorf("mapping: metadata.columns must list at least one column when include is columns")
		}
		seen := make(map[string]bool, len(md.Columns))
		for _, name := range md.Columns {
			if excluded[name] || seen[name] {
				continue
			}
			seen[name] = true
			if i := need("metadata.columns", name); i >= 0 {
				m.meta = append(m.meta, metaColumn{index: i, key: name})
			}
		}
	case IncludeNone:
	default:
		return nil, fmt.Errorf("mapping: unknown metadata.include %q: want all, columns or none", md.Include)
	}

	if len(missing) > 0 {
		return nil, fmt.Errorf("mapping: not in the CSV header: %s (header: %s)",
			strings.Join(missing, ", "), describeHeader(h))
	}
	if len(dupUsed) > 0 {
		return nil, fmt.Errorf("mapping: these columns appear more than once in the CSV header, so which one is meant is ambiguous: %s",
			strings.Join(dupUsed, ", "))
	}

	m.textField = md.TextField
	reserved := []string{KeySource, KeyS3Key, KeyChunkID, KeyRecordIndex, KeyTaskID, KeyQuestionID, KeyRowID, KeyProcessedAt}
	if m.textField != "" {
		reserved = append(reserved, m.textField)
	}
	var clash []string
	for _, c := range m.meta {
		if m.legacy {
			break // legacy skips a column named like a field already set, row by row, as the old code did
		}
		for _, r := range reserved {
			if c.key == r {
				clash = append(clash, strconv.Quote(c.key))
			}
		}
	}
	if len(clash) > 0 {
		return nil, fmt.Errorf("mapping: columns %s would overwrite metadata the ingestion sets itself; "+
			"add them to metadata.exclude (or rename the text field with metadata.textField)", strings.Join(clash, ", "))
	}

	switch {
	case md.TextMaxChars < 0:
		return nil, fmt.Errorf("mapping: metadata.textMaxChars is %d, must not be negative", md.TextMaxChars)
	case md.TextMaxChars == 0:
		m.textMaxChars = DefaultTextMaxChars
	default:
		m.textMaxChars = int(md.TextMaxChars)
	}
	m.inferTypes = md.InferTypes

	san, err := NewSanitizer(spec.Sanitize)
	if err != nil {
		return nil, fmt.Errorf("mapping: %w", err)
	}
	m.san = san
	switch spec.OverlongText {
	case "", OverlongFail:
	case OverlongTruncate:
		m.truncate = true
	default:
		return nil, fmt.Errorf("mapping: overlongText %q is neither %s nor %s", spec.OverlongText, OverlongFail, OverlongTruncate)
	}

	processedAt := fixed.ProcessedAt
	if processedAt == "" {
		processedAt = FormatTime(time.Now())
	}
	addString := func(key, v string) {
		if v != "" {
			m.fixed = append(m.fixed, Field{Key: key, Value: Value{Kind: KindString, Str: v}})
		}
	}
	addString(KeySource, fixed.Source)
	addString(KeyS3Key, fixed.S3Key)
	addString(KeyTaskID, fixed.TaskID)
	if fixed.QuestionID != 0 {
		m.fixed = append(m.fixed, Field{Key: KeyQuestionID, Value: Value{Kind: KindNumber, Num: float64(fixed.QuestionID)}})
	}
	m.fixed = append(m.fixed, Field{Key: KeyChunkID, Value: Value{Kind: KindNumber, Num: float64(fixed.ChunkID)}})
	addString(KeyProcessedAt, processedAt)
	for _, f := range m.fixed {
		m.fixedLen += fieldLen(f)
	}
	for _, f := range fixed.WriterFields {
		m.reserved += fieldLen(f)
	}
	if m.legacy {
		m.firstRow = fixed.FirstRow
		str := func(key, v string) Field { return Field{Key: key, Value: Value{Kind: KindString, Str: v}} }
		if fixed.Source != "" {
			m.legacyHead = append(m.legacyHead, str(KeySource, fixed.Source))
		}
		if fixed.S3Key != "" {
			m.legacyHead = append(m.legacyHead, str(KeyS3Key, fixed.S3Key))
		}
		m.legacyHead = append(m.legacyHead, str(KeyChunkID, LegacyChunkID(fixed.ChunkID)))
		if fixed.TaskID != "" {
			m.legacyMid = append(m.legacyMid, str(KeyTaskID, fixed.TaskID))
		}
		if fixed.QuestionID != 0 {
			m.legacyMid = append(m.legacyMid, Field{Key: KeyQuestionID, Value: Value{Kind: KindNumber, Num: float64(fixed.QuestionID)}})
		}
		m.legacyTail = append(m.legacyTail, str(KeyProcessedAt, processedAt))
		for _, fs := range [][]Field{m.legacyHead, m.legacyMid, m.legacyTail} {
			for _, f := range fs {
				m.legacyFixed += fieldLen(f)
			}
		}
	}
	m.used = m.usedColumns()
	return m, nil
}

// LegacyChunkID is the old service's chunk id: "chunk_%04d" of the 0-based chunk index.
func LegacyChunkID(chunk int) string { return fmt.Sprintf("chunk_%04d", chunk) }

// ResolveIDColumn is the column the vector id comes from: spec.idColumn when set; when it is
// empty, the column named "id" if the header has one (the old default, so manifests written for it
// keep their ids), else "" — the id is then derived from the whole row (see DerivedID).
func ResolveIDColumn(spec v1alpha1.MappingSpec, header []string) string {
	if spec.IDColumn != "" {
		return spec.IDColumn
	}
	for i, h := range header {
		if i == 0 {
			h = strings.TrimPrefix(h, "\uFEFF")
		}
		if h == DefaultIDColumn {
			return DefaultIDColumn
		}
	}
	return ""
}

// DerivedID is the id of a row of a file without an id column: the lowercase hex of the first 16
// bytes of SHA-256 over the row's fields in header order, each written as its length (8 bytes,
// big-endian) then its bytes, exactly as read (unquoted, not trimmed). The same row always gets
// the same id, so a re-run overwrites instead of duplicating; two identical rows get the same id
// and the second is a duplicate_id.
func DerivedID(fields []string) string {
	h := sha256.New()
	var n [8]byte
	for _, f := range fields {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// usedColumns lists the columns Map reads: id, text (or every column for a template), namespace
// and metadata, in order and without repeats.
func (m *Mapper) usedColumns() []int {
	seen := make([]bool, m.width)
	var used []int
	add := func(i int) {
		if i >= 0 && !seen[i] {
			seen[i] = true
			used = append(used, i)
		}
	}
	if m.idCol < 0 {
		for i := 0; i < m.width; i++ {
			add(i)
		}
	}
	add(m.idCol)
	add(m.textCol)
	for _, c := range m.tmplCols {
		add(c.index)
	}
	add(m.nsCol)
	for _, c := range m.meta {
		add(c.index)
	}
	slices.Sort(used)
	return used
}

// templateColumns lists the columns a template names as {{.col}}, {{$.col}} or
// {{index . "col"}}, so New can check them against the header before any row is read.
func templateColumns(t *template.Template) []string {
	var names []string
	var walk func(n parse.Node)
	walk = func(n parse.Node) {
		switch n := n.(type) {
		case *parse.ListNode:
			if n == nil {
				return
			}
			for _, c := range n.Nodes {
				walk(c)
			}
		case *parse.ActionNode:
			walk(n.Pipe)
		case *parse.PipeNode:
			if n == nil {
				return
			}
			for _, c := range n.Cmds {
				walk(c)
			}
		case *parse.CommandNode:
			if len(n.Args) == 3 {
				if id, ok := n.Args[0].(*parse.IdentifierNode); ok && id.Ident == "index" {
					if _, ok := n.Args[1].(*parse.DotNode); ok {
						if s, ok := n.Args[2].(*parse.StringNode); ok {
							names = append(names, s.Text)
						}
					}
				}
			}
			for _, a := range n.Args {
				walk(a)
			}
		case *parse.FieldNode:
			names = append(names, n.Ident[0])
		case *parse.VariableNode:
			if len(n.Ident) > 1 && n.Ident[0] == "$" {
				names = append(names, n.Ident[1])
			}
		case *parse.ChainNode:
			walk(n.Node)
		case *parse.IfNode:
			walkBranch(&n.BranchNode, walk)
		case *parse.RangeNode:
			walkBranch(&n.BranchNode, walk)
		case *parse.WithNode:
			walkBranch(&n.BranchNode, walk)
		case *parse.TemplateNode:
			walk(n.Pipe)
		}
	}
	for _, tt := range t.Templates() {
		if tt.Tree != nil {
			walk(tt.Tree.Root)
		}
	}
	return names
}

func walkBranch(b *parse.BranchNode, walk func(parse.Node)) {
	walk(b.Pipe)
	walk(b.List)
	walk(b.ElseList)
}

// describeHeader lists header names for an error message, at most 50 of them.
func describeHeader(h []string) string {
	const max = 50
	var b strings.Builder
	for i, name := range h {
		if i == max {
			fmt.Fprintf(&b, ", … (%d more)", len(h)-max)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Quote(name))
	}
	return b.String()
}

// Map turns one row into a record. rowNumber is the row's 0-based data row number, stored as
// record_index and in any RowError.
func (m *Mapper) Map(rowNumber int64, fields []string) (Record, *RowError) {
	fail := func(reason, format string, args ...any) (Record, *RowError) {
		return Record{}, &RowError{Row: rowNumber, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	key, kerr := m.Key(rowNumber, fields)
	if kerr != nil {
		return Record{}, kerr
	}
	rawID, id, ns := key.RawID, key.ID, key.Namespace

	var raw string
	if m.tmpl != nil {
		for _, c := range m.tmplCols {
			m.tmplData[c.name] = fields[c.index]
		}
		m.tmplBuf.Reset()
		if err := m.tmpl.Execute(&m.tmplBuf, m.tmplData); err != nil {
			return fail(ReasonTemplateError, "%v", err)
		}
		raw = m.tmplBuf.String()
		if m.tmplBuf.Cap() > 1<<20 {
			// Do not keep an outlier row's megabytes for the rest of the chunk.
			m.tmplBuf = bytes.Buffer{}
		}
	} else {
		raw = fields[m.textCol]
	}
	if len(raw) > MaxTextBytes {
		if !m.truncate {
			return fail(ReasonTooManyTokens, "text is %d bytes, far over the model's 8,191 tokens (at most %d bytes are read; set spec.mapping.overlongText: truncate to embed the start)", len(raw), MaxTextBytes)
		}
		raw = raw[:runeStart(raw, MaxTextBytes)]
	}
	text, serr := m.san.Sanitize(validUTF8(raw))
	if serr != nil {
		return fail(ReasonSanitizeError, "sanitize %s: %v", m.san.Mode(), serr)
	}
	if strings.TrimSpace(text) == "" {
		return fail(ReasonEmptyText, "text is empty after sanitize %s", m.san.Mode())
	}

	if m.legacy {
		return m.legacyRecord(rowNumber, id, ns, text, fields)
	}

	md := make([]Field, 0, len(m.meta)+len(m.fixed)+3)
	size := 1 + m.fixedLen // '{' plus each field with its ',' (the last ',' is the '}')
	for _, c := range m.meta {
		v := strings.TrimSpace(fields[c.index])
		if v == "" {
			continue
		}
		f := Field{Key: c.key, Value: m.value(validUTF8(v))}
		size += fieldLen(f)
		md = append(md, f)
	}
	md = append(md, m.fixed...)
	tail := [2]Field{
		{Key: KeyRecordIndex, Value: Value{Kind: KindNumber, Num: float64(rowNumber)}},
		{Key: KeyRowID, Value: Value{Kind: KindString, Str: rawID}},
	}
	for _, f := range tail {
		size += fieldLen(f)
		md = append(md, f)
	}
	budget := m.budget()
	if size > budget {
		return fail(ReasonMetadataTooLarge, "metadata is about %d bytes without the text, limit %d (Pinecone's %d less a margin and what the writer adds)", size, budget, MaxMetadataBytes)
	}

	if m.textField != "" {
		t := cutRunes(text, m.textMaxChars)
		keyLen := jsonStringLen(m.textField) + 2 // key, ':' and ','
		if size+keyLen+jsonStringLen(t) > budget {
			// Too large: shorten the text to what fits, or drop it (DESIGN §6: trim text first).
			t = cutJSON(t, budget-size-keyLen)
		}
		if t != "" {
			md = append(md, Field{Key: m.textField, Value: Value{Kind: KindString, Str: t}})
		}
	}
	return Record{Row: rowNumber, ID: id, Namespace: ns, Text: text, Metadata: md}, nil
}

// legacyRecord builds the old service's metadata (its EC2 default path), in its key order:
// text (the sanitized text cut to textMaxChars), source, s3_key, chunk_id "chunk_%04d",
// record_index (the row's index within its chunk), task_id, question_id, row_id (the id exactly
// as read, untrimmed), processed_at, then every other column in header order, the id column
// included, as the string read (untrimmed), skipped when empty or when its key is already
// present. Pinecone's metadata limit, which the old code did not check, still applies: the text
// is shortened first, as in the standard format.
func (m *Mapper) legacyRecord(rowNumber int64, id, ns, text string, fields []string) (Record, *RowError) {
	rowID := strings.TrimPrefix(id, m.idPrefix) // no id column: the derived id
	if m.idCol >= 0 {
		rowID = validUTF8(fields[m.idCol])
	}
	index := Field{Key: KeyRecordIndex, Value: Value{Kind: KindNumber, Num: float64(rowNumber - m.firstRow)}}
	rid := Field{Key: KeyRowID, Value: Value{Kind: KindString, Str: rowID}}
	md := make([]Field, 0, len(m.meta)+len(m.legacyHead)+len(m.legacyMid)+len(m.legacyTail)+3)
	if m.textField != "" {
		md = append(md, Field{Key: m.textField}) // filled below, once the size of the rest is known
	}
	md = append(md, m.legacyHead...)
	md = append(md, index)
	md = append(md, m.legacyMid...)
	md = append(md, rid)
	md = append(md, m.legacyTail...)
	size := 1 + m.legacyFixed + fieldLen(index) + fieldLen(rid)
	for _, c := range m.meta {
		v := fields[c.index]
		if v == "" || slices.ContainsFunc(md, func(f Field) bool { return f.Key == c.key }) {
			continue
		}
		f := Field{Key: c.key, Value: Value{Kind: KindString, Str: validUTF8(v)}}
		size += fieldLen(f)
		md = append(md, f)
	}
	budget := m.budget()
	if size > budget {
		return Record{}, &RowError{Row: rowNumber, Reason: ReasonMetadataTooLarge,
			Detail: fmt.Sprintf("metadata is about %d bytes without the text, limit %d (Pinecone's %d less a margin and what the writer adds)", size, budget, MaxMetadataBytes)}
	}
	if m.textField != "" {
		t := cutRunes(text, m.textMaxChars)
		keyLen := jsonStringLen(m.textField) + 2
		if size+keyLen+jsonStringLen(t) > budget {
			t = cutJSON(t, budget-size-keyLen)
		}
		if t == "" {
			md = md[1:]
		} else {
			md[0].Value = Value{Kind: KindString, Str: t}
		}
	}
	return Record{Row: rowNumber, ID: id, Namespace: ns, Text: text, Metadata: md}, nil
}

// budget is MetadataBudget less the fields the writer adds after mapping.
func (m *Mapper) budget() int { return MetadataBudget - m.reserved }

// FieldBytes is the most bytes f adds to a record's metadata as Pinecone measures it (with its
// separator).
func FieldBytes(f Field) int { return fieldLen(f) }

// Key is what identifies a row's vector: the Pinecone namespace and the vector id.
type Key struct {
	Namespace string
	// ID is the vector id (idPrefix + RawID).
	ID string
	// RawID is the id column's value, trimmed, or the DerivedID.
	RawID string
}

// Key checks the row's shape and encoding and returns its vector's namespace and id, or the
// reason the row fails (wrong_field_count, invalid_utf8, missing_id, invalid_id, id_too_long,
// bad_namespace). Map calls it first, and the planner calls it on every row to find duplicate
// ids, so both agree on which rows have a key. Ids are trimmed: "12" and " 12" are the same id.
func (m *Mapper) Key(rowNumber int64, fields []string) (Key, *RowError) {
	fail := func(reason, format string, args ...any) (Key, *RowError) {
		return Key{}, &RowError{Row: rowNumber, Reason: reason, Detail: fmt.Sprintf(format, args...)}
	}
	if len(fields) != m.width {
		return fail(ReasonWrongFieldCount, "row has %d fields, header has %d", len(fields), m.width)
	}
	for _, i := range m.used {
		if !utf8.ValidString(fields[i]) {
			at := invalidUTF8At(fields[i])
			return fail(ReasonInvalidUTF8, "column %q holds bytes that are not UTF-8 (at byte %d of the field: % x); "+
				"if the file is not UTF-8, set spec.source.csv.encoding", m.header[i], at, fields[i][at:min(at+4, len(fields[i]))])
		}
	}

	var rawID string
	if m.idCol < 0 {
		rawID = DerivedID(fields)
	} else {
		rawID = strings.TrimSpace(fields[m.idCol])
	}
	if rawID == "" {
		return fail(ReasonMissingID, "id column is empty")
	}
	if strings.IndexByte(rawID, 0) >= 0 {
		return fail(ReasonInvalidID, "id holds a NUL byte")
	}
	if n := len(m.idPrefix) + len(rawID); n > MaxIDBytes {
		return fail(ReasonIDTooLong, "vector id is %d bytes, limit %d", n, MaxIDBytes)
	}

	ns := m.defaultNS
	if m.nsCol >= 0 {
		if v := strings.TrimSpace(fields[m.nsCol]); v != "" {
			if strings.IndexByte(v, 0) >= 0 {
				return fail(ReasonBadNamespace, "namespace holds a NUL byte")
			}
			if n := utf8.RuneCountInString(v); n > MaxNamespaceChars {
				return fail(ReasonBadNamespace, "namespace is %d characters, limit %d", n, MaxNamespaceChars)
			}
			ns = v
		}
	}
	return Key{Namespace: ns, ID: m.idPrefix + rawID, RawID: rawID}, nil
}

// invalidUTF8At is the byte offset of the first byte of s that is not part of valid UTF-8.
func invalidUTF8At(s string) int {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return i
			}
		}
	}
	return len(s)
}

// value converts a non-empty metadata value, inferring its type when asked: "true"/"false" (any
// case) become booleans, and numbers written as JSON writes them (-?(0|[1-9][0-9]*)(.[0-9]+)?
// ([eE][+-]?[0-9]+)?) become float64. Anything else stays a string, so zip codes with leading
// zeros ("02134"), "+5", ".5", "1,000", "NaN" and "Inf" are kept as written, and so are integers
// beyond ±2^53 (a float64 would change their digits) and numbers a float64 cannot hold.
func (m *Mapper) value(s string) Value {
	if !m.inferTypes {
		return Value{Kind: KindString, Str: s}
	}
	switch {
	case strings.EqualFold(s, "true"):
		return Value{Kind: KindBool, Bool: true}
	case strings.EqualFold(s, "false"):
		return Value{Kind: KindBool, Bool: false}
	}
	isInt, ok := jsonNumber(s)
	if !ok {
		return Value{Kind: KindString, Str: s}
	}
	if isInt {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n > 1<<53 || n < -(1<<53) {
			return Value{Kind: KindString, Str: s}
		}
		return Value{Kind: KindNumber, Num: float64(n)}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) {
		return Value{Kind: KindString, Str: s}
	}
	return Value{Kind: KindNumber, Num: f}
}

// jsonNumber reports whether s is a JSON number, and whether it is written as an integer.
func jsonNumber(s string) (isInt, ok bool) {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		for i < len(s) && isDigit(s[i]) {
			i++
		}
	default:
		return false, false
	}
	isInt = true
	if i < len(s) && s[i] == '.' {
		i++
		if i == len(s) || !isDigit(s[i]) {
			return false, false
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		isInt = false
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if i == len(s) || !isDigit(s[i]) {
			return false, false
		}
		for i < len(s) && isDigit(s[i]) {
			i++
		}
		isInt = false
	}
	return isInt, i == len(s)
}

func validUTF8(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}

// runeStart is the largest character boundary of s at or before i < len(s).
func runeStart(s string, i int) int {
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return i
}

// cutRunes returns the first max characters (runes) of s, never splitting one.
func cutRunes(s string, max int) string {
	if len(s) <= max {
		return s // max bytes hold at most max runes
	}
	n := 0
	for i := range s {
		if n == max {
			return s[:i]
		}
		n++
	}
	return s
}

// cutJSON returns the longest rune prefix of s whose JSON string form fits in budget bytes.
func cutJSON(s string, budget int) string {
	n := 2
	if n > budget {
		return ""
	}
	for i, r := range s {
		w := utf8.RuneLen(r)
		switch {
		case r < utf8.RuneSelf:
			w = jsonByteLen(byte(r))
		case r == '\u2028' || r == '\u2029':
			w = 6
		}
		if n+w > budget {
			return s[:i]
		}
		n += w
	}
	return s
}

// fieldLen is the JSON size of `"key":value,`, the metadata size estimate of DESIGN §6:
// encoding/json's, except that an integral number counts the ".0" a 64-bit float gets where
// Pinecone measures (12 is "12.0"), so it is never less than Pinecone's measure either.
func fieldLen(f Field) int {
	n := jsonStringLen(f.Key) + 2
	switch f.Value.Kind {
	case KindNumber:
		// Never less than Pinecone's reading (shortest 64-bit float digits, ".0" after an
		// integral value), so what fits here fits the upserter's check of the same budget.
		v := f.Value.Num
		json := numberLen(v)
		if v == math.Trunc(v) && math.Abs(v) < 1e16 {
			json += 2
		}
		var buf [32]byte
		pc := len(strconv.AppendFloat(buf[:0], v, 'g', -1, 64))
		if v == math.Trunc(v) && math.Abs(v) < 1e16 {
			pc = len(strconv.AppendFloat(buf[:0], v, 'f', -1, 64)) + 2
		}
		n += max(json, pc)
	case KindBool:
		if f.Value.Bool {
			n += 4
		} else {
			n += 5
		}
	default:
		n += jsonStringLen(f.Value.Str)
	}
	return n
}

// numberLen is the size of v as encoding/json writes it.
func numberLen(v float64) int {
	var buf [32]byte
	abs, format := math.Abs(v), byte('f')
	if abs != 0 && (abs < 1e-6 || abs >= 1e21) {
		format = 'e'
	}
	b := strconv.AppendFloat(buf[:0], v, format, -1, 64)
	if format == 'e' && len(b) >= 4 && b[len(b)-4] == 'e' && b[len(b)-3] == '-' && b[len(b)-2] == '0' {
		return len(b) - 1 // encoding/json writes e-7, not e-07
	}
	return len(b)
}

// jsonStringLen is the size of s as a JSON string as encoding/json writes it without HTML
// escaping: quotes, two-byte escapes, \u00XX for other control bytes and \u2028/\u2029.
func jsonStringLen(s string) int {
	n := 2 + len(s)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c == '"' || c == '\\':
			n += jsonByteLen(c) - 1
		case c == 0xE2 && i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xA8 || s[i+2] == 0xA9):
			n += 3
		}
	}
	return n
}

// jsonByteLen is the JSON size of one ASCII byte inside a string.
func jsonByteLen(c byte) int {
	switch {
	case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
		return 2
	case c < 0x20:
		return 6
	}
	return 1
}
