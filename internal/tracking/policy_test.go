package tracking

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

func TestPolicyCheck(t *testing.T) {
	open := Policy{}
	listed := Policy{AllowedEndpoints: []string{"http://dynalite.local:8000", "HTTPS://DDB.Example.com/"}}
	tables := Policy{AllowedTables: []string{"vectordb-tasks-prod"}, TablePrefixes: []string{"team-a-"}}
	cases := []struct {
		name   string
		policy Policy
		d      v1alpha1.DynamoDBTracking
		reason string // "" allowed
	}{
		{"AWS by default", open, v1alpha1.DynamoDBTracking{Table: "any", Region: "eu-west-1"}, ""},
		{"no endpoint by default", open, v1alpha1.DynamoDBTracking{Table: "any", Endpoint: "http://dynalite.local:8000"}, ReasonEndpointNotAllowed},
		{"metadata service", open, v1alpha1.DynamoDBTracking{Table: "any", Endpoint: "http://169.254.169.254"}, ReasonEndpointNotAllowed},
		{"listed endpoint", listed, v1alpha1.DynamoDBTracking{Table: "any", Endpoint: "http://dynalite.local:8000"}, ""},
		{"listed, trailing slash and case", listed, v1alpha1.DynamoDBTracking{Table: "any", Endpoint: "https://ddb.example.COM/"}, ""},
		{"other port", listed, v1alpha1.DynamoDBTracking{Table: "any", Endpoint: "http://dynalite.local:8001"}, ReasonEndpointNotAllowed},
		{"other scheme", listed, v1alpha1.DynamoDBTracking{Table: "any", Endpoint: "https://dynalite.local:8000"}, ReasonEndpointNotAllowed},
		{"user info", listed, v1alpha1.DynamoDBTracking{Table: "any", Endpoint: "http://x@dynalite.local:8000"}, ReasonEndpointNotAllowed},
		{"longer path", listed, v1alpha1.DynamoDBTracking{Table: "any", Endpoint: "http://dynalite.local:8000/x"}, ReasonEndpointNotAllowed},
		{"region with a host", open, v1alpha1.DynamoDBTracking{Table: "any", Region: "evil.example.com/"}, ReasonRegionInvalid},
		{"region with a dot", open, v1alpha1.DynamoDBTracking{Table: "any", Region: "us-east-1.evil"}, ReasonRegionInvalid},
		{"listed table", tables, v1alpha1.DynamoDBTracking{Table: "vectordb-tasks-prod"}, ""},
		{"prefixed table", tables, v1alpha1.DynamoDBTracking{Table: "team-a-tasks"}, ""},
		{"other table", tables, v1alpha1.DynamoDBTracking{Table: "payroll"}, ReasonTableNotAllowed},
		{"prefix of a listed table", tables, v1alpha1.DynamoDBTracking{Table: "vectordb-tasks"}, ReasonTableNotAllowed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := tc.policy.compile()
			if err != nil {
				t.Fatal(err)
			}
			err = p.Check(&tc.d)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var re *RefusedError
			if !errors.As(err, &re) || re.Reason != tc.reason || !errors.Is(err, ErrNotAllowed) {
				t.Fatalf("err = %v, want a %s refusal", err, tc.reason)
			}
		})
	}
}

func TestPolicyRejectsBadSettings(t *testing.T) {
	for _, e := range []string{"dynalite:8000", "ftp://x", "http://", "http://h/?q=1"} {
		if _, err := New("", Policy{AllowedEndpoints: []string{e}}); err == nil {
			t.Errorf("allowed endpoint %q accepted", e)
		}
	}
}

// The policy is checked before any client is built, and the client map stays bounded however
// many tables specs name.
func TestClientsAreBoundedAndChecked(t *testing.T) {
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test")
	tb, err := New("", Policy{})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := tb.Client(ctx, &v1alpha1.DynamoDBTracking{Table: "t", Endpoint: "http://127.0.0.1:1"}); err == nil {
		t.Fatal("refused endpoint got a client")
	}
	if n := tb.clientCount(); n != 0 {
		t.Fatalf("a refused spec left %d clients", n)
	}
	first, err := tb.Client(ctx, &v1alpha1.DynamoDBTracking{Table: "table-0"})
	if err != nil {
		t.Fatal(err)
	}
	again, _ := tb.Client(ctx, &v1alpha1.DynamoDBTracking{Table: "table-0"})
	if again != first {
		t.Fatal("the same table got a new client")
	}
	for i := range 3 * MaxClients {
		if _, err := tb.Client(ctx, &v1alpha1.DynamoDBTracking{Table: fmt.Sprintf("table-%d", i), Region: "us-east-1"}); err != nil {
			t.Fatal(err)
		}
		if n := tb.clientCount(); n > MaxClients {
			t.Fatalf("%d clients after %d tables, want at most %d", n, i+1, MaxClients)
		}
	}
}
