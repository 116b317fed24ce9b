package tokens

import (
	"unicode"
	"unicode/utf8"
)

// The pre-tokenizer below is a hand-written equivalent of cl100k_base's split pattern
//
//	(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//
// as a backtracking engine (regexp2, PCRE) runs it: at each position the first alternative that
// matches wins, and the next match starts where this one ended. Every character starts some
// alternative, so the pieces tile the text. The character sets are the ones regexp2 uses in its
// default mode: \s is unicode.IsSpace, \p{L} and \p{N} are unicode.L and unicode.N.

// class is what the pattern distinguishes about one character.
type class uint8

const (
	clsOther   class = iota // not \s, \p{L} or \p{N}: punctuation, symbols, marks, controls
	clsLetter               // \p{L}
	clsNumber               // \p{N}
	clsNewline              // \r or \n, the only spaces the pattern names
	clsSpace                // any other \s
)

var asciiClass = func() (t [utf8.RuneSelf]class) {
	for c := rune(0); c < utf8.RuneSelf; c++ {
		t[c] = classifySlow(c)
	}
	return t
}()

func classifySlow(r rune) class {
	switch {
	case r == '\r' || r == '\n':
		return clsNewline
	case unicode.IsSpace(r):
		return clsSpace
	case unicode.Is(unicode.L, r):
		return clsLetter
	case unicode.Is(unicode.N, r):
		return clsNumber
	}
	return clsOther
}

func classify(r rune) class {
	if r < utf8.RuneSelf {
		return asciiClass[r]
	}
	return classifySlow(r)
}

// decode is utf8.DecodeRuneInString with an ASCII fast path; s is valid UTF-8 here.
func decode(s string, i int) (rune, int) {
	if b := s[i]; b < utf8.RuneSelf {
		return rune(b), 1
	}
	return utf8.DecodeRuneInString(s[i:])
}

// nextPiece returns the end of the piece that starts at i < len(s). s must be valid UTF-8.
func nextPiece(s string, i int) int {
	r, w := decode(s, i)
	// (?i:'s|'t|'re|'ve|'m|'ll|'d): regexp2 lowercases the input with unicode.ToLower, and no
	// non-ASCII rune lowers to one of these letters, so ASCII case folding is exact.
	if r == '\'' {
		if n := contraction(s, i); n > 0 {
			return i + n
		}
	}
	c := classify(r)
	switch c {
	case clsLetter: // [^\r\n\p{L}\p{N}]?\p{L}+ without the optional character
		return runEnd(s, i+w, clsLetter)
	case clsNumber: // \p{N}{1,3}
		j := i + w
		for k := 0; k < 2 && j < len(s); k++ {
			r2, w2 := decode(s, j)
			if classify(r2) != clsNumber {
				break
			}
			j += w2
		}
		return j
	case clsNewline:
		return spaceEnd(s, i)
	}
	// c is clsOther or clsSpace, both allowed as the optional first character of
	// [^\r\n\p{L}\p{N}]?\p{L}+.
	j := i + w
	if j < len(s) {
		r2, w2 := decode(s, j)
		c2 := classify(r2)
		if c2 == clsLetter {
			return runEnd(s, j+w2, clsLetter)
		}
		if c == clsOther { // [^\s\p{L}\p{N}]+[\r\n]*
			return newlinesEnd(s, runEnd(s, j, clsOther))
		}
		if r == ' ' && c2 == clsOther { // the same with its optional leading space
			return newlinesEnd(s, runEnd(s, j+w2, clsOther))
		}
	} else if c == clsOther {
		return j
	}
	return spaceEnd(s, i)
}

// contraction returns the length of the contraction ('s, 't, 're, 've, 'm, 'll or 'd, any case)
// at the apostrophe s[i], or 0.
func contraction(s string, i int) int {
	if i+1 >= len(s) {
		return 0
	}
	// |0x20 lowers ASCII letters and maps no other byte onto a lowercase letter.
	switch s[i+1] | 0x20 {
	case 's', 't', 'm', 'd':
		return 2
	case 'r', 'v':
		if i+2 < len(s) && s[i+2]|0x20 == 'e' {
			return 3
		}
	case 'l':
		if i+2 < len(s) && s[i+2]|0x20 == 'l' {
			return 3
		}
	}
	return 0
}

// runEnd returns the end of the run of class c characters starting at j.
func runEnd(s string, j int, c class) int {
	for j < len(s) {
		r, w := decode(s, j)
		if classify(r) != c {
			break
		}
		j += w
	}
	return j
}

// newlinesEnd is [\r\n]* from j.
func newlinesEnd(s string, j int) int {
	for j < len(s) && (s[j] == '\r' || s[j] == '\n') {
		j++
	}
	return j
}

// spaceEnd matches the whitespace alternatives at i, where s[i] is whitespace:
// \s*[\r\n]+ backtracks to just after the run's last newline; failing that, \s+(?!\S) takes the
// run up to the end of the text, or gives back the run's last character so that it can lead the
// next piece (" word"), unless the run is one character, which \s+ then takes alone.
func spaceEnd(s string, i int) int {
	j, last, lastNL, runes := i, i, -1, 0
	for j < len(s) {
		r, w := decode(s, j)
		c := classify(r)
		if c == clsNewline {
			lastNL = j
		} else if c != clsSpace {
			break
		}
		last = j
		runes++
		j += w
	}
	switch {
	case lastNL >= 0:
		return lastNL + 1
	case j == len(s) || runes == 1:
		return j
	}
	return last
}
