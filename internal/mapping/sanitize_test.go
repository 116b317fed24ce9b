package mapping

import (
	"errors"
	"html"
	"strings"
	"testing"
)

type sanitizeCase struct {
	name, in, want string
}

func runSanitize(t *testing.T, mode string, cases []sanitizeCase) {
	t.Helper()
	s, err := NewSanitizer(mode)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got, err := s.Sanitize(tc.in); err != nil || got != tc.want {
				t.Errorf("Sanitize(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestSanitizeNone(t *testing.T) {
	runSanitize(t, SanitizeNone, []sanitizeCase{
		{"kept as is", "  <b>x</b> &amp; 2025-01-10  ", "  <b>x</b> &amp; 2025-01-10  "},
	})
}

func TestSanitizeBasic(t *testing.T) {
	runSanitize(t, SanitizeBasic, []sanitizeCase{
		{"plain", "plain text", "plain text"},
		{"empty", "", ""},
		{"only a tag", "<br/>", ""},
		{"tags", "<p>Hello <b>world</b></p>", "Hello world"},
		{"adjacent blocks join", "<p>a</p><p>b</p>", "ab"},
		{"nested tags and newline", "<div><ul><li>One</li>\n<li>Two</li></ul></div>", "One Two"},
		{"tag spanning lines", "<a\nhref='x'>y</a>", "y"},
		{"comment", "<!-- note -->x", "x"},
		// `<[^>]+>` ends a tag at the first '>', even inside a quoted attribute.
		{"gt inside attribute", `<a href="x" title="a>b">link</a>`, `b">link`},
		{"lt and gt in prose are a tag to the regex", "a < b and c > d", "a d"},
		{"lt without gt", "5 < 6", "5 < 6"},
		{"empty brackets", "x <> y", "x <> y"},
		{"script keeps its text", "<script>alert(1)</script>Hi", "alert(1)Hi"},
		{"style keeps its text", "<style>p{color:red}</style> Text", "p{color:red} Text"},
		{"amp", "Tom &amp; Jerry", "Tom & Jerry"},
		{"nbsp collapses", "a&nbsp;&nbsp;b", "a b"},
		{"numeric entity", "It&#39;s", "It's"},
		{"escaped tags are text", "&lt;b&gt;bold&lt;/b&gt;", "<b>bold</b>"},
		{"unescape once", "&amp;lt;", "&lt;"},
		{"bare ampersand", "fish & chips", "fish & chips"},
		{"whitespace runs", "  a \t\n b\r\n\u2003c  ", "a b c"},
		{"only white space", " \t\n ", ""},
		{"unicode kept", "Café 😀 naïve", "Café 😀 naïve"},
		{"dates untouched", "2025-01-10T22:45:23 and 01/10/2025", "2025-01-10T22:45:23 and 01/10/2025"},
	})
}

func TestSanitizeLegacy(t *testing.T) {
	runSanitize(t, SanitizeLegacy, legacyCases)
}

// legacyCases: what the old service's sanitize_text returns for each input (printed by Python 3.11
// from the old function; the corpus test checks 24,000 more).
var legacyCases = []sanitizeCase{
	{"iso datetime", "Posted 2025-01-10T22:45:23 by Bob", "Posted January 10th, 2025 10:45:23 PM by Bob"},
	{"iso fraction and Z", "2025-01-10T22:45:23.123456Z", "January 10th, 2025 10:45:23 PM"},
	{"iso offset with colon", "at 2025-03-02T09:05:07+05:30.", "at March 2nd, 2025 09:05:07 AM."},
	{"iso offset without colon", "2025-03-02T09:05:07-0800", "March 2nd, 2025 09:05:07 AM"},
	{"iso date", "due 2025-01-10", "due January 10th, 2025 12:00:00 AM"},
	{"us slash", "on 01/03/2025,", "on January 3rd, 2025 12:00:00 AM,"},
	{"us dash", "12-25-2024", "December 25th, 2024 12:00:00 AM"},
	{"us single digits", "1/1/2025", "January 1st, 2025 12:00:00 AM"},
	{"space-separated time is a datetime", "2025-01-10 22:45:23", "January 10th, 2025 10:45:23 PM"},
	{"1st", "2025-01-01", "January 1st, 2025 12:00:00 AM"},
	{"2nd", "2025-02-02", "February 2nd, 2025 12:00:00 AM"},
	{"3rd", "2025-03-03", "March 3rd, 2025 12:00:00 AM"},
	{"4th", "2025-04-04", "April 4th, 2025 12:00:00 AM"},
	{"11th", "2025-05-11", "May 11th, 2025 12:00:00 AM"},
	{"12th", "2025-06-12", "June 12th, 2025 12:00:00 AM"},
	{"13th", "2025-07-13", "July 13th, 2025 12:00:00 AM"},
	{"21st", "2025-08-21", "August 21st, 2025 12:00:00 AM"},
	{"22nd", "2025-09-22", "September 22nd, 2025 12:00:00 AM"},
	{"23rd", "2025-10-23", "October 23rd, 2025 12:00:00 AM"},
	{"30th", "2025-11-30", "November 30th, 2025 12:00:00 AM"},
	{"31st", "2025-12-31", "December 31st, 2025 12:00:00 AM"},
	{"midnight", "2025-01-10T00:00:00", "January 10th, 2025 12:00:00 AM"},
	{"noon", "2025-01-10T12:00:00", "January 10th, 2025 12:00:00 PM"},
	{"after noon", "2025-01-10T12:30:00", "January 10th, 2025 12:30:00 PM"},
	{"early morning", "2025-01-10T01:02:03", "January 10th, 2025 01:02:03 AM"},
	{"last second", "2025-01-10T23:59:59", "January 10th, 2025 11:59:59 PM"},
	{"month 13", "2025-13-45", "2025-13-45"},
	{"feb 29 in a common year", "2025-02-29", "2025-02-29"},
	{"feb 29 in a leap year", "2024-02-29", "February 29th, 2024 12:00:00 AM"},
	{"1900 is not leap", "02/29/1900", "02291900"},
	{"2000 is leap", "02/29/2000", "February 29th, 2000 12:00:00 AM"},
	{"feb 30 slashes dropped", "02/30/2025", "02302025"},
	{"year zero", "0000-01-01", "0000-01-01"},
	{"hour 24", "2025-01-10T24:00:00", "2025-01-10T24:00:00"},
	{"iso needs two-digit month", "2025-1-5", "2025-1-5"},
	{"mixed separators", "01/10-2025", "0110-2025"},
	{"digit before", "12025-01-10", "12025-01-10"},
	{"letter before", "v2025-01-10", "v2025-01-10"},
	{"underscore before is a word character: no date", "id_2025-01-10", "id_2025-01-10"},
	{"time without seconds", "2025-01-10T22:45", "2025-01-10T22:45"},
	{"letters after zone", "2025-01-10T22:45:23Zulu", "2025-01-10T22:45:23Zulu"},
	{"phone number", "call 555-1234 now", "call 555-1234 now"},
	{"two dates", "2025-01-01/2025-12-31", "January 1st, 2025 12:00:00 AMDecember 31st, 2025 12:00:00 AM"},
	{"punctuation kept, others dropped, spaces not collapsed again", "Price: $5 (50% off!) — great? yes; [ok] {x}", "Price: $5 (50 off!)  great? yes; [ok] {x}"},
	{"emoji dropped", "Great 👍🏽 product 😀!", "Great  product !"},
	{"quotes and ampersand dropped", "He said \"hi\" & 'bye'", "He said hi  bye"},
	{"entities then filter", "Tom &amp; Jerry&#39;s", "Tom  Jerrys"},
	{"unicode letters and digits kept", "Café naïve Ünïcödé 東京 ١٢٣", "Café naïve Ünïcödé 東京 ١٢٣"},
	{"combining mark dropped", "Café", "Cafe"},
	{"other numerics are word characters, kept", "x² ½", "x² ½"},
	{"slash dropped, underscore kept", "a/b_c", "ab_c"},
	{"emoji between dates leaves two spaces", "a 😀 2025-01-10", "a  January 10th, 2025 12:00:00 AM"},
	{"only symbols: the spaces stay", "😀 ★ ©", "  "},
	{"html, entity, date and filter", "<p>Sale ends 01/15/2025!</p><br>Call&nbsp;now: 555-1234 #deal", "Sale ends January 15th, 2025 12:00:00 AM!Call now: 555-1234 deal"},
	{"information separators are white space", "a\u001cb\u001dc\u001ed\u001fef", "a b c d e f"},
	{"line separator before the time", "2025-01-10 10:45:23", "January 10th, 2025 10:45:23 AM"},
	{"roman numeral and circled digit kept", "Lot Ⅻ ① ²", "Lot Ⅻ ① ²"},
	{"arabic-indic digits are a date to strptime", "٢٠٢٥-٠١-١٠", "٢٠٢٥-٠١-١٠"},
	{"feb 30 with a time: the date pattern fails too", "2025-02-30 10:00:00", "2025-02-30 10:00:00"},
	{"hour 25: the date alone is rewritten", "2025-02-10 25:00:00", "February 10th, 2025 12:00:00 AM 25:00:00"},
	{"fraction before a letter is left in the text", "2025-01-10T22:45:23.5x", "January 10th, 2025 10:45:23 PM.5x"},
	{"entity without semicolon", "&copy 2025 &notit; &amp", " 2025 it; "},
	{"numeric references: remapped, dropped, replaced", "&#128;&#x85;&#1;&#xD800;&#1114112;", ""},
	{"year before 1000 is not padded", "0999-12-31", "December 31st, 999 12:00:00 AM"},
	{"seconds 60", "2025-01-10T10:00:60", "2025-01-10T10:00:60"},
}

func TestNewSanitizer(t *testing.T) {
	s, err := NewSanitizer("")
	if err != nil || s.Mode() != SanitizeBasic {
		t.Fatalf("NewSanitizer(\"\") = %v, %v; want basic", s, err)
	}
	if _, err := NewSanitizer("aggressive"); err == nil || !strings.Contains(err.Error(), `"aggressive"`) {
		t.Fatalf("unknown mode error = %v; want it named", err)
	}
}

// The scratch buffers are reused: an earlier result must not change when the sanitizer runs again.
func TestSanitizerReuseDoesNotAlias(t *testing.T) {
	s, _ := NewSanitizer(SanitizeLegacy)
	first, _ := s.Sanitize("<b>first</b> 2025-01-10")
	_, _ = s.Sanitize("second, much longer text that overwrites the buffers 01/02/2025")
	if first != "first January 10th, 2025 12:00:00 AM" { // the old function's output
		t.Fatalf("first result changed to %q", first)
	}
}

// unescapeEntities must agree with html.UnescapeString on any input.
func FuzzUnescapeEntities(f *testing.F) {
	for _, s := range []string{
		"", "plain", "&", "&&", "&amp;", "&amp", "&ampfoo", "&amp;lt;", "&nbsp;x&nbsp", "&#39;", "&#39",
		"&#", "&#;", "&#1", "&#12 x", "&#x41;", "&#X4a", "&#xZZ;", "&#0;", "&#128;", "&#xD800;",
		"&#99999999;", "&notit;", "&notin;", "&NotEqualTilde;", "&unknown;", "a & b", "&;", "&lt&gt",
		"x&copy2025", "&AElig", "&#9;tab", "é&eacute;é", "&&amp;&",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := string(unescapeEntities(nil, []byte(s))), html.UnescapeString(s); got != want {
			t.Fatalf("unescapeEntities(%q) = %q, html.UnescapeString = %q", s, got, want)
		}
	})
}

// Whatever the input, basic text has no runs of white space and no ends to trim, and legacy text
// holds only ' ' as white space and only the characters the old filter kept (it may hold "  "
// and end in ' ', as the old function's did: it filtered after collapsing).
func FuzzSanitize(f *testing.F) {
	for _, s := range []string{"<p>a</p>", "2025-01-10T22:45:23Z", "1/1/2025", "&nbsp;", "a\xffb", "<", "<<>>", "😀 x", "a & b"} {
		f.Add(s)
	}
	basic, _ := NewSanitizer(SanitizeBasic)
	legacy, _ := NewSanitizer(SanitizeLegacy)
	f.Fuzz(func(t *testing.T, s string) {
		s = strings.ToValidUTF8(s, "\uFFFD") // as Mapper.Map hands it over
		out, err := basic.Sanitize(s)
		if err != nil || out != strings.TrimSpace(out) || strings.Contains(out, "  ") || strings.ContainsAny(out, "\t\n\r\u00a0") {
			t.Fatalf("basic(%q) = %q, %v: white space not collapsed", s, out, err)
		}
		out, err = legacy.Sanitize(s)
		if err != nil {
			if !errors.Is(err, ErrLegacyUnescape) {
				t.Fatalf("legacy(%q): %v", s, err)
			}
			return
		}
		for _, r := range out {
			if !(r == ' ' || !pyIsSpace(r) && pyIsWord(r) || strings.ContainsRune("-.,!?;:()[]{}$", r)) {
				t.Fatalf("legacy(%q) = %q kept %q", s, out, r)
			}
		}
	})
}
