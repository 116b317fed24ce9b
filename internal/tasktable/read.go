package tasktable

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
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

// listed are the attributes ListPage reads: everything but the chunk map, which can be large.
var listed = []string{
	"task_id", "status", "task_type", "parameters", "total_records", "processed_records", "failed_records",
	"chunks_total", "chunks_completed", "chunks_failed", "chunks_processing", "progress_percentage",
	"vectors_upserted", "deleted_records", "batch", "error_message", "created_at", "updated_at", "started_at", "completed_at", "k8s", "version",
}
