package tasktable

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// One dynalite serves the package's tests; each test uses its own table.
var dyn *harness.Dynalite

func TestMain(m *testing.M) {
	d, err := harness.NewDynalite()
	if err != nil {
		fmt.Fprintf(os.Stderr, "starting dynalite: %v\n", err)
		os.Exit(1)
	}
	dyn = d
	code := m.Run()
	if err := d.Stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stopping dynalite: %v\n", err)
	}
	os.Exit(code)
}

var testCreds = credentials.NewStaticCredentialsProvider("test", "test", "")

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// newTable creates a table for the test and returns a client for it built with New, the way the
// controller builds one.
func newTable(t *testing.T) (*Client, string) {
	t.Helper()
	table := "t-" + strings.ToLower(unsafeName.ReplaceAllString(t.Name(), "-"))
	if len(table) > 200 {
		table = table[:200]
	}
	if err := EnsureTable(context.Background(), dyn.Client(), table); err != nil {
		t.Fatalf("EnsureTable: %v", err)
	}
	return newClient(t, table), table
}

func newClient(t *testing.T, table string) *Client {
	t.Helper()
	c, err := New(context.Background(), Config{Table: table, Region: "us-east-1", Endpoint: dyn.Endpoint, Credentials: testCreds})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return c
}

func rawItem(t *testing.T, table, taskID string) map[string]types.AttributeValue {
	t.Helper()
	out, err := dyn.Client().GetItem(context.Background(), &dynamodb.GetItemInput{
		TableName: aws.String(table), Key: key(taskID), ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		t.Fatalf("GetItem: %v", err)
	}
	return out.Item
}

// render writes an attribute value as typed text with sorted map keys, so two items compare as
// strings and a difference is readable.
func render(v types.AttributeValue) string {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return fmt.Sprintf("S(%q)", v.Value)
	case *types.AttributeValueMemberN:
		return "N(" + v.Value + ")"
	case *types.AttributeValueMemberBOOL:
		return fmt.Sprintf("BOOL(%v)", v.Value)
	case *types.AttributeValueMemberNULL:
		return "NULL"
	case *types.AttributeValueMemberM:
		return "M{" + renderMap(v.Value) + "}"
	case *types.AttributeValueMemberL:
		parts := make([]string, len(v.Value))
		for i, e := range v.Value {
			parts[i] = render(e)
		}
		return "L[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprintf("%T", v)
}

func renderMap(m map[string]types.AttributeValue) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ": " + render(m[k])
	}
	return strings.Join(parts, ", ")
}

func s(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
func n(v string) types.AttributeValue { return &types.AttributeValueMemberN{Value: v} }
func m(v map[string]types.AttributeValue) types.AttributeValue {
	return &types.AttributeValueMemberM{Value: v}
}

// itemSize is an item's size as DynamoDB counts it against the 400 KB limit: attribute names plus
// values; a string is its UTF-8 bytes, a number one byte per two significant digits plus one, a
// map 3 bytes plus its entries' names and values plus one byte per entry.
func itemSize(item map[string]types.AttributeValue) int {
	size := 0
	for k, v := range item {
		size += len(k) + avSize(v)
	}
	return size
}

func avSize(v types.AttributeValue) int {
	switch v := v.(type) {
	case *types.AttributeValueMemberS:
		return len(v.Value)
	case *types.AttributeValueMemberN:
		digits := strings.TrimLeft(strings.ReplaceAll(strings.TrimPrefix(v.Value, "-"), ".", ""), "0")
		digits = strings.TrimRight(digits, "0")
		return (len(digits)+1)/2 + 1
	case *types.AttributeValueMemberB:
		return len(v.Value)
	case *types.AttributeValueMemberBOOL, *types.AttributeValueMemberNULL:
		return 1
	case *types.AttributeValueMemberM:
		size := 3
		for k, e := range v.Value {
			size += len(k) + avSize(e) + 1
		}
		return size
	case *types.AttributeValueMemberL:
		size := 3
		for _, e := range v.Value {
			size += avSize(e) + 1
		}
		return size
	}
	panic(fmt.Sprintf("unexpected attribute value %T", v))
}
