package mapping

import (
	"bytes"
	"fmt"
	"html"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Sanitize modes (spec.mapping.sanitize).
const (
	SanitizeNone   = "none"
	SanitizeBasic  = "basic"
	SanitizeLegacy = "legacy"
)

// Sanitizer cleans text before it is embedded, as DESIGN §6 says. It keeps its scratch buffers
// between calls, so a row usually costs one allocation (the result string); it is therefore not
// safe for concurrent use.
//
// none leaves the text as it is.
//
// basic, in this order:
//  1. strips HTML tags exactly as the old system's regular expression `<[^>]+>` did: a '<', one or
//     more characters other than '>', then '>' is removed (replaced by nothing, so
//     "<p>a</p><p>b</p>" gives "ab"). Only the tags go: the text between <script> or <style> tags is
//     kept. A '<' with no later '>' (or "<>") is left as it is.
//  2. unescapes HTML entities with html.UnescapeString (&amp; &nbsp; &#39; ...). This happens after
//     step 1, so "&lt;b&gt;" becomes the literal text "<b>" and is not stripped.
//  3. collapses every run of Unicode white space (unicode.IsSpace, which includes the no-break
//     space U+00A0 that &nbsp; becomes) to one ASCII space and trims both ends.
//
// legacy is basic, then:
//  4. rewrites dates as the old Python system did (details in rewriteDates):
//     ISO datetimes  2025-01-10T22:45:23[.fff][Z|±HH:MM|±HHMM] → "January 10th, 2025 10:45:23 PM",
//     YYYY-MM-DD, MM/DD/YYYY, MM-DD-YYYY                         → "January 10th, 2025".
//     The hour is zero-padded like Python's %I ("09:05:07 AM"), the zone is dropped without
//     converting, a date without a time gets no time, and dates that do not exist stay as written.
//     This runs before step 5, which would drop the '/' of MM/DD/YYYY.
//  5. drops every character that is not a letter (unicode.IsLetter, any script), a decimal digit
//     (unicode.IsDigit, any script; so not '²' or '½'), white space or one of -.,!?;:()[]{}$ .
//     So emoji, symbols, quotes, '/', '_', '&', '<', '>', '%', '#', combining marks and U+FFFD
//     are removed.
//  6. collapses white space and trims again (step 5 can leave "a  b" behind).
//
// Text is expected to be valid UTF-8 (Mapper.Map repairs it first).
type Sanitizer struct {
	mode string
	a, b []byte
}

// NewSanitizer returns a Sanitizer for mode; "" means basic (the API default).
func NewSanitizer(mode string) (*Sanitizer, error) {
	switch mode {
	case "":
		mode = SanitizeBasic
	case SanitizeNone, SanitizeBasic, SanitizeLegacy:
	default:
		return nil, fmt.Errorf("unknown sanitize mode %q: want none, basic or legacy", mode)
	}
	return &Sanitizer{mode: mode}, nil
}

// Mode is the sanitizer's mode.
func (s *Sanitizer) Mode() string { return s.mode }

// Sanitize returns the cleaned text.
func (s *Sanitizer) Sanitize(text string) string {
	if s.mode == SanitizeNone {
		return text
	}
	s.a = stripTags(s.a[:0], text)
	if bytes.IndexByte(s.a, '&') >= 0 {
		s.b = unescapeEntities(s.b[:0], s.a)
		s.a, s.b = s.b, s.a
	}
	s.b = collapseSpace(s.b[:0], s.a, false)
	if s.mode == SanitizeBasic {
		return string(s.b)
	}
	s.a = rewriteDates(s.a[:0], s.b)
	s.b = collapseSpace(s.b[:0], s.a, true)
	return string(s.b)
}

// commonEntities are replaced without calling into package html.
var commonEntities = map[string]string{
	"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": "\"", "&#39;": "'", "&#34;": "\"",
	"&apos;": "'", "&nbsp;": "\u00a0",
}

// unescapeEntities appends src to dst with HTML entities unescaped exactly as html.UnescapeString
// does, without copying the whole text into a string twice per row. An entity is read by
// html.UnescapeString from '&', an optional '#' and a run of ASCII letters and digits up to an
// optional ';', and nothing past that changes its meaning, so each such span is unescaped on its
// own: common entities from a table, any other span by html.UnescapeString.
func unescapeEntities(dst, src []byte) []byte {
	for {
		amp := bytes.IndexByte(src, '&')
		if amp < 0 {
			return append(dst, src...)
		}
		dst = append(dst, src[:amp]...)
		src = src[amp:]
		end := 1
		if end < len(src) && src[end] == '#' {
			end++
		}
		for end < len(src) && isASCIIAlnum(src[end]) {
			end++
		}
		if end < len(src) && src[end] == ';' {
			end++
		}
		if r, ok := commonEntities[string(src[:end])]; ok {
			dst = append(dst, r...)
		} else {
			dst = append(dst, html.UnescapeString(string(src[:end]))...)
		}
		src = src[end:]
	}
}

func isASCIIAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// stripTags appends src to dst without the substrings `<[^>]+>` matches, scanning instead of
// using a regexp (this runs for every row).
func stripTags(dst []byte, src string) []byte {
	for {
		lt := strings.IndexByte(src, '<')
		if lt < 0 {
			return append(dst, src...)
		}
		gt := strings.IndexByte(src[lt+1:], '>')
		if gt < 0 {
			// No '>' after this '<', so none after any later '<' either.
			return append(dst, src...)
		}
		if gt == 0 {
			// "<>": `[^>]+` needs at least one character; keep the '<' and go on after it.
			dst = append(dst, src[:lt+1]...)
			src = src[lt+1:]
			continue
		}
		dst = append(dst, src[:lt]...)
		src = src[lt+1+gt+1:]
	}
}

// collapseSpace appends src to dst with white-space runs collapsed to one ' ' and both ends
// trimmed. With filter it also drops the characters legacy mode does not keep. Runs of plain
// ASCII are copied with one append: this loop sees every byte of every row.
func collapseSpace(dst, src []byte, filter bool) []byte {
	class := &basicClass
	if filter {
		class = &legacyClass
	}
	start := len(dst)
	pending := false
	for i := 0; i < len(src); {
		c := src[i]
		if c < utf8.RuneSelf {
			switch class[c] {
			case classKeep:
				j := i + 1
				for j < len(src) && src[j] < utf8.RuneSelf && class[src[j]] == classKeep {
					j++
				}
				if pending && len(dst) > start {
					dst = append(dst, ' ')
				}
				pending = false
				dst = append(dst, src[i:j]...)
				i = j
			case classSpace:
				pending = true
				i++
			default:
				i++
			}
			continue
		}
		r, size := utf8.DecodeRune(src[i:])
		switch {
		case unicode.IsSpace(r):
			pending = true
		case filter && !(unicode.IsLetter(r) || unicode.IsDigit(r)):
		default:
			if pending && len(dst) > start {
				dst = append(dst, ' ')
			}
			pending = false
			dst = append(dst, src[i:i+size]...)
		}
		i += size
	}
	return dst
}

// Classes of ASCII bytes for collapseSpace.
const (
	classKeep = iota
	classSpace
	classDrop
)

var basicClass, legacyClass = func() (basic, legacy [utf8.RuneSelf]uint8) {
	for c := range utf8.RuneSelf {
		legacy[c] = classDrop
	}
	for _, c := range "\t\n\v\f\r " {
		basic[c], legacy[c] = classSpace, classSpace
	}
	keep := "-.,!?;:()[]{}$0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	for _, c := range keep {
		legacy[c] = classKeep
	}
	return basic, legacy
}()

var monthNames = [12]string{"January", "February", "March", "April", "May", "June", "July",
	"August", "September", "October", "November", "December"}

// rewriteDates appends src to dst with dates rewritten in the old system's words. It scans for
// digits instead of running four regular expressions per row. A date is recognised only where it
// is a whole word: the characters just before and after it are not letters, digits or '_' (the
// `\b` of the old regular expressions), so "12025-01-10", "2025-01-10T22:45" and "v2025-01-10"
// are left alone. The forms, with what they become:
//
//	2025-01-10T22:45:23            January 10th, 2025 10:45:23 PM
//	2025-01-10T22:45:23.123456Z    January 10th, 2025 10:45:23 PM  (fraction and zone dropped, the
//	2025-01-10T22:45:23+05:30      January 10th, 2025 10:45:23 PM   wall-clock time is kept as written)
//	2025-01-10                     January 10th, 2025
//	01/10/2025, 1/10/2025          January 10th, 2025
//	01-10-2025, 1-10-2025          January 10th, 2025
//
// ISO dates need two-digit months and days and a 'T' before the time (hours, minutes and seconds
// all required); "2025-01-10 22:45:23" rewrites only its date part. US dates take one or two digit
// months and days. The hour is on a 12-hour clock, zero-padded as Python's %I prints it
// ("09:05:00 AM"; midnight is "12:00:00 AM", noon "12:00:00 PM"); the day has no padding and an
// ordinal suffix (1st 2nd 3rd 4th 11th 12th 13th 21st 22nd 23rd 31st). A date without a time has
// no time part. Dates that do not exist (2025-13-45, 02/30/2025, year 0000) and times past
// 23:59:59 are left as they are. Optional parts are taken greedily: if what follows them is a
// letter or digit the whole candidate is left alone.
func rewriteDates(dst, src []byte) []byte {
	last := 0 // src[last:i] is not yet copied to dst
	for i := 0; i < len(src); {
		if !isDigit(src[i]) {
			i++
			continue
		}
		if boundaryBefore(src, i) {
			if end, d, ok := matchDate(src, i); ok {
				dst = append(dst, src[last:i]...)
				dst = d.appendWords(dst)
				i, last = end, end
				continue
			}
		}
		// No date starts inside a run of digits either: each has a digit before it.
		for i < len(src) && isDigit(src[i]) {
			i++
		}
	}
	return append(dst, src[last:]...)
}

type dateTime struct {
	year, month, day  int
	hasTime           bool
	hour, minute, sec int
}

func (d dateTime) valid() bool {
	if d.year < 1 || d.month < 1 || d.month > 12 || d.day < 1 || d.day > daysIn(d.year, d.month) {
		return false
	}
	return !d.hasTime || (d.hour <= 23 && d.minute <= 59 && d.sec <= 59)
}

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

// appendWords renders "January 10th, 2025" and, with a time, " 10:45:23 PM".
func (d dateTime) appendWords(dst []byte) []byte {
	dst = append(dst, monthNames[d.month-1]...)
	dst = append(dst, ' ')
	dst = strconv.AppendInt(dst, int64(d.day), 10)
	dst = append(dst, ordinal(d.day)...)
	dst = append(dst, ", "...)
	dst = append(dst, byte('0'+d.year/1000), byte('0'+d.year/100%10), byte('0'+d.year/10%10), byte('0'+d.year%10))
	if !d.hasTime {
		return dst
	}
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
	dst = append2(dst, d.sec)
	return append(dst, ampm...)
}

func append2(dst []byte, v int) []byte { return append(dst, byte('0'+v/10), byte('0'+v%10)) }

func ordinal(day int) string {
	if day >= 11 && day <= 13 {
		return "th"
	}
	switch day % 10 {
	case 1:
		return "st"
	case 2:
		return "nd"
	case 3:
		return "rd"
	}
	return "th"
}

// matchDate reports the date starting at src[i] (a digit with a word boundary before it) and
// where it ends.
func matchDate(src []byte, i int) (end int, d dateTime, ok bool) {
	// YYYY-MM-DD, optionally followed by THH:MM:SS.
	if y, ok4 := fixedDigits(src, i, 4); ok4 && byteAt(src, i+4) == '-' {
		mo, okM := fixedDigits(src, i+5, 2)
		dd, okD := fixedDigits(src, i+8, 2)
		if !okM || byteAt(src, i+7) != '-' || !okD {
			return 0, d, false
		}
		d = dateTime{year: y, month: mo, day: dd}
		end = i + 10
		if byteAt(src, end) == 'T' {
			tEnd, ok := matchTime(src, end+1, &d)
			if !ok {
				return 0, d, false
			}
			end = tEnd
		}
		if !boundaryAfter(src, end) || !d.valid() {
			return 0, d, false
		}
		return end, d, true
	}
	// M/D/YYYY or M-D-YYYY, one or two digits for month and day, the same separator twice.
	p := i
	mo, n := upTo2Digits(src, p)
	p += n
	sep := byteAt(src, p)
	if sep != '/' && sep != '-' {
		return 0, d, false
	}
	dd, n := upTo2Digits(src, p+1)
	if n == 0 {
		return 0, d, false
	}
	p += 1 + n
	if byteAt(src, p) != sep {
		return 0, d, false
	}
	y, ok4 := fixedDigits(src, p+1, 4)
	end = p + 5
	d = dateTime{year: y, month: mo, day: dd}
	if !ok4 || !boundaryAfter(src, end) || !d.valid() {
		return 0, d, false
	}
	return end, d, true
}

// matchTime reads HH:MM:SS[.fraction][Z|±HH:MM|±HHMM] at src[p] into d.
func matchTime(src []byte, p int, d *dateTime) (end int, ok bool) {
	h, okH := fixedDigits(src, p, 2)
	m, okM := fixedDigits(src, p+3, 2)
	s, okS := fixedDigits(src, p+6, 2)
	if !okH || byteAt(src, p+2) != ':' || !okM || byteAt(src, p+5) != ':' || !okS {
		return 0, false
	}
	d.hasTime, d.hour, d.minute, d.sec = true, h, m, s
	end = p + 8
	if byteAt(src, end) == '.' && isDigit(byteAt(src, end+1)) {
		end += 2
		for isDigit(byteAt(src, end)) {
			end++
		}
	}
	switch byteAt(src, end) {
	case 'Z':
		end++
	case '+', '-':
		if _, ok := fixedDigits(src, end+1, 2); ok {
			if _, ok := fixedDigits(src, end+4, 2); ok && byteAt(src, end+3) == ':' {
				end += 6
			} else if _, ok := fixedDigits(src, end+3, 2); ok {
				end += 5
			}
		}
	}
	return end, true
}

// fixedDigits reads exactly n digits at src[p].
func fixedDigits(src []byte, p, n int) (int, bool) {
	if p+n > len(src) {
		return 0, false
	}
	v := 0
	for _, c := range src[p : p+n] {
		if !isDigit(c) {
			return 0, false
		}
		v = v*10 + int(c-'0')
	}
	return v, true
}

// upTo2Digits reads one or two digits at src[p] and says how many it read.
func upTo2Digits(src []byte, p int) (v, n int) {
	for n < 2 && isDigit(byteAt(src, p+n)) {
		v = v*10 + int(src[p+n]-'0')
		n++
	}
	return v, n
}

func byteAt(src []byte, p int) byte {
	if p < len(src) {
		return src[p]
	}
	return 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isWordRune(r rune) bool { return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r) }

func boundaryBefore(src []byte, i int) bool {
	if i == 0 {
		return true
	}
	if c := src[i-1]; c < utf8.RuneSelf {
		return !isWordRune(rune(c))
	}
	r, _ := utf8.DecodeLastRune(src[:i])
	return !isWordRune(r)
}

func boundaryAfter(src []byte, end int) bool {
	if end >= len(src) {
		return true
	}
	if c := src[end]; c < utf8.RuneSelf {
		return !isWordRune(rune(c))
	}
	r, _ := utf8.DecodeRune(src[end:])
	return !isWordRune(r)
}
