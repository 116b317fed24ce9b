package worker

import (
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestNamesAreValidAndDeterministic(t *testing.T) {
	name63 := strings.Repeat("a", 50) + "-2025-01-10x" // 62
	name63 += "z"
	long := strings.Repeat("q239.export-", 22)[:253]
	for _, ing := range []string{"q239", name63, long, "a.b-c"} {
		jobs := map[string]bool{PlanJobName(ing): true}
		for _, i := range []int{0, 7, 100, 49999} {
			n := ChunkJobName(ing, i)
			if errs := validation.IsValidLabelValue(n); len(errs) > 0 {
				t.Errorf("ChunkJobName(%q, %d) = %q: %v", ing, i, n, errs)
			}
			if errs := validation.IsDNS1123Subdomain(n); len(errs) > 0 {
				t.Errorf("ChunkJobName(%q, %d) = %q: %v", ing, i, n, errs)
			}
			if n != ChunkJobName(ing, i) {
				t.Errorf("ChunkJobName(%q, %d) is not deterministic", ing, i)
			}
			if jobs[n] {
				t.Errorf("ChunkJobName(%q, %d) = %q collides", ing, i, n)
			}
			jobs[n] = true
			if !strings.HasSuffix(n, "-chunk-"+itoa(i)) {
				t.Errorf("ChunkJobName(%q, %d) = %q lost its index suffix", ing, i, n)
			}
		}
		if p := PlanJobName(ing); len(p) > MaxJobName || len(validation.IsDNS1123Subdomain(p)) > 0 {
			t.Errorf("PlanJobName(%q) = %q", ing, p)
		}
		if c := PlanConfigMapName(ing); len(validation.IsDNS1123Subdomain(c)) > 0 {
			t.Errorf("PlanConfigMapName(%q) = %q", ing, c)
		}
	}
	if got := ChunkJobName("q239", 3); got != "q239-chunk-3" {
		t.Errorf("short names keep their plain form, got %q", got)
	}
	// Two long names that share their first 50 characters stay distinct.
	a, b := strings.Repeat("x", 60)+"-a", strings.Repeat("x", 60)+"-b"
	if ChunkJobName(a, 1) == ChunkJobName(b, 1) {
		t.Errorf("distinct ingestions share a Job name")
	}
}

func itoa(i int) string {
	const d = "0123456789"
	if i < 10 {
		return d[i : i+1]
	}
	return itoa(i/10) + d[i%10:i%10+1]
}

func TestLabelValue(t *testing.T) {
	for _, tc := range []struct {
		in    string
		plain bool
	}{
		{"q239-2025-01-10", true},
		{"", true},
		{"q239:2025-01-10", false},
		{strings.Repeat("n", 63), true},
		{strings.Repeat("n", 64), false},
		{":leading", false},
		{"trailing-", false},
		{"ünïcode", false},
	} {
		got := LabelValue(tc.in)
		if errs := validation.IsValidLabelValue(got); len(errs) > 0 {
			t.Errorf("LabelValue(%q) = %q: %v", tc.in, got, errs)
		}
		if (got == tc.in) != tc.plain {
			t.Errorf("LabelValue(%q) = %q, plain %v", tc.in, got, tc.plain)
		}
		if got != LabelValue(tc.in) {
			t.Errorf("LabelValue(%q) is not deterministic", tc.in)
		}
	}
	if LabelValue("q239:2025-01-10") == LabelValue("q239_2025-01-10") {
		t.Errorf("values that differ only in a replaced character must not share a label value")
	}
}
