package ownership

import (
	"testing"

	"github.com/vectordb-io/vectordb-operator/internal/mapping"
)

func TestClassify(t *testing.T) {
	marked := func(v string) Marker { return Marker{Present: true, Set: true, Value: v} }
	unmarked := Marker{Present: true}
	a := Owner{Prefix: "q1."}
	adopt := Owner{Prefix: "q1.", AdoptUnmarked: true}
	for _, tc := range []struct {
		name  string
		owner Owner
		id    string
		m     Marker
		want  Class
	}{
		{"own marker", a, "q1.7", marked("q1."), Owned},
		{"another source nested under the prefix", a, "q1.b-7", marked("q1.b-"), Foreign},
		{"a marker that only starts like ours", a, "q1.7", marked("q1"), Foreign},
		{"a longer marker", a, "q1.7", marked("q1.7"), Foreign},
		{"marker of another type", a, "q1.7", Marker{Present: true, Set: true, NotString: true}, Foreign},
		{"unmarked", a, "q1.7", unmarked, Unmarked},
		{"empty marker is unmarked", a, "q1.7", marked(""), Unmarked},
		{"gone since listed", a, "q1.7", Marker{}, Gone},
		{"not under the prefix at all", a, "q10.7", marked("q1."), Foreign},
		{"empty prefix owns nothing", Owner{}, "q1.7", marked(""), Foreign},
		{"adopted: prefix + rest without separator", adopt, "q1.7", unmarked, Adopted},
		{"adopted: empty marker", adopt, "q1.abcx", marked(""), Adopted},
		// "q1.b-" is a valid prefix-free prefix of another source that starts with "q1.": its
		// unmarked vectors (written before the marker existed) are not this source's to adopt.
		{"not adopted: another separator after the prefix", adopt, "q1.b-7", unmarked, Unmarked},
		{"not adopted: any separator in the rest", adopt, "q1.a:b", marked(""), Unmarked},
		{"not adopted: rest holds the separator", adopt, "q1.x.7", unmarked, Unmarked},
		{"not adopted: the bare prefix", adopt, "q1.", unmarked, Unmarked},
		{"adoption never takes a marked vector", adopt, "q1.7", marked("q1.b-"), Foreign},
		{"adoption keeps the own marker", adopt, "q1.x.7", marked("q1."), Owned},
		{"adoption of a gone vector", adopt, "q1.7", Marker{}, Gone},
	} {
		got := tc.owner.Classify(tc.id, tc.m)
		if got != tc.want {
			t.Errorf("%s: Classify(%q, %+v) = %s, want %s", tc.name, tc.id, tc.m, got, tc.want)
		}
		if got.Deletable() != (tc.want == Owned || tc.want == Adopted) {
			t.Errorf("%s: Deletable %v", tc.name, got.Deletable())
		}
	}
}

func TestPrefixFree(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		want   bool
	}{
		{"q1.", true}, {"q10.", true}, {"orders-", true}, {"a:b/", true}, {"x#", true}, {"x|", true}, {"x_", true},
		{"q1", false}, {"orders", false}, {"", false}, {".", true},
		{"q1.b.", false}, {"orders-eu-", false}, {"a/b/", false},
		{"q1.b-", true}, // the '-' does not occur before its end; it still starts with "q1.": the marker decides
	} {
		if got := PrefixFree(tc.prefix); got != tc.want {
			t.Errorf("PrefixFree(%q) = %v, want %v", tc.prefix, got, tc.want)
		}
	}
}

func TestStamp(t *testing.T) {
	md := []mapping.Field{{Key: "a", Value: mapping.Value{Kind: mapping.KindString, Str: "x"}}, {Key: Key, Value: mapping.Value{Kind: mapping.KindString, Str: "forged"}}}
	got := Stamp(md, "q1.")
	if len(got) != 2 || got[0].Key != "a" || got[1].Key != Key || got[1].Value.Str != "q1." {
		t.Fatalf("Stamp: %+v", got)
	}
	if got := Stamp(md, ""); len(got) != 2 || got[1].Value.Str != "forged" {
		t.Fatalf("Stamp with no prefix changed the record: %+v", got)
	}
}
