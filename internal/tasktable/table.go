package tasktable

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// CheckTable tells whether the table can take writes: it exists, is ACTIVE (or UPDATING, which
// still serves reads and writes) and is keyed by task_id as a string. Any other answer wraps
// ErrUnavailable, for health checks and the TrackingDegraded condition.
func (c *Client) CheckTable(ctx context.Context) error {
	out, err := c.api.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(c.table)}, callOpts)
	if err != nil {
		return classify(fmt.Sprintf("checking table %s", c.table), err)
	}
	td := out.Table
	if td == nil {
		return fmt.Errorf("checking table %s: %w: no table description", c.table, ErrUnavailable)
	}
	if td.TableStatus != types.TableStatusActive && td.TableStatus != types.TableStatusUpdating {
		return fmt.Errorf("checking table %s: %w: table is %s", c.table, ErrUnavailable, td.TableStatus)
	}
	if !keyedByTaskID(td) {
		return fmt.Errorf("checking table %s: %w: its partition key must be %s (string) and it must have no sort key", c.table, ErrUnavailable, attrTaskID)
	}
	return nil
}

func keyedByTaskID(td *types.TableDescription) bool {
	if len(td.KeySchema) != 1 || aws.ToString(td.KeySchema[0].AttributeName) != attrTaskID || td.KeySchema[0].KeyType != types.KeyTypeHash {
		return false
	}
	for _, a := range td.AttributeDefinitions {
		if aws.ToString(a.AttributeName) == attrTaskID {
			return a.AttributeType == types.ScalarAttributeTypeS
		}
	}
	return false
}

// EnsureTable creates the table (partition key task_id, a string; on-demand billing; the index
// CreatedIndex) when it does not exist and waits until it is ACTIVE. For tests and the demo;
// production tables are made by infrastructure code (the install guides' commands).
func EnsureTable(ctx context.Context, api *dynamodb.Client, table string) error {
	_, err := api.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName: aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String(attrTaskID), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("task_type"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("created_at"), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema:   []types.KeySchemaElement{{AttributeName: aws.String(attrTaskID), KeyType: types.KeyTypeHash}},
		BillingMode: types.BillingModePayPerRequest,
		GlobalSecondaryIndexes: []types.GlobalSecondaryIndex{{
			IndexName: aws.String(CreatedIndex),
			KeySchema: []types.KeySchemaElement{
				{AttributeName: aws.String("task_type"), KeyType: types.KeyTypeHash},
				{AttributeName: aws.String("created_at"), KeyType: types.KeyTypeRange},
			},
			Projection: &types.Projection{ProjectionType: types.ProjectionTypeAll},
		}},
	}, callOpts)
	var inUse *types.ResourceInUseException
	if err != nil && !errors.As(err, &inUse) {
		return classify(fmt.Sprintf("creating table %s", table), err)
	}
	w := dynamodb.NewTableExistsWaiter(api, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay = 50 * time.Millisecond
		o.MaxDelay = 2 * time.Second
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, 2*time.Minute); err != nil {
		return classify(fmt.Sprintf("waiting for table %s", table), err)
	}
	return nil
}
