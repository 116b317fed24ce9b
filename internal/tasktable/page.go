package tasktable

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/internal/taskstatus"
)

// CreatedIndex is the global secondary index the REST API pages the table with: partition key
// task_type, sort key created_at (both strings, which every item of this system and of the old
// service has), all attributes projected. A page is one Query per task type, newest first, with
// Limit: its cost is the page's size, however large the table. EnsureTable creates it; the install
// guides show the CLI command for an existing table.
const CreatedIndex = "task_type-created_at-index"

// ErrNoIndex: the table has no CreatedIndex, so tasks cannot be listed without a full scan.
var ErrNoIndex = errors.New("the task table has no index " + CreatedIndex + " (partition key task_type, sort key created_at); create it as the install guide shows")

// TaskTypes are the partitions of CreatedIndex.
var TaskTypes = []string{TaskTypeS3CSV, TaskTypeMetabase}

// Cursor is a place in the newest-first order: tasks after it are older, or as old with a greater
// task id.
type Cursor struct {
	CreatedAt string `json:"c"` // as stored: TimeFormat
	TaskID    string `json:"id"`
}

// Before reports whether a task created at createdAt with taskID comes before c in the
// newest-first order (so a page that starts after c has already passed it).
func (c Cursor) Before(createdAt, taskID string) bool {
	if createdAt != c.CreatedAt {
		return createdAt > c.CreatedAt
	}
	return taskID <= c.TaskID
}

// PageQuery asks for the Need newest tasks after After (nil: from the newest).
type PageQuery struct {
	StatusFilter string // a taskstatus word, or ""
	TaskType     string // one of TaskTypes, or "" for both
	Need         int
	After        *Cursor
}

// Page is what ListPage read: Tasks newest first. When Horizon is nil they are every task after
// the query's cursor; otherwise they are every task after the cursor created later than Horizon's
// time (Horizon has no task id), tasks created then or earlier may not have been read, and a
// caller merging other sources must stop there.
type Page struct {
	Tasks   []Task
	Horizon *Cursor
	// ItemsRead is how many items DynamoDB evaluated (ScannedCount), what the reads cost.
	ItemsRead int
}

// ListPage reads the newest tasks after q.After from CreatedIndex: per task type, Query calls with
// Limit until Need items were evaluated or the partition ends. Items that cannot be decoded are
// skipped and logged.
func (c *Client) ListPage(ctx context.Context, q PageQuery) (Page, error) {
	if q.StatusFilter != "" && !taskstatus.Valid(q.StatusFilter) {
		return Page{}, fmt.Errorf("listing tasks: %w: status %q is not one of %s", ErrInvalid, q.StatusFilter, strings.Join(taskstatus.All(), ", "))
	}
	if q.Need < 1 {
		return Page{}, fmt.Errorf("listing tasks: %w: need %d tasks", ErrInvalid, q.Need)
	}
	types := TaskTypes
	if q.TaskType != "" {
		types = []string{q.TaskType}
	}
	var page Page
	for _, tt := range types {
		tasks, horizon, read, err := c.queryType(ctx, tt, q)
		page.ItemsRead += read
		if err != nil {
			return page, err
		}
		page.Tasks = append(page.Tasks, tasks...)
		if horizon != nil && (page.Horizon == nil || !horizon.Before(page.Horizon.CreatedAt, page.Horizon.TaskID)) {
			// The horizon that comes first in the order bounds what is complete.
			page.Horizon = horizon
		}
	}
	sort.Slice(page.Tasks, func(i, j int) bool {
		a, b := page.Tasks[i], page.Tasks[j]
		if !a.CreatedAt.Equal(b.CreatedAt) {
			return a.CreatedAt.After(b.CreatedAt)
		}
		return a.TaskID < b.TaskID
	})
	if page.Horizon != nil {
		h := *page.Horizon
		kept := page.Tasks[:0]
		for _, t := range page.Tasks {
			if h.Before(t.CreatedAt.UTC().Format(TimeFormat), t.TaskID) {
				kept = append(kept, t)
			}
		}
		page.Tasks = kept
	}
	return page, nil
}

// queryType reads one partition of CreatedIndex; horizon is set when the partition has more.
func (c *Client) queryType(ctx context.Context, taskType string, q PageQuery) ([]Task, *Cursor, int, error) {
	names := map[string]string{"#tt": "task_type"}
	proj := make([]string, len(listed))
	for i, n := range listed {
		p := "#p" + strconv.Itoa(i)
		names[p] = n
		proj[i] = p
	}
	values := map[string]types.AttributeValue{":tt": &types.AttributeValueMemberS{Value: taskType}}
	cond := "#tt = :tt"
	if q.After != nil {
		cond += " AND #ca <= :ca"
		names["#ca"] = "created_at"
		values[":ca"] = &types.AttributeValueMemberS{Value: q.After.CreatedAt}
	}
	in := &dynamodb.QueryInput{
		TableName:                 aws.String(c.table),
		IndexName:                 aws.String(CreatedIndex),
		KeyConditionExpression:    aws.String(cond),
		ScanIndexForward:          aws.Bool(false),
		ProjectionExpression:      aws.String(strings.Join(proj, ", ")),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	}
	if q.StatusFilter != "" {
		names["#st"] = attrStatus
		in.FilterExpression = aws.String("#st = :st")
		values[":st"] = &types.AttributeValueMemberS{Value: q.StatusFilter}
	}
	log := logr.FromContextOrDiscard(ctx)
	var out []Task
	read := 0
	for {
		in.Limit = aws.Int32(int32(max(q.Need-read, 1)))
		page, err := c.api.Query(ctx, in, callOpts)
		if err != nil {
			return nil, nil, read, c.queryError(ctx, err)
		}
		read += int(page.ScannedCount)
		for _, item := range page.Items {
			t, _, err := decodeItem(item)
			if err != nil {
				log.Info("skipping a task item that cannot be decoded", "table", c.table, "error", err.Error())
				continue
			}
			if q.After != nil && q.After.Before(t.CreatedAt.UTC().Format(TimeFormat), t.TaskID) {
				continue // at or before the cursor: an earlier page had it
			}
			out = append(out, *t)
		}
		if len(page.LastEvaluatedKey) == 0 {
			return out, nil, read, nil
		}
		// The horizon is a time, not an item: DynamoDB's order of items created in the same
		// microsecond need not be ours (task id), so none of them counts as read until all are.
		h := Cursor{}
		if v, ok := page.LastEvaluatedKey["created_at"].(*types.AttributeValueMemberS); ok {
			h.CreatedAt = v.Value
			if t, err := parseTime(v.Value); err == nil {
				h.CreatedAt = t.UTC().Format(TimeFormat) // the old service's form, normalized
			}
		}
		// Done once Need items were read, unless they reach no further back than the cursor's
		// own time: then read on, or the next page would start at the same place again.
		if read >= q.Need && (q.After == nil || h.CreatedAt != q.After.CreatedAt) {
			return out, &h, read, nil
		}
		in.ExclusiveStartKey = page.LastEvaluatedKey
	}
}

// queryError classifies a failed Query; a missing index is ErrNoIndex (DynamoDB says
// ValidationException, DynamoDB-compatible servers may say ResourceNotFound while the table
// itself exists).
func (c *Client) queryError(ctx context.Context, err error) error {
	what := fmt.Sprintf("listing tasks in table %s", c.table)
	if isValidation(err) && strings.Contains(strings.ToLower(err.Error()), "index") {
		return fmt.Errorf("%s: %w: %w", what, ErrNoIndex, err)
	}
	var rnf *types.ResourceNotFoundException
	if errors.As(err, &rnf) {
		if _, derr := c.api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(c.table)}, callOpts); derr == nil {
			return fmt.Errorf("%s: %w: %w", what, ErrNoIndex, err)
		}
	}
	return classify(what, err)
}
