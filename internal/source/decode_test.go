package source

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"unicode/utf16"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

func encodeUTF16(s string, bigEndian, bom bool) []byte {
	var b []byte
	put := func(u uint16) {
		if bigEndian {
			b = append(b, byte(u>>8), byte(u))
		} else {
			b = append(b, byte(u), byte(u>>8))
		}
	}
	if bom {
		put(0xFEFF)
	}
	for _, u := range utf16.Encode([]rune(s)) {
		put(u)
	}
	return b
}

func TestDecode(t *testing.T) {
	csv := "id,body\n1,café 😀 東京\n2,naïve\n"
	lone := append(encodeUTF16("id,body\n1,a", false, true), 0x00, 0xD8) // a high surrogate alone
	lone = append(lone, encodeUTF16("b\n", false, false)...)
	for _, tc := range []struct {
		name, enc string
		in        []byte
		want      string // "" with wantErr
		wantErr   string // substring of a permanent error
	}{
		{"utf-8 as is", "", []byte(csv), csv, ""},
		{"utf-8 keeps invalid bytes for the mapper", "utf-8", []byte("id,body\n1,a\xffb\n"), "id,body\n1,a\xffb\n", ""},
		{"utf-16 LE with BOM", "utf-16", encodeUTF16(csv, false, true), csv, ""},
		{"utf-16 BE with BOM", "utf-16", encodeUTF16(csv, true, true), csv, ""},
		{"utf-16 LE without BOM", "utf-16", encodeUTF16(csv, false, false), csv, ""},
		{"utf-16 BE without BOM", "utf-16", encodeUTF16(csv, true, false), csv, ""},
		{"utf-16 without BOM, order unknown", "utf-16", encodeUTF16("東京大阪名古屋札幌福岡神戸京都", true, false), "", "spec.source.csv.encoding"},
		{"utf-16 lone surrogate", "utf-16", lone, "id,body\n1,a\xffb\n", ""},
		{"utf-16 odd last byte", "utf-16", append(encodeUTF16("id\n1\n", false, true), 'x'), "id\n1\n\xff", ""},
		{"utf-16 BOM read as utf-8", "", encodeUTF16(csv, false, true), "", "set spec.source.csv.encoding: utf-16"},
		{"utf-16 BE without BOM read as utf-8", "utf-8", encodeUTF16(csv, true, false), "", "set spec.source.csv.encoding: utf-16"},
		{"utf-16 long, pairs across buffer ends", "utf-16", encodeUTF16(strings.Repeat("x😀", 9001), true, true), strings.Repeat("x😀", 9001), ""},
		{"utf-16 long, odd start", "utf-16", encodeUTF16(strings.Repeat("id,body\n", 40)+"y"+strings.Repeat("😀", 9001), false, false),
			strings.Repeat("id,body\n", 40) + "y" + strings.Repeat("😀", 9001), ""},
		{"utf-16 emoji only, order unknown", "utf-16", encodeUTF16(strings.Repeat("😀", 300), false, false), "", "spec.source.csv.encoding"},
		{"windows-1252", "windows-1252", []byte("id,body\n1,caf\xe9 \x93q\x94 \x80\n"), "id,body\n1,café “q” €\n", ""},
		{"windows-1252 unassigned bytes", "windows-1252", []byte("a\x81b\x8dc\x8fd\x90e\x9df"), "a\xffb\xffc\xffd\xffe\xfff", ""},
		{"latin-1", "latin-1", []byte("caf\xe9\x81"), "café\u0081", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, err := Decode(bytes.NewReader(tc.in), tc.enc)
			if tc.wantErr != "" {
				if p, ok := worker.AsPermanent(err); !ok || !strings.Contains(p.Error(), tc.wantErr) {
					t.Fatalf("error %v, want a permanent one saying %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				i := 0
				for i < len(got) && i < len(tc.want) && got[i] == tc.want[i] {
					i++
				}
				t.Fatalf("got %d bytes, want %d; first difference at byte %d: got %q", len(got), len(tc.want), i, got[i:min(len(got), i+40)])
			}
		})
	}
}
