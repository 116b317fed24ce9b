package shim

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
)

// StaticKeys accepts a fixed list of keys, each with the server's default scope.
func StaticKeys(keys ...string) apikeys.Source {
	out := make([]apikeys.Key, 0, len(keys))
	for i, k := range keys {
		out = append(out, apikeys.Key{Name: fmt.Sprintf("static-%d", i), Value: k, Write: true})
	}
	return apikeys.Static(out...)
}

// SecretKeys accepts every value in the data of the Secret name, read through r (the manager's
// cache, restricted to that Secret's namespace) on each call, so adding a second key and later
// removing the first rotates keys without a restart. Values are trimmed of surrounding whitespace,
// since Secrets made from files often end in a newline; empty values are ignored. A data key
// "<name>.namespaces" is the scope of key "<name>" (apikeys.ParseNamespaces), not a key.
func SecretKeys(r client.Reader, name types.NamespacedName) apikeys.Source {
	return func(ctx context.Context) ([]apikeys.Key, error) {
		var sec corev1.Secret
		if err := r.Get(ctx, name, &sec); err != nil {
			return nil, fmt.Errorf("reading API keys from Secret %s: %w", name, err)
		}
		// Sorted so the compare loop does the same work in the same order every time.
		names := make([]string, 0, len(sec.Data))
		for k := range sec.Data {
			if !strings.HasSuffix(k, apikeys.NamespacesSuffix) {
				names = append(names, k)
			}
		}
		sort.Strings(names)
		keys := make([]apikeys.Key, 0, len(names))
		for _, k := range names {
			v := strings.TrimSpace(string(sec.Data[k]))
			if v == "" {
				continue
			}
			if err := apikeys.CheckValue(k, v); err != nil {
				return nil, fmt.Errorf("API keys Secret %s: %w", name, err)
			}
			key := apikeys.Key{Name: k, Value: v, Write: true}
			if sv, ok := sec.Data[k+apikeys.NamespacesSuffix]; ok {
				ns, err := apikeys.ParseNamespaces(string(sv))
				if err != nil {
					return nil, fmt.Errorf("API keys Secret %s: entry %s%s: %w", name, k, apikeys.NamespacesSuffix, err)
				}
				key.Namespaces = ns
			}
			keys = append(keys, key)
		}
		return keys, nil
	}
}

// keyID names a key in the rate limiter without keeping the key itself.
func keyID(key string) string {
	h := sha256.Sum256([]byte(key))
	return hex.EncodeToString(h[:16])
}

// caller is the key a request was made with and what it may see.
type caller struct {
	key   apikeys.Key
	scope apikeys.Scope
}

type callerKey struct{}

func callerOf(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey{}).(caller)
	return c
}

// scopeOf is the scope of key: its own namespaces, or the server's default.
func (s *Server) scopeOf(k apikeys.Key) apikeys.Scope {
	return apikeys.ScopeOf(k, s.cfg.KeyNamespaces)
}

// visibleNamespaces are the namespaces of scope the cache holds, to list one by one (scope is
// not cluster-wide).
func (s *Server) visibleNamespaces(scope apikeys.Scope) []string {
	ns := scope.Namespaces()
	if s.cfg.WatchNamespaces == nil {
		return ns
	}
	out := ns[:0:0]
	for _, n := range ns {
		if slices.Contains(s.cfg.WatchNamespaces, n) {
			out = append(out, n)
		}
	}
	return out
}
