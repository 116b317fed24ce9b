package tasktable

import (
	"context"
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

// Get reads a task and its chunk map (keyed as ChunkKey makes them) with a strongly consistent
// read. It returns ErrNotFound when there is no such item.
func (c *Client) Get(ctx context.Context, taskID string) (*Task, map[string]ChunkEntry, error) {
	if taskID == "" {
		return nil, nil, fmt.Errorf("reading task: %w: empty task id", ErrInvalid)
	}
	out, err := c.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(c.table),
		Key:            key(taskID),
		ConsistentRead: aws.Bool(true),
	}, callOpts)
	if err != nil {
		return nil, nil, classify(fmt.Sprintf("reading task %q from table %s", taskID, c.table), err)
	}
	if len(out.Item) == 0 {
		return nil, nil, fmt.Errorf("reading task %q from table %s: %w", taskID, c.table, ErrNotFound)
	}
	t, chunks, err := decodeItem(out.Item)
	if err != nil {
		return nil, nil, fmt.Errorf("reading task %q from table %s: %w", taskID, c.table, err)
	}
	return t, chunks, nil
}

// listed are the attributes List reads: everything but the chunk map, which can be large.
var listed = []string{
	"task_id", "status", "task_type", "parameters", "total_records", "processed_records", "failed_records",
	"chunks_total", "chunks_completed", "chunks_failed", "chunks_processing", "progress_percentage",
	"vectors_upserted", "deleted_records", "error_message", "created_at", "updated_at", "started_at", "completed_at", "k8s", "version",
}

// List returns tasks, newest created first (then by task id), with the given status word when
// statusFilter is not empty, at most limit of them when limit > 0. It serves the REST API for
// tasks whose resources are gone. It Scans the whole table (the table has no index on status or
// time, and an order needs every item), reading only top-level attributes; the task table grows
// by a few items a day, so that is a small read. Items that cannot be decoded (not written by this
// system) are skipped and logged.
func (c *Client) List(ctx context.Context, statusFilter string, limit int) ([]Task, error) {
	if statusFilter != "" && !taskstatus.Valid(statusFilter) {
		return nil, fmt.Errorf("listing tasks: %w: status %q is not one of %s", ErrInvalid, statusFilter, strings.Join(taskstatus.All(), ", "))
	}
	names := map[string]string{}
	proj := make([]string, len(listed))
	statusP := ""
	for i, n := range listed {
		p := "#p" + strconv.Itoa(i)
		names[p] = n
		proj[i] = p
		if n == attrStatus {
			statusP = p
		}
	}
	in := &dynamodb.ScanInput{
		TableName:                aws.String(c.table),
		ProjectionExpression:     aws.String(strings.Join(proj, ", ")),
		ExpressionAttributeNames: names,
	}
	if statusFilter != "" {
		in.FilterExpression = aws.String(statusP + " = :status")
		in.ExpressionAttributeValues = map[string]types.AttributeValue{":status": &types.AttributeValueMemberS{Value: statusFilter}}
	}
	log := logr.FromContextOrDiscard(ctx)
	var tasks []Task
	pages := dynamodb.NewScanPaginator(c.api, in)
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx, callOpts)
		if err != nil {
			return nil, classify(fmt.Sprintf("listing tasks in table %s", c.table), err)
		}
		for _, item := range page.Items {
			t, _, err := decodeItem(item)
			if err != nil {
				log.Info("skipping a task item that cannot be decoded", "table", c.table, "error", err.Error())
				continue
			}
			tasks = append(tasks, *t)
		}
	}
	sort.Slice(tasks, func(i, j int) bool {
		if !tasks[i].CreatedAt.Equal(tasks[j].CreatedAt) {
			return tasks[i].CreatedAt.After(tasks[j].CreatedAt)
		}
		return tasks[i].TaskID < tasks[j].TaskID
	})
	if limit > 0 && len(tasks) > limit {
		tasks = tasks[:limit]
	}
	return tasks, nil
}
