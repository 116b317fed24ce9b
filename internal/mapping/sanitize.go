package mapping

import (
	"bytes"
	"fmt"
	"html"
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
// legacy is the old service's sanitize_text, step for step (see legacy.go): tags, html.unescape,
// four date rewrites, white space collapsed, then a character filter. It shares only the tag step
// with basic; its entity rules, character classes and order are Python's.
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

// Sanitize returns the cleaned text. Only legacy can fail, where the old function raised instead
// of returning a text (ErrLegacyUnescape).
func (s *Sanitizer) Sanitize(text string) (string, error) {
	switch s.mode {
	case SanitizeNone:
		return text, nil
	case SanitizeLegacy:
		return s.sanitizeLegacy(text)
	}
	s.a = stripTags(s.a[:0], text)
	if bytes.IndexByte(s.a, '&') >= 0 {
		s.b = unescapeEntities(s.b[:0], s.a)
		s.a, s.b = s.b, s.a
	}
	s.b = collapseSpace(s.b[:0], s.a)
	return string(s.b), nil
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
// trimmed (Go's unicode.IsSpace).
func collapseSpace(dst, src []byte) []byte {
	return collapseBy(dst, src, &asciiSpace, unicode.IsSpace)
}

// collapseBy collapses white space as isSpace (and its ASCII table) defines it. Runs of plain
// ASCII are copied with one append: this loop sees every byte of every row.
func collapseBy(dst, src []byte, ascii *[utf8.RuneSelf]bool, isSpace func(rune) bool) []byte {
	start := len(dst)
	pending := false
	for i := 0; i < len(src); {
		c := src[i]
		if c < utf8.RuneSelf {
			if ascii[c] {
				pending = true
				i++
				continue
			}
			j := i + 1
			for j < len(src) && src[j] < utf8.RuneSelf && !ascii[src[j]] {
				j++
			}
			if pending && len(dst) > start {
				dst = append(dst, ' ')
			}
			pending = false
			dst = append(dst, src[i:j]...)
			i = j
			continue
		}
		r, size := utf8.DecodeRune(src[i:])
		if isSpace(r) {
			pending = true
		} else {
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

// asciiSpace is unicode.IsSpace for ASCII.
var asciiSpace = [utf8.RuneSelf]bool{'\t': true, '\n': true, '\v': true, '\f': true, '\r': true, ' ': true}

func byteAt(src []byte, p int) byte {
	if p < len(src) {
		return src[p]
	}
	return 0
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }
