// Package ratelease shares one provider key's rate budget among the pods that use it: the
// manager's leader runs a Server that hands out short leases, and each embedder pod runs a
// Client that renews its lease every few seconds, sets its limiters from the grant and reports
// what it used and how many 429s it saw. internal/ratebudget does the arithmetic.
//
// Requests are authenticated with a per-ingestion credential (Credential) that the controller
// mints with a key only the manager holds and hands to the ingestion's Jobs through a Secret
// (secretKeyRef); it binds the pod to the namespace and ingestion it was made for, so a pod can
// lease only for its own ingestion. The manager never sees a provider key.
package ratelease

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"

	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
)

// Path is where the Server answers renewals.
const Path = "/v1/rate-leases"

// Environment of the embedder pods (the credential comes from a Secret by secretKeyRef).
const (
	// EnvURL is the lease endpoint, e.g. http://vectordb-operator-leases.ns.svc:8083/v1/rate-leases.
	EnvURL = "RATE_LEASE_URL"
	// EnvCredential is the pod's credential (Credential of its ingestion), from a Secret.
	EnvCredential = "RATE_LEASE_CREDENTIAL"
	// EnvJob and EnvPod name the Job and the pod (downward API): the holder's identity.
	EnvJob = "RATE_LEASE_JOB"
	EnvPod = "RATE_LEASE_POD"
	// SecretKey is the key of the credential in the ingestion's lease Secret.
	SecretKey = "credential"
)

// SecretName is the name of an ingestion's lease Secret.
func SecretName(ingestion string) string { return ingestion + "-rate-lease" }

// RenewRequest is one pod's renewal.
type RenewRequest struct {
	Namespace string `json:"namespace"`
	Ingestion string `json:"ingestion"`
	Job       string `json:"job"`
	// Holder names the pod within its Job (its pod name); a Job has one pod at a time, but a
	// replaced pod must not inherit the old one's usage.
	Holder string `json:"holder"`
	Model  string `json:"model"`
	// Demand is the rate the pod could use; a zero field means "as much as it is given".
	Demand ratebudget.Rates `json:"demand"`
	// Used since the last renewal: requests sent (each attempt), tokens billed, and the 429s
	// among the requests.
	UsedRequests int64 `json:"usedRequests"`
	UsedTokens   int64 `json:"usedTokens"`
	RateLimited  int64 `json:"rateLimited"`
	// RemainingRequests and RemainingTokens are the provider's last x-ratelimit-remaining-*
	// (-1: not seen).
	RemainingRequests int64 `json:"remainingRequests"`
	RemainingTokens   int64 `json:"remainingTokens"`
	// MaxRequestTokens is the pod's largest request; its token burst is never smaller.
	MaxRequestTokens int `json:"maxRequestTokens"`
	// Current is the grant the pod holds now (nil: none, e.g. its first renewal or its lease
	// expired); a new leader never raises a grant above it until the old leader's have expired.
	Current *ratebudget.Rates `json:"current,omitempty"`
	// Release is sent once when the pod is done: its share goes to the others at once.
	Release bool `json:"release,omitempty"`
}

// Lease is the answer to a renewal.
type Lease struct {
	// Budget names the budget the pod draws from.
	Budget string `json:"budget"`
	// RPM and TPM are the pod's grant (0: unlimited); BurstTokens its token bucket.
	RPM         float64 `json:"rpm"`
	TPM         float64 `json:"tpm"`
	BurstTokens int     `json:"burstTokens"`
	// TTLSeconds: the grant holds this long without a renewal; then the pod falls back.
	TTLSeconds float64 `json:"ttlSeconds"`
	// RenewSeconds is how often to renew.
	RenewSeconds float64 `json:"renewSeconds"`
	// Capped: the grant is below the pod's share until the others renew (it renews sooner). Its
	// use under such a grant says nothing about its demand.
	Capped bool `json:"capped,omitempty"`
	// Holders is the number of pods drawing from the budget now; MaxHolders the most seen.
	Holders    int `json:"holders"`
	MaxHolders int `json:"maxHolders"`
	// Fallback is the static share to use when the lease expired and the manager cannot be
	// reached: the effective budget ÷ MaxHolders, safe however many pods are left.
	Fallback ratebudget.Rates `json:"fallback"`
}

// Credential is an ingestion's credential: an HMAC-SHA256, under the manager's key, of its
// namespace and name. (Per ingestion, not per Job: one Secret serves all its Jobs, and what a
// pod could claim with it, another holder within its own ingestion, only splits that
// ingestion's own share.)
func Credential(key []byte, namespace, ingestion string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte("rate-lease\x00" + namespace + "\x00" + ingestion))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// validCredential checks cred in constant time.
func validCredential(key []byte, cred, namespace, ingestion string) bool {
	return hmac.Equal([]byte(cred), []byte(Credential(key, namespace, ingestion)))
}
