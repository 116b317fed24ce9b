// Package csvplan reads a CSV stream the way the planner and the chunk workers must agree on:
// Scan makes one streaming pass that checks the header, counts rows and records a row-aligned byte
// offset every RowsPerChunk rows; Reader reads exactly the rows of one such byte range. Both cut
// records with the same code, so row numbers and chunk boundaries always agree. Decompression is
// the caller's concern: offsets are positions in the stream this package is given.
//
// The dialect is RFC 4180 as encoding/csv reads it with LazyQuotes off: a field that starts with a
// quote is quoted, `""` inside it is one quote, quoted fields may hold delimiters and newlines,
// CRLF and LF both end a record, \r\n inside a quoted field reads as \n, a lone \r before EOF is
// dropped, empty lines are skipped (counted as blank, never rows), and a UTF-8 BOM at the start is
// dropped. On well-formed input the rows are exactly encoding/csv's.
//
// Malformed input never makes the scanner and a reader see different rows, because both use the
// same splitter:
//   - a quote inside an unquoted field is kept as a literal character (as pandas reads it); the row
//     is not failed for it (a field broken that way usually shows up as a wrong field count);
//   - text after a closing quote (`"ab"cd,`) fails the row as unbalanced_quote; the text joins the
//     field up to the next delimiter and quotes in it are literal;
//   - a quoted field still open at EOF ends the last record there: everything from the record's
//     start to EOF is one row, failed as unbalanced_quote. Nothing is swallowed silently: the row
//     is counted by the scanner and reported by the reader;
//   - a row longer than MaxRowBytes is counted and failed as row_too_long without being buffered,
//     so a stray quote early in a big file costs neither memory nor the other rows' numbering.
package csvplan
