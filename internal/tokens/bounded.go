package tokens

import (
	"strings"
	"unicode/utf8"
)

// A row can hold megabytes of text (CSV fields are accepted up to 16 MiB), while the model takes
// 8,191 tokens. Tokenizing such a text whole costs about twenty bytes of working memory per byte
// of its longest pre-token (4 MiB of CJK text is one pre-token), so CountUpTo and Truncate only
// ever tokenize what can still fit: no token is longer than 128 bytes nor holds more than 48
// bytes ≥ 0x80, so a text has at least max(len/128, high/48) tokens, and once the tokens counted
// plus that bound for the rest pass the limit the answer is known. For the 8,191-token limit that
// caps what is ever tokenized at 1 MiB (384 KiB of text without ASCII).

// MaxTokenBytes is the length in bytes of the longest cl100k_base token. It panics like Count if
// the table cannot be loaded.
func MaxTokenBytes() int { return mustTable().maxTok }

func mustTable() *rankTable {
	t, err := table()
	if err != nil {
		panic(err)
	}
	return t
}

// CountUpTo returns Count(text) when that is at most limit, and otherwise some number above
// limit, without tokenizing more than limit tokens' worth of text: its time and memory are
// bounded by the limit, not by the text.
func CountUpTo(text string, limit int) int {
	t := mustTable()
	limit = max(limit, 0)
	if t.atLeast(len(text), highBytes(text)) > limit {
		// Replacing an invalid byte with U+FFFD only adds bytes ≥ 0x80, so the bound holds.
		return limit + 1
	}
	if !utf8.ValidString(text) {
		text = replaceInvalid(text)
	}
	return t.countUpTo(text, limit)
}

// atLeast is the fewest tokens a text of n bytes, high of them ≥ 0x80, can have.
func (t *rankTable) atLeast(n, high int) int {
	return max((n+t.maxTok-1)/t.maxTok, (high+t.maxHigh-1)/t.maxHigh)
}

// highBytes counts the bytes ≥ 0x80 of s.
func highBytes(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			n++
		}
	}
	return n
}

// replaceInvalid replaces every byte that is not part of valid UTF-8 with U+FFFD, as Count does
// (strings.ToValidUTF8 would replace a run of them with one).
func replaceInvalid(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 16)
	for i := 0; i < len(s); {
		r, w := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && w == 1 {
			b.WriteRune(utf8.RuneError)
		} else {
			b.WriteString(s[i : i+w])
		}
		i += w
	}
	return b.String()
}

// countUpTo is CountUpTo for valid UTF-8.
func (t *rankTable) countUpTo(s string, limit int) int {
	n, high := 0, highBytes(s)
	for i := 0; i < len(s); {
		if n+t.atLeast(len(s)-i, high) > limit {
			return limit + 1
		}
		j := nextPiece(s, i)
		p := s[i:j]
		n += t.countPiece(p)
		if n > limit {
			return n
		}
		high -= highBytes(p)
		i = j
	}
	return n
}

// Truncate returns a prefix of text, ending at a token boundary and a character boundary, that
// has at most limit tokens (text itself when it fits), as peers truncate: the text is tokenized
// and cut after its first limit tokens. Only a prefix long enough to hold limit tokens is
// tokenized (tried at 4 bytes a token, then doubled), so a huge text costs no more than a long
// one. Invalid UTF-8 is replaced with U+FFFD first, as the API would.
func Truncate(text string, limit int) string {
	t := mustTable()
	limit = max(limit, 0)
	if !utf8.ValidString(text) {
		text = replaceInvalid(text)
	}
	if t.countUpTo(text, limit) <= limit {
		return text
	}
	s := text
	for size := 4 * limit; size < len(text); size *= 2 {
		if p := text[:runeStartAtOrBefore(text, size)]; t.countUpTo(p, limit) > limit {
			s = p
			break
		}
	}
	// Tokenizing the cut text can merge differently around the cut than the whole text did;
	// recount and cut further until it fits (in practice at most once more).
	for target := limit; target > 0; {
		out := s[:t.prefixEnd(s, target)]
		n := t.countUpTo(out, limit)
		if n <= limit {
			return out
		}
		target -= max(1, n-limit)
	}
	return ""
}

// prefixEnd is the byte offset after the first k tokens of s (valid UTF-8), moved back to a
// character boundary: a token can end inside a multi-byte character.
func (t *rankTable) prefixEnd(s string, k int) int {
	n := 0
	var ends []int
	for i := 0; i < len(s); {
		j := nextPiece(s, i)
		if k == n {
			return i
		}
		ends = t.pieceEnds(s[i:j], ends[:0])
		if n+len(ends) <= k {
			n += len(ends)
			i = j
			continue
		}
		return runeStartAtOrBefore(s, i+ends[k-n-1])
	}
	return len(s)
}

// runeStartAtOrBefore is the largest character boundary of s at or before i.
func runeStartAtOrBefore(s string, i int) int {
	if i >= len(s) {
		return len(s)
	}
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return i
}
