package shim

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/vectordb-io/vectordb-operator/internal/apikeys"
	"github.com/vectordb-io/vectordb-operator/internal/tasktable"
	"github.com/vectordb-io/vectordb-operator/test/harness"
)

// listItemsEnv sets the size of the table TestListReadsABoundedPage fills; the default keeps the
// suite short, the bound asserted is the same at any size (docs/benchmarks.md has a 100,000 run).
const listItemsEnv = "VECTORDB_LIST_TEST_ITEMS"

// GET /api/v1/tasks?limit=20 reads at most two pages of 20 task items (one Query per task type on
// the creation-time index), however many items the table holds; the next page by its continue
// token costs the same. DynamoDB's own ScannedCount is summed by a middleware of the client.
func TestListReadsABoundedPage(t *testing.T) {
	n := 5000
	if v := os.Getenv(listItemsEnv); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n < 100 {
			t.Fatalf("%s=%q: want a number ≥ 100", listItemsEnv, v)
		}
	}
	ctx := context.Background()
	d := harness.StartDynalite(t)
	var read atomic.Int64
	api := dynamodb.New(dynamodb.Options{
		Region: "us-east-1", BaseEndpoint: aws.String(d.Endpoint),
		Credentials: credentials.NewStaticCredentialsProvider("dummy", "dummy", ""),
		APIOptions: []func(*middleware.Stack) error{func(st *middleware.Stack) error {
			return st.Initialize.Add(middleware.InitializeMiddlewareFunc("countItemsRead",
				func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
					out, md, err := next.HandleInitialize(ctx, in)
					switch o := out.Result.(type) {
					case *dynamodb.QueryOutput:
						read.Add(int64(o.ScannedCount))
					case *dynamodb.ScanOutput:
						read.Add(int64(o.ScannedCount))
					case *dynamodb.GetItemOutput:
						if len(o.Item) > 0 {
							read.Add(1)
						}
					}
					return out, md, err
				}), middleware.After)
		}},
	})
	const table = "bounded"
	if err := tasktable.EnsureTable(ctx, api, table); err != nil {
		t.Fatal(err)
	}

	// n items, created a second apart, the two task types interleaved.
	base := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	s := func(v string) types.AttributeValue { return &types.AttributeValueMemberS{Value: v} }
	item := func(i int) map[string]types.AttributeValue {
		tt := tasktable.TaskTypes[i%2]
		return map[string]types.AttributeValue{
			"task_id": s(fmt.Sprintf("bulk-%07d", i)), "status": s("completed"), "task_type": s(tt),
			"created_at":    s(base.Add(time.Duration(i) * time.Second).Format(tasktable.TimeFormat)),
			"total_records": &types.AttributeValueMemberN{Value: "10"}, "version": &types.AttributeValueMemberN{Value: "1"},
			"parameters": &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"data_source": s("s3_csv"), "s3_key": s("exports/bulk.csv")}},
			"k8s":        &types.AttributeValueMemberM{Value: map[string]types.AttributeValue{"namespace": s("gone"), "name": s("bulk"), "uid": s(fmt.Sprint("uid-", i))}},
		}
	}
	start := time.Now()
	batches := make(chan int)
	var wg sync.WaitGroup
	var failed atomic.Value
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				var reqs []types.WriteRequest
				for i := b; i < min(b+25, n); i++ {
					reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: item(i)}})
				}
				for len(reqs) > 0 {
					out, err := api.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{table: reqs}})
					if err != nil {
						failed.Store(err)
						return
					}
					reqs = out.UnprocessedItems[table]
				}
			}
		}()
	}
	for b := 0; b < n; b += 25 {
		batches <- b
	}
	close(batches)
	wg.Wait()
	if err, _ := failed.Load().(error); err != nil {
		t.Fatalf("filling the table: %v", err)
	}
	t.Logf("wrote %d items in %s", n, time.Since(start).Round(time.Millisecond))

	const key = "bulk-reader-key"
	e := startShim(t, testCluster(t), func(c *Config, deps *Deps) {
		c.ReadOnlyKeys = apikeys.Static(apikeys.Key{Name: "bulk", Value: key, Namespaces: []string{apikeys.AllNamespaces}})
		deps.Tasks = tasktable.NewFromAPI(api, table)
	})
	var want []string // the newest n, newest first
	for i := n - 1; i >= 0; i-- {
		want = append(want, fmt.Sprintf("bulk-%07d", i))
	}
	query := "?limit=20&status_filter=completed"
	var got []string
	for page := 0; page < 3; page++ {
		read.Store(0)
		start := time.Now()
		r := do(t, http.MethodGet, e.URL+"/api/v1/tasks"+query, key, nil)
		took := time.Since(start)
		if r.Code != http.StatusOK {
			t.Fatalf("page %d: %d %s", page, r.Code, r.Body)
		}
		var items []StatusResponse
		r.json(t, &items)
		var bulk []string
		for _, it := range items {
			if it.Metadata.Kubernetes != nil && it.Metadata.Kubernetes.Namespace == "gone" {
				bulk = append(bulk, it.TaskID)
			}
		}
		got = append(got, bulk...)
		if rd := read.Load(); rd > 2*20 {
			t.Errorf("page %d of 20 read %d items from a table of %d: want at most two pages (40)", page, rd, n)
		} else {
			t.Logf("page %d: %d tasks, %d items read from a table of %d, %s", page, len(items), rd, n, took.Round(time.Microsecond))
		}
		next := r.Header.Get(HeaderContinue)
		if next == "" {
			t.Fatalf("page %d of a table of %d has no %s", page, n, HeaderContinue)
		}
		query = "?limit=20&status_filter=completed&continue=" + next
	}
	if !slices.Equal(got, want[:len(got)]) || len(got) < 40 {
		t.Errorf("three pages listed %d tasks %v…, want the newest first %v…", len(got), got[:min(3, len(got))], want[:3])
	}
}
