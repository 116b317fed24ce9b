package mapping

import (
	"bytes"
	"fmt"
	"sort"
	"strconv"
	"unicode/utf8"
)

// This file is `sanitize: legacy`: the old service's sanitize_text and format_human_readable_date
// (github.com/matthewclickbid/pinecone at f4cf29f, ec2-vectordb-api/app/utils/text_sanitizer.py,
// run on Python 3.11) redone step by step, with Python's semantics for each step:
//
//  1. an empty text stays empty;
//  2. re.sub(`<[^>]+>`, "") removes tags (stripTags, shared with basic);
//  3. html.unescape (pyUnescape): HTML5 named references with or without ';' (the longest known
//     prefix of an unknown name), decimal and hex references with or without ';', remapped and
//     dropped code points as Python does them;
//  4. four date rewrites, each a re.sub over the whole text, in this order, each seeing what the
//     one before it wrote (rewriteDatePass):
//     \b\d{4}-\d{2}-\d{2}[T\s]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?\b
//     \b\d{4}-\d{2}-\d{2}\b
//     \b\d{1,2}/\d{1,2}/\d{4}\b
//     \b\d{1,2}-\d{1,2}-\d{4}\b
//     Each match that datetime.strptime accepts becomes "%B {day}{suffix}, %Y %I:%M:%S %p"
//     ("January 10th, 2025 12:00:00 AM" for a date without a time); any other stays as it is;
//  5. re.sub(`\s+`, " ") and strip();
//  6. re.sub(`[^\w\s\-\.,!?;:()\[\]{}$]`, "") drops the other characters, with no second collapse
//     (so "a & b" becomes "a  b").
//
// \w, \s and \d are Python's: \w is str.isalnum() or '_', \s is str.isspace() (which includes
// \x1c–\x1f and \x85), \d is str.isdecimal() (any script's digits, which strptime also reads).
// Their tables, the entity table and the Unicode version (14.0, Python 3.11's) come from Python
// itself (legacy_tables.go, made by hack/legacytext/gen.py), and testdata/legacy_sanitize.jsonl.gz
// holds the old function's own outputs for 24,000 texts, which this code must reproduce exactly.

// pyRange is an inclusive range of code points.
type pyRange struct{ lo, hi rune }

func inRanges(rs []pyRange, r rune) bool {
	i := sort.Search(len(rs), func(i int) bool { return rs[i].hi >= r })
	return i < len(rs) && rs[i].lo <= r
}

// ASCII classes, so the common case needs no search: \w, \s, and what the character filter keeps
// (\w, \s and -.,!?;:()[]{}$).
var pyASCIIWord, pyASCIISpace, pyKeep = func() (word, space, keep [utf8.RuneSelf]bool) {
	for c := range rune(utf8.RuneSelf) {
		word[c] = c == '_' || inRanges(pyWordRanges, c)
		space[c] = inRanges(pySpaceRanges, c)
		keep[c] = word[c] || space[c]
	}
	for _, c := range "-.,!?;:()[]{}$" {
		keep[c] = true
	}
	return word, space, keep
}()

// pyIsWord is Python's \w.
func pyIsWord(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= 0 && pyASCIIWord[r]
	}
	return inRanges(pyWordRanges, r)
}

// pyIsSpace is Python's \s.
func pyIsSpace(r rune) bool {
	if r < utf8.RuneSelf {
		return r >= 0 && pyASCIISpace[r]
	}
	return inRanges(pySpaceRanges, r)
}

// pyDigit is Python's \d and, for such a character, the value int() gives it.
func pyDigit(r rune) (int, bool) {
	if r < utf8.RuneSelf {
		if '0' <= r && r <= '9' {
			return int(r - '0'), true
		}
		return 0, false
	}
	i := sort.Search(len(pyDigitRanges), func(i int) bool { return pyDigitRanges[i].hi >= r })
	if i < len(pyDigitRanges) && pyDigitRanges[i].lo <= r {
		return int(r - pyDigitRanges[i].lo), true
	}
	return 0, false
}

// pyIntMaxStrDigits is Python's default limit on the digits int() converts from a string
// (sys.get_int_max_str_digits()); html.unescape raised ValueError past it, and so did the old
// sanitize_text.
const pyIntMaxStrDigits = 4300

// ErrLegacyUnescape says the old sanitize_text raised on a text instead of returning one.
var ErrLegacyUnescape = fmt.Errorf("a numeric character reference has more than %d digits: the old service's html.unescape raised ValueError on this text", pyIntMaxStrDigits)

// sanitizeLegacy runs steps 1–6 above.
func (s *Sanitizer) sanitizeLegacy(text string) (string, error) {
	if text == "" {
		return "", nil
	}
	s.a = stripTags(s.a[:0], text)
	if bytes.IndexByte(s.a, '&') >= 0 {
		var err error
		if s.b, err = pyUnescape(s.b[:0], s.a); err != nil {
			return "", err
		}
		s.a, s.b = s.b, s.a
	}
	// Every date form holds a '-' or a '/'; a text with neither skips the four passes.
	if bytes.IndexByte(s.a, '-') >= 0 || bytes.IndexByte(s.a, '/') >= 0 {
		for p := range datePatternCount {
			var changed bool
			if s.b, changed = rewriteDatePass(s.b[:0], s.a, p); changed {
				s.a, s.b = s.b, s.a
			}
		}
	}
	s.b = pyCollapse(s.b[:0], s.a)
	s.a = pyFilter(s.a[:0], s.b)
	return string(s.a), nil
}

// pyCollapse is re.sub(r'\s+', ' ', text).strip().
func pyCollapse(dst, src []byte) []byte {
	return collapseBy(dst, src, &pyASCIISpace, pyIsSpace)
}

// pyFilter is re.sub(r'[^\w\s\-\.,!?;:()\[\]{}$]', ”, text).
func pyFilter(dst, src []byte) []byte {
	for i := 0; i < len(src); {
		c := src[i]
		if c < utf8.RuneSelf {
			j := i
			for j < len(src) && src[j] < utf8.RuneSelf && pyKeep[src[j]] {
				j++
			}
			dst = append(dst, src[i:j]...)
			if j == i {
				j++ // dropped
			}
			i = j
			continue
		}
		r, size := utf8.DecodeRune(src[i:])
		if pyIsWord(r) || pyIsSpace(r) {
			dst = append(dst, src[i:i+size]...)
		}
		i += size
	}
	return dst
}

// pyUnescape is Python's html.unescape: every match of
//
//	&(#[0-9]+;?|#[xX][0-9a-fA-F]+;?|[^\t\n\f <&#;]{1,32};?)
//
// is replaced as _replace_charref does it.
func pyUnescape(dst, src []byte) ([]byte, error) {
	for {
		amp := bytes.IndexByte(src, '&')
		if amp < 0 {
			return append(dst, src...), nil
		}
		dst = append(dst, src[:amp]...)
		src = src[amp:]
		n, err := 0, error(nil)
		dst, n, err = pyCharref(dst, src)
		if err != nil {
			return nil, err
		}
		if n == 0 {
			// No reference starts at this '&': it stays, and the search goes on after it.
			dst = append(dst, '&')
			n = 1
		}
		src = src[n:]
	}
}

// pyCharref replaces the reference at src[0] == '&', returning how many bytes it took (0: none).
func pyCharref(dst, src []byte) ([]byte, int, error) {
	if len(src) > 1 && src[1] == '#' {
		p := 2
		hex := false
		if len(src) > 2 && (src[2] == 'x' || src[2] == 'X') && len(src) > 3 && isHexDigit(src[3]) {
			hex, p = true, 3
		} else if len(src) <= 2 || !isDigit(src[2]) {
			return dst, 0, nil // "&#" with no digits: the named form cannot start with '#'
		}
		start := p
		num, big := 0, false
		for p < len(src) && (isDigit(src[p]) || hex && isHexDigit(src[p])) {
			if !big {
				if hex {
					num = num*16 + hexVal(src[p])
				} else {
					num = num*10 + int(src[p]-'0')
				}
				big = num > 0x10FFFF
			}
			p++
		}
		if !hex && p-start > pyIntMaxStrDigits {
			return nil, 0, ErrLegacyUnescape
		}
		if p < len(src) && src[p] == ';' {
			p++
		}
		switch r, remapped := pyInvalidCharrefs[num]; {
		case big:
			dst = append(dst, "\uFFFD"...)
		case remapped:
			dst = append(dst, r...)
		case 0xD800 <= num && num <= 0xDFFF:
			dst = append(dst, "\uFFFD"...)
		case pyInvalidCodepoints[num]:
		default:
			dst = utf8.AppendRune(dst, rune(num))
		}
		return dst, p, nil
	}
	// A name: 1 to 32 characters other than \t \n \f space < & # ;, then an optional ';'.
	p, runes := 1, 0
	var ends [33]int // ends[k]: the byte offset after the name's first k characters
	for p < len(src) && runes < 32 {
		c := src[p]
		if c == '\t' || c == '\n' || c == '\f' || c == ' ' || c == '<' || c == '&' || c == '#' || c == ';' {
			break
		}
		size := 1
		if c >= utf8.RuneSelf {
			_, size = utf8.DecodeRune(src[p:])
		}
		p += size
		runes++
		ends[runes] = p
	}
	if runes == 0 {
		return dst, 0, nil
	}
	nameEnd := p
	if p < len(src) && src[p] == ';' {
		p++
	}
	if r, ok := pyHTML5Entities[string(src[1:p])]; ok {
		return append(dst, r...), p, nil
	}
	// Else the longest known prefix s[:x] of s (the name and its ';', if any), x from len(s)-1
	// down to 2 characters; such a prefix never holds the ';', and only names without one match.
	total := runes
	if p > nameEnd {
		total++
	}
	for x := total - 1; x >= 2; x-- {
		if r, ok := pyHTML5Entities[string(src[1:ends[x]])]; ok {
			dst = append(dst, r...)
			return append(dst, src[ends[x]:p]...), p, nil
		}
	}
	return append(dst, src[:p]...), p, nil
}

func isHexDigit(c byte) bool {
	return isDigit(c) || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func hexVal(c byte) int {
	switch {
	case isDigit(c):
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	}
	return int(c-'A') + 10
}

// The four date patterns, in the order the old code ran them.
const (
	patISODateTime = iota // \b\d{4}-\d{2}-\d{2}[T\s]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?\b
	patISODate            // \b\d{4}-\d{2}-\d{2}\b
	patSlashDate          // \b\d{1,2}/\d{1,2}/\d{4}\b
	patDashDate           // \b\d{1,2}-\d{1,2}-\d{4}\b
	datePatternCount
)

// pyDigitChar is one \d character read from the text: its value, and whether it is ASCII (the
// strptime regular expressions take only ASCII in some places).
type pyDigitChar struct {
	val   int
	ascii bool
}

// digits reads exactly n \d characters at src[p].
func readDigits(src []byte, p, n int, out []pyDigitChar) (int, []pyDigitChar, bool) {
	for range n {
		if p >= len(src) {
			return p, out, false
		}
		if c := src[p]; c < utf8.RuneSelf {
			if !isDigit(c) {
				return p, out, false
			}
			out = append(out, pyDigitChar{int(c - '0'), true})
			p++
			continue
		}
		r, size := utf8.DecodeRune(src[p:])
		v, ok := pyDigit(r)
		if !ok {
			return p, out, false
		}
		out = append(out, pyDigitChar{v, false})
		p += size
	}
	return p, out, true
}

// readUpTo2Digits reads \d{1,2} greedily. The next thing the patterns want is a separator, which
// a digit is not, so taking one digit when two are there never leads to a match.
func readUpTo2Digits(src []byte, p int, out []pyDigitChar) (int, []pyDigitChar, bool) {
	p, out, ok := readDigits(src, p, 1, out)
	if !ok {
		return p, out, false
	}
	if q, out2, ok := readDigits(src, p, 1, out); ok {
		return q, out2, true
	}
	return p, out, true
}

func pyWordAt(src []byte, p int) bool {
	if p >= len(src) {
		return false
	}
	if c := src[p]; c < utf8.RuneSelf {
		return pyASCIIWord[c]
	}
	r, _ := utf8.DecodeRune(src[p:])
	return pyIsWord(r)
}

// rewriteDatePass is one re.sub of pattern pat over src, with the old format_human_readable_date
// as the replacement: each match it can read as a date becomes words; others stay as they are.
// A match starts at a \d with \b before it, that is where the character before is not \w.
// Without a replacement it writes nothing and says so: src is the pass's result.
func rewriteDatePass(dst, src []byte, pat int) ([]byte, bool) {
	need := byte('-')
	if pat == patSlashDate {
		need = '/'
	}
	if bytes.IndexByte(src, need) < 0 {
		return dst, false
	}
	changed := false
	var ds [14]pyDigitChar
	last := 0 // src[last:] is not yet copied
	for i := 0; i < len(src); {
		c := src[i]
		if c < utf8.RuneSelf && !isDigit(c) {
			i++
			continue
		}
		size, isDig := 1, true
		if c >= utf8.RuneSelf {
			var r rune
			r, size = utf8.DecodeRune(src[i:])
			_, isDig = pyDigit(r)
		}
		if isDig && !pyWordBefore(src, i) {
			if end, d, ok := matchDatePattern(src, i, pat, ds[:0]); ok {
				if d.ok {
					dst = append(dst, src[last:i]...)
					dst = d.appendWords(dst)
					last, changed = end, true
				}
				i = end
				continue
			}
		}
		i += size
	}
	if !changed {
		return dst, false
	}
	return append(dst, src[last:]...), true
}

// pyWordBefore says whether the character before src[i] is \w.
func pyWordBefore(src []byte, i int) bool {
	if i == 0 {
		return false
	}
	if c := src[i-1]; c < utf8.RuneSelf {
		return pyASCIIWord[c]
	}
	r, _ := utf8.DecodeLastRune(src[:i])
	return pyIsWord(r)
}

// pyDate is what strptime made of a match; ok is false when it raised (the match stays).
type pyDate struct {
	ok                   bool
	year, month, day     int
	hour, minute, second int
}

// matchDatePattern matches pattern pat at src[i] and parses the match as the old
// format_human_readable_date did.
func matchDatePattern(src []byte, i, pat int, ds []pyDigitChar) (int, pyDate, bool) {
	var ok bool
	p := i
	switch pat {
	case patISODateTime, patISODate:
		// Fields in ds: year 0–3, month 4–5, day 6–7, and for the datetime hour 8–9, minute
		// 10–11, second 12–13.
		if p, ds, ok = readDigits(src, p, 4, ds); !ok || byteAt(src, p) != '-' {
			return 0, pyDate{}, false
		}
		if p, ds, ok = readDigits(src, p+1, 2, ds); !ok || byteAt(src, p) != '-' {
			return 0, pyDate{}, false
		}
		if p, ds, ok = readDigits(src, p+1, 2, ds); !ok {
			return 0, pyDate{}, false
		}
		if pat == patISODate {
			if pyWordAt(src, p) {
				return 0, pyDate{}, false
			}
			return p, strptimeISO(ds, false), true
		}
		// [T\s]
		if p >= len(src) {
			return 0, pyDate{}, false
		}
		if r, size := utf8.DecodeRune(src[p:]); r == 'T' || pyIsSpace(r) {
			p += size
		} else {
			return 0, pyDate{}, false
		}
		if p, ds, ok = readDigits(src, p, 2, ds); !ok || byteAt(src, p) != ':' {
			return 0, pyDate{}, false
		}
		if p, ds, ok = readDigits(src, p+1, 2, ds); !ok || byteAt(src, p) != ':' {
			return 0, pyDate{}, false
		}
		if p, ds, ok = readDigits(src, p+1, 2, ds); !ok {
			return 0, pyDate{}, false
		}
		end, ok := isoTail(src, p)
		if !ok {
			return 0, pyDate{}, false
		}
		return end, strptimeISO(ds, true), true
	default:
		sep := byte('/')
		if pat == patDashDate {
			sep = '-'
		}
		if p, ds, ok = readUpTo2Digits(src, p, ds); !ok || byteAt(src, p) != sep {
			return 0, pyDate{}, false
		}
		nm := len(ds)
		if p, ds, ok = readUpTo2Digits(src, p+1, ds); !ok || byteAt(src, p) != sep {
			return 0, pyDate{}, false
		}
		nd := len(ds) - nm
		if p, ds, ok = readDigits(src, p+1, 4, ds); !ok || pyWordAt(src, p) {
			return 0, pyDate{}, false
		}
		return p, strptimeUS(ds[:nm], ds[nm:nm+nd], ds[nm+nd:]), true
	}
}

// isoTail matches (?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?\b at src[p], trying the alternatives in the
// order Python's backtracking does: the fraction (longest first) before none, then 'Z', then an
// offset with ':' and without, then no zone; the first whose end is a \b wins.
func isoTail(src []byte, p int) (int, bool) {
	try := func(at int) (int, bool) {
		switch byteAt(src, at) {
		case 'Z':
			if !pyWordAt(src, at+1) {
				return at + 1, true
			}
		case '+', '-':
			if q, _, ok := readDigits(src, at+1, 2, nil); ok {
				if byteAt(src, q) == ':' {
					if e, _, ok := readDigits(src, q+1, 2, nil); ok && !pyWordAt(src, e) {
						return e, true
					}
				}
				if e, _, ok := readDigits(src, q, 2, nil); ok && !pyWordAt(src, e) {
					return e, true
				}
			}
		}
		if !pyWordAt(src, at) {
			return at, true
		}
		return 0, false
	}
	if byteAt(src, p) == '.' {
		// Only the longest fraction can lead to a match: a shorter one is followed by a digit,
		// which is neither 'Z', '+', '-' nor a \b.
		q, ok := p+1, false
		for {
			next, _, more := readDigits(src, q, 1, nil)
			if !more {
				break
			}
			q, ok = next, true
		}
		if ok {
			if e, ok := try(q); ok {
				return e, true
			}
		}
	}
	return try(p)
}

// strptime's regular expressions for the fields (Python 3.11 _strptime), applied to the
// characters the date patterns matched:
//
//	%m  1[0-2]|0[1-9]|[1-9]          %H  2[0-3]|[0-1]\d|\d
//	%d  3[0-1]|[1-2]\d|0[1-9]|[1-9]  %M  [0-5]\d|\d
//	%Y  \d\d\d\d                      %S  6[0-1]|[0-5]\d|\d
//
// A field is always followed by a separator or the end of the text, and strptime fails when text
// is left over, so a one-character alternative matching the first of two characters never
// helps: a field reads in full or strptime raises. Brackets are ASCII; \d is any digit.

func asc(d pyDigitChar, lo, hi int) bool { return d.ascii && lo <= d.val && d.val <= hi }

func fieldMonth(f []pyDigitChar) (int, bool) {
	if len(f) == 1 {
		return f[0].val, asc(f[0], 1, 9)
	}
	if asc(f[0], 1, 1) && asc(f[1], 0, 2) || asc(f[0], 0, 0) && asc(f[1], 1, 9) {
		return f[0].val*10 + f[1].val, true
	}
	return 0, false
}

func fieldDay(f []pyDigitChar) (int, bool) {
	if len(f) == 1 {
		return f[0].val, asc(f[0], 1, 9)
	}
	if asc(f[0], 3, 3) && asc(f[1], 0, 1) || asc(f[0], 1, 2) || asc(f[0], 0, 0) && asc(f[1], 1, 9) {
		return f[0].val*10 + f[1].val, true
	}
	return 0, false
}

func fieldYear(f []pyDigitChar) int {
	return f[0].val*1000 + f[1].val*100 + f[2].val*10 + f[3].val
}

// strptimeISO is datetime.strptime(s, '%Y-%m-%d') or, with time, of the first 19 characters
// with 'T' made ' ' and '%Y-%m-%d %H:%M:%S' (the space is \s+ to strptime, as [T\s] was).
func strptimeISO(ds []pyDigitChar, withTime bool) pyDate {
	d := pyDate{year: fieldYear(ds[0:4])}
	var ok1, ok2 bool
	d.month, ok1 = fieldMonth(ds[4:6])
	d.day, ok2 = fieldDay(ds[6:8])
	if !ok1 || !ok2 {
		return pyDate{}
	}
	if withTime {
		h, m, s := ds[8:10], ds[10:12], ds[12:14]
		if !(asc(h[0], 2, 2) && asc(h[1], 0, 3) || asc(h[0], 0, 1)) || !asc(m[0], 0, 5) || !asc(s[0], 0, 5) {
			// 60 and 61 pass the %S expression but datetime refuses them: the same outcome.
			return pyDate{}
		}
		d.hour, d.minute, d.second = h[0].val*10+h[1].val, m[0].val*10+m[1].val, s[0].val*10+s[1].val
	}
	d.ok = d.year >= 1 && d.day <= daysIn(d.year, d.month)
	return d
}

// strptimeUS is datetime.strptime(s, '%m/%d/%Y') (or with '-').
func strptimeUS(m, dd, y []pyDigitChar) pyDate {
	d := pyDate{year: fieldYear(y)}
	var ok1, ok2 bool
	d.month, ok1 = fieldMonth(m)
	d.day, ok2 = fieldDay(dd)
	d.ok = ok1 && ok2 && d.year >= 1 && d.day <= daysIn(d.year, d.month)
	return d
}

var monthNames = [12]string{"January", "February", "March", "April", "May", "June", "July",
	"August", "September", "October", "November", "December"}

func daysIn(year, month int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// appendWords writes dt.strftime(f"%B {day}{suffix}, %Y %I:%M:%S %p"): glibc's %Y does not pad
// years before 1000, and a date without a time is at midnight, "12:00:00 AM".
func (d pyDate) appendWords(dst []byte) []byte {
	dst = append(dst, monthNames[d.month-1]...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(d.day), 10)
	suffix := "th"
	if dm := d.day % 100; dm < 10 || dm > 20 {
		switch d.day % 10 {
		case 1:
			suffix = "st"
		case 2:
			suffix = "nd"
		case 3:
			suffix = "rd"
		}
	}
	dst = append(dst, suffix...)
	dst = append(dst, ", "...)
	dst = strconv.AppendInt(dst, int64(d.year), 10)
	h, ampm := d.hour%12, " AM"
	if h == 0 {
		h = 12
	}
	if d.hour >= 12 {
		ampm = " PM"
	}
	dst = append(dst, ' ')
	dst = append2(dst, h)
	dst = append(dst, ':')
	dst = append2(dst, d.minute)
	dst = append(dst, ':')
	dst = append2(dst, d.second)
	return append(dst, ampm...)
}

func append2(dst []byte, v int) []byte { return append(dst, byte('0'+v/10), byte('0'+v%10)) }
