package worker

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"k8s.io/apimachinery/pkg/util/validation"
)

// Limits of derived names.
const (
	MaxJobName       = validation.LabelValueMaxLength // the Job controller puts it in a pod label
	MaxConfigMapName = validation.DNS1123SubdomainMaxLength
	hashLen          = 10
)

// shortHash is a stable, short digest of s.
func shortHash(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])[:hashLen]
}

// BoundedName is base+suffix when that fits in max; otherwise base is cut and followed by a hash
// of the whole base, as Kubernetes does for generated names, so distinct bases stay distinct and
// the same base always gives the same name. base must be a valid object name.
func BoundedName(base, suffix string, max int) string {
	if len(base)+len(suffix) <= max {
		return base + suffix
	}
	keep := max - len(suffix) - hashLen - 1
	if keep < 0 {
		keep = 0
	}
	prefix := strings.TrimRight(base[:min(keep, len(base))], "-.")
	if prefix == "" {
		return shortHash(base) + suffix
	}
	return prefix + "-" + shortHash(base) + suffix
}

// LabelValue returns v when it is a valid label value, else a valid one derived from it: the
// characters a label allows, cut, and a hash of the whole value. Deterministic, so selectors by
// it find what was labelled earlier; the full value goes into an annotation.
func LabelValue(v string) string {
	if len(validation.IsValidLabelValue(v)) == 0 {
		return v
	}
	b := []byte(v)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.') {
			b[i] = '_'
		}
	}
	keep := validation.LabelValueMaxLength - hashLen - 1
	s := string(b)
	if len(s) > keep {
		s = s[:keep]
	}
	s = strings.TrimLeft(s, "-_.")
	if s == "" {
		return shortHash(v)
	}
	return s + "-" + shortHash(v)
}
