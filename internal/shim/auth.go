package shim

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// StaticKeys accepts a fixed list of keys.
func StaticKeys(keys ...string) KeySource {
	keys = append([]string(nil), keys...)
	return func(context.Context) ([]string, error) { return keys, nil }
}

// SecretKeys accepts every value in the data of the Secret name, read through r (the manager's
// cache, restricted to that Secret's namespace) on each call, so adding a second key and later
// removing the first rotates keys without a restart. Values are trimmed of surrounding whitespace,
// since Secrets made from files often end in a newline; empty values are ignored.
func SecretKeys(r client.Reader, name types.NamespacedName) KeySource {
	return func(ctx context.Context) ([]string, error) {
		var sec corev1.Secret
		if err := r.Get(ctx, name, &sec); err != nil {
			return nil, fmt.Errorf("reading API keys from Secret %s: %w", name, err)
		}
		// Sorted so the compare loop does the same work in the same order every time.
		names := make([]string, 0, len(sec.Data))
		for k := range sec.Data {
			names = append(names, k)
		}
		sort.Strings(names)
		keys := make([]string, 0, len(names))
		for _, k := range names {
			if v := strings.TrimSpace(string(sec.Data[k])); v != "" {
				keys = append(keys, v)
			}
		}
		return keys, nil
	}
}

// matchKey reports whether given is one of keys, in time that depends on neither where a key
// differs nor its length: both sides are hashed to a fixed size, and every key is compared.
func matchKey(given string, keys []string) bool {
	g := sha256.Sum256([]byte(given))
	found := 0
	for _, k := range keys {
		if k == "" {
			continue
		}
		h := sha256.Sum256([]byte(k))
		found |= subtle.ConstantTimeCompare(g[:], h[:])
	}
	return found == 1
}

// keyID names a key in the rate limiter without keeping the key itself.
func keyID(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:16])
}
