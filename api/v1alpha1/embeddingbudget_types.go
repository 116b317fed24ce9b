package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// EmbeddingBudgetSpec declares the rate limits of one provider key (an OpenAI organisation or
// project) once, for every ingestion that uses it. With the manager's rate leases on, the chunk
// pods of those ingestions share it, divided by weight among the namespaces; an ingestion no
// budget claims keeps the implicit budget of its own spec.embedding fields.
// +kubebuilder:validation:XValidation:rule="(has(self.secrets) && size(self.secrets) > 0) || (has(self.namespaces) && size(self.namespaces) > 0)",message="spec: list at least one key Secret in spec.secrets or one namespace in spec.namespaces: a budget no ingestion draws from has no effect"
type EmbeddingBudgetSpec struct {
	// Models are the key's limits per model (OpenAI's limits are per model), each listed once. An ingestion of a
	// model not listed here keeps its implicit budget (its spec.embedding fields), and the budget's
	// UnlistedModels condition names it.
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Models []BudgetModel `json:"models"`

	// Secrets are the API key Secrets that draw from this budget: every ingestion whose
	// spec.embedding.apiKeySecretRef names one of them, in the Secret's namespace. Each Secret
	// may be listed once (the API server refuses a duplicate).
	// +optional
	// +listType=map
	// +listMapKey=namespace
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	Secrets []BudgetSecret `json:"secrets,omitempty"`

	// Namespaces draw from this budget with every key Secret they use (a Secret listed by another
	// budget's spec.secrets draws from that budget: the more specific claim wins).
	// +optional
	// +listType=map
	// +listMapKey=name
	// +kubebuilder:validation:MaxItems=256
	Namespaces []BudgetNamespace `json:"namespaces,omitempty"`
}

// BudgetModel is one model's limits.
type BudgetModel struct {
	// Name of the model, as in spec.embedding.model, e.g. text-embedding-3-small.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="size(self) >= 1",message="spec.models[].name must be a model name of 1 to 253 characters, e.g. text-embedding-3-small"
	Name string `json:"name"`

	// RequestsPerMinute is the key's request limit for the model.
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 1000000",message="spec.models[].requestsPerMinute must be between 1 and 1000000: the key's request limit per minute for the model (see your provider's rate limits page)"
	RequestsPerMinute int64 `json:"requestsPerMinute"`

	// TokensPerMinute is the key's token limit for the model.
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 1000000000",message="spec.models[].tokensPerMinute must be between 1 and 1000000000: the key's token limit per minute for the model (see your provider's rate limits page)"
	TokensPerMinute int64 `json:"tokensPerMinute"`
}

// BudgetSecret names a key Secret.
type BudgetSecret struct {
	// Namespace of the Secret (and of the ingestions that name it).
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')",message="spec.secrets[].namespace must be a namespace name (lowercase letters, digits and '-', at most 63 characters)"
	Namespace string `json:"namespace"`
	// Name of the Secret, as in an ingestion's spec.embedding.apiKeySecretRef.name.
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$')",message="spec.secrets[].name must be a Secret name (lowercase letters, digits, '-' and '.', at most 253 characters)"
	Name string `json:"name"`
}

// BudgetNamespace is a namespace that draws from the budget, and its weight.
type BudgetNamespace struct {
	// Name of the namespace.
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:XValidation:rule="self.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')",message="spec.namespaces[].name must be a namespace name (lowercase letters, digits and '-', at most 63 characters)"
	Name string `json:"name"`
	// Weight of the namespace's ingestions when the budget is divided (each ingestion of the
	// namespace counts this much; namespaces not listed here, drawing through spec.secrets: 1).
	// +optional
	// +kubebuilder:default=1
	// +kubebuilder:validation:XValidation:rule="self >= 1 && self <= 1000",message="spec.namespaces[].weight must be between 1 and 1000 (a namespace of weight 2 gets twice the share of one of weight 1)"
	Weight int32 `json:"weight,omitempty"`
}

// BudgetRates are rates per minute.
type BudgetRates struct {
	RequestsPerMinute int64 `json:"requestsPerMinute"`
	TokensPerMinute   int64 `json:"tokensPerMinute"`
}

// BudgetModelStatus is one model's budget as the leader applies it now.
type BudgetModelStatus struct {
	Name string `json:"name"`
	// Declared is the limit the leader applies: spec.models' after an edit once every pod has
	// renewed (until then the smaller of the old and new limits).
	// +optional
	Declared BudgetRates `json:"declared"`
	// Effective is the declared limit after backoff: below it while the provider answers 429. A
	// new leader resumes the backoff from it.
	Effective BudgetRates `json:"effective"`
	// Granted is the sum of the live leases.
	Granted BudgetRates `json:"granted"`
	// Used is what the holders reported using, per minute, over their last renewal.
	Used BudgetRates `json:"used"`
	// Holders is the number of pods holding a lease.
	Holders int32 `json:"holders"`
	// RateLimited counts the 429s the holders reported since the leader began serving this
	// budget (the all-time count is the metric vectordb_rate_budget_rate_limited_total).
	RateLimited int64 `json:"rateLimited"`
}

// BudgetHolder is one ingestion drawing from the budget (all its pods together).
type BudgetHolder struct {
	Namespace string `json:"namespace"`
	Ingestion string `json:"ingestion"`
	Model     string `json:"model"`
	// Pods holding a lease.
	Pods    int32       `json:"pods"`
	Granted BudgetRates `json:"granted"`
	Used    BudgetRates `json:"used"`
	// RateLimited counts the 429s its live pods reported.
	RateLimited int64 `json:"rateLimited"`
	// BackoffPercent is the ingestion's own backoff, in percent of its share, when the provider's
	// 429s came to its pods alone (its grants are cut, the others' are not); omitted at 100.
	// +optional
	BackoffPercent int32 `json:"backoffPercent,omitempty"`
}

// EmbeddingBudgetStatus is written by the leader from the lease service every few seconds,
// when it changes.
type EmbeddingBudgetStatus struct {
	// ObservedGeneration is the spec generation this status reflects.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Models: per listed model with holders (or backed off), effective, granted and used rates.
	// +optional
	// +listType=atomic
	Models []BudgetModelStatus `json:"models,omitempty"`
	// Holders are the ingestions drawing from the budget now (at most 100, largest grant first).
	// +optional
	// +listType=atomic
	Holders []BudgetHolder `json:"holders,omitempty"`
	// HoldersOmitted counts the holders beyond the 100 listed.
	// +optional
	HoldersOmitted int32 `json:"holdersOmitted,omitempty"`
	// Conditions: Ready (the leader applies the budget), Conflicting (another budget claims the
	// same key Secret or namespace), UnlistedModels (ingestions it claims use a model it does not
	// list, and keep their implicit budgets).
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=eb,categories=vectordb
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Conflicting",type=string,JSONPath=`.status.conditions[?(@.type=="Conflicting")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`

// EmbeddingBudget is the declared rate budget of one or more provider keys: requests and tokens
// per minute per model, the key Secrets and namespaces that draw from it, and their weights.
type EmbeddingBudget struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   EmbeddingBudgetSpec   `json:"spec"`
	Status EmbeddingBudgetStatus `json:"status,omitempty"`
}

// +kubebuilder:object:root=true

// EmbeddingBudgetList is a list of EmbeddingBudgets.
type EmbeddingBudgetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []EmbeddingBudget `json:"items"`
}

func init() {
	SchemeBuilder.Register(&EmbeddingBudget{}, &EmbeddingBudgetList{})
}
