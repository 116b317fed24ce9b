package csvplan

import (
	"bytes"
)

// oracleRow is a data row as the documented dialect defines it, computed by a deliberately naive
// byte-at-a-time state machine that shares no code with the package.
type oracleRow struct {
	offset int64
	fields []string
	reason string // "", ReasonUnbalancedQuote or ReasonWrongFieldCount
}

// oracle reads data by the rules in split.go's comment. ok is false when there is no usable header
// (none, or a malformed one).
func oracle(data []byte, delim rune) (header []string, rows []oracleRow, ok bool) {
	d := []byte(string(delim))
	n := len(data)
	if n > 0 && data[n-1] == '\r' {
		n-- // a lone \r before EOF is dropped
	}
	pos := 0
	if bytes.HasPrefix(data, utf8BOM) {
		pos = len(utf8BOM)
	}
	const (
		fieldStart = iota
		unquoted
		quoted
		afterQuote
	)
	haveHeader := false
	for pos < n {
		start := pos
		var fields []string
		var cur []byte
		bad := ""
		state := fieldStart
	record:
		for {
			if pos >= n {
				if state == quoted {
					bad = ReasonUnbalancedQuote
				}
				break
			}
			c := data[pos]
			switch state {
			case fieldStart:
				if c == '"' {
					state = quoted
					pos++
					continue
				}
				state = unquoted
			case unquoted:
				switch {
				case bytes.HasPrefix(data[pos:n], d):
					fields = append(fields, string(cur))
					cur = nil
					pos += len(d)
					state = fieldStart
				case c == '\n':
					pos++
					if len(cur) > 0 && cur[len(cur)-1] == '\r' {
						cur = cur[:len(cur)-1]
					}
					break record
				default:
					cur = append(cur, c)
					pos++
				}
			case quoted:
				switch {
				case c == '"' && pos+1 < n && data[pos+1] == '"':
					cur = append(cur, '"')
					pos += 2
				case c == '"':
					state = afterQuote
					pos++
				case c == '\r' && pos+1 < n && data[pos+1] == '\n':
					cur = append(cur, '\n')
					pos += 2
				default:
					cur = append(cur, c)
					pos++
				}
			case afterQuote:
				switch {
				case bytes.HasPrefix(data[pos:n], d):
					fields = append(fields, string(cur))
					cur = nil
					pos += len(d)
					state = fieldStart
				case c == '\n':
					pos++
					break record
				case c == '\r' && pos+1 < n && data[pos+1] == '\n':
					pos += 2
					break record
				default:
					bad = ReasonUnbalancedQuote
					state = unquoted
				}
			}
		}
		fields = append(fields, string(cur))
		raw := data[start:pos]
		if bytes.HasSuffix(raw, []byte("\n")) {
			// A record cut by EOF lost its final \r above already.
			raw = bytes.TrimSuffix(raw[:len(raw)-1], []byte("\r"))
		}
		if len(raw) == 0 {
			continue // blank line
		}
		if !haveHeader {
			if bad != "" {
				return fields, nil, false
			}
			header, haveHeader = fields, true
			continue
		}
		if bad == "" && len(fields) != len(header) {
			bad = ReasonWrongFieldCount
		}
		rows = append(rows, oracleRow{offset: int64(start), fields: fields, reason: bad})
	}
	return header, rows, haveHeader
}
