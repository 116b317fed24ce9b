package tasktable

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/vectordb-io/vectordb-operator/internal/taskstatus"
)

// DynamoDB caps each expression at 4 KB and an UpdateExpression at 300 operators; one call stays
// well inside both, and a write that does not fit is spread over several calls.
const (
	maxExprBytes      = 4000
	maxActionsPerCall = 120
)

// Conditions of the calls of one write. The first call claims the version: it lands on an item
// that is absent, or that belongs to the same CsvIngestion (k8s.uid) and is unversioned or older,
// or at the same version and status (a re-write of the same state, e.g. a retry that completes a
// write whose later calls failed; an equal version can never change the status, so it cannot undo
// a cancellation). The other calls only land while the item still holds exactly that owner,
// version and status, so a writer that took over in between is never overwritten by the rest of
// an older write. The owner check keeps an ingestion in one namespace from changing the item of
// another that happens to use the same task id and table (tenants choose spec.taskID freely).
const (
	condClaim    = "attribute_not_exists(#id) OR (#k8s.#uid = :uid AND (attribute_not_exists(#ver) OR #ver < :ver OR (#ver = :ver AND #st = :st)))"
	condContinue = "#k8s.#uid = :uid AND #ver = :ver AND #st = :st"
)

// call is one UpdateItem.
type call struct {
	update    string
	condition string
	names     map[string]string
	values    map[string]types.AttributeValue
}

// builder assembles one call, keeping track of the expression's length.
type builder struct {
	call
	sets, removes []string
	setLen        int // bytes of the sets joined with ", "
	removeLen     int
	n             int
	nameOf        map[string]string
}

func newBuilder(condition string, version int64, status, uid string) *builder {
	b := &builder{call: call{
		condition: condition,
		names:     map[string]string{"#ver": attrVersion, "#st": attrStatus, "#k8s": attrK8s, "#uid": attrUID},
		values: map[string]types.AttributeValue{
			":ver": &types.AttributeValueMemberN{Value: strconv.FormatInt(version, 10)},
			":st":  &types.AttributeValueMemberS{Value: status},
			":uid": &types.AttributeValueMemberS{Value: uid},
		},
	}, nameOf: map[string]string{attrVersion: "#ver", attrStatus: "#st", attrK8s: "#k8s"}}
	if condition == condClaim {
		b.names["#id"] = attrTaskID
		b.nameOf[attrTaskID] = "#id"
	}
	return b
}

func (b *builder) name(n string) string {
	if p, ok := b.nameOf[n]; ok {
		return p
	}
	p := "#n" + strconv.Itoa(len(b.nameOf))
	b.nameOf[n] = p
	b.names[p] = n
	return p
}

func (b *builder) value(v types.AttributeValue) string {
	b.n++
	p := ":v" + strconv.Itoa(b.n)
	b.values[p] = v
	return p
}

// lenWithSet is the length the update expression would have with one more SET clause of n bytes.
func (b *builder) lenWithSet(n int) int {
	set := b.setLen + n + 4 // "SET "
	if len(b.sets) > 0 {
		set += 2
	}
	rem := 0
	if len(b.removes) > 0 {
		rem = b.removeLen + 8 // " REMOVE "
	}
	return set + rem
}

func (b *builder) actions() int { return len(b.sets) + len(b.removes) }

func (b *builder) set(clause string) {
	if len(b.sets) > 0 {
		b.setLen += 2
	}
	b.setLen += len(clause)
	b.sets = append(b.sets, clause)
}

func (b *builder) remove(path string) {
	if len(b.removes) > 0 {
		b.removeLen += 2
	}
	b.removeLen += len(path)
	b.removes = append(b.removes, path)
}

// tryChunk adds a chunk entry when it fits in this call. Placeholders are assigned only when the
// clause fits (an unused placeholder is an error), so it is measured with the ones it would get.
func (b *builder) tryChunk(c chunkUpdate) bool {
	if b.actions() >= maxActionsPerCall {
		return false
	}
	next := len(b.nameOf)
	chunksP, ok := b.nameOf[attrChunks]
	if !ok {
		chunksP = "#n" + strconv.Itoa(next)
		next++
	}
	keyP, ok := b.nameOf[c.key]
	if !ok {
		keyP = "#n" + strconv.Itoa(next)
	}
	clause := chunksP + "." + keyP + " = :v" + strconv.Itoa(b.n+1)
	if b.lenWithSet(len(clause)) > maxExprBytes {
		return false
	}
	b.set(b.name(attrChunks) + "." + b.name(c.key) + " = " + b.value(c.value))
	return true
}

func (b *builder) build() call {
	var sb strings.Builder
	if len(b.sets) > 0 {
		sb.WriteString("SET ")
		sb.WriteString(strings.Join(b.sets, ", "))
	}
	if len(b.removes) > 0 {
		if sb.Len() > 0 {
			sb.WriteByte(' ')
		}
		sb.WriteString("REMOVE ")
		sb.WriteString(strings.Join(b.removes, ", "))
	}
	c := b.call
	c.update = sb.String()
	return c
}

// planCalls spreads one write over as few UpdateItem calls as the limits allow. The first call sets
// the top-level attributes and the version; when the item may lack a chunk map it creates an
// empty one (a nested SET under a missing map fails) and the chunk entries follow in later calls.
func planCalls(version int64, status, uid string, top []attrUpdate, chunks []chunkUpdate, chunkMapExists bool) []call {
	b := newBuilder(condClaim, version, status, uid)
	for _, a := range top {
		if a.value == nil {
			b.remove(b.name(a.name))
			continue
		}
		b.set(b.name(a.name) + " = " + b.value(a.value))
	}
	if !chunkMapExists {
		chunksP := b.name(attrChunks)
		b.set(chunksP + " = if_not_exists(" + chunksP + ", " + b.value(&types.AttributeValueMemberM{Value: map[string]types.AttributeValue{}}) + ")")
	} else {
		for len(chunks) > 0 && b.tryChunk(chunks[0]) {
			chunks = chunks[1:]
		}
	}
	calls := []call{b.build()}
	for len(chunks) > 0 {
		b = newBuilder(condContinue, version, status, uid)
		for len(chunks) > 0 && b.tryChunk(chunks[0]) {
			chunks = chunks[1:]
		}
		calls = append(calls, b.build())
	}
	return calls
}

// Put writes t and the changed chunk entries (index → entry) as version t.Version. It returns
// ErrOwnedElsewhere when the item exists and was written for another CsvIngestion (another
// k8s.uid, or none); ErrStale when the item holds a newer version, or t.Version with another
// status; ErrInvalid for
// a task or chunk that cannot be written (nothing is written then); ErrUnavailable when the table
// cannot be used.
// Entries the bounds leave out (see the package comment) are skipped silently.
//
// A write with many chunk entries takes several calls; if a newer writer takes over between them,
// the rest is refused with ErrStale and the item keeps the newer writer's state.
func (c *Client) Put(ctx context.Context, t Task, chunks map[int]ChunkEntry) error {
	if err := t.validate(); err != nil {
		return err
	}
	sel, err := selectChunks(t, chunks)
	if err != nil {
		return err
	}
	top, err := topLevel(t, time.Now(), c.retention)
	if err != nil {
		return err
	}
	known := c.chunksKnown(t.TaskID)
	err = c.run(ctx, t.TaskID, planCalls(t.Version, t.Status, t.K8s.UID, top, sel, known))
	if err != nil && known && isValidation(err) {
		// The item lost its chunk map (deleted or expired since this client wrote it): write
		// again the way a first write does.
		c.rememberChunks(t.TaskID, false)
		err = c.run(ctx, t.TaskID, planCalls(t.Version, t.Status, t.K8s.UID, top, sel, false))
	}
	// After a failure the chunk map may not exist (the first call may not have landed).
	c.rememberChunks(t.TaskID, err == nil)
	if errors.Is(err, ErrStale) {
		err = c.explainRefusal(ctx, t.TaskID, t.K8s.UID, err)
	}
	return err
}

// explainRefusal tells a refused write on another ingestion's item (ErrOwnedElsewhere) from a
// stale one. The read happens after the fact, which is enough to explain: the owner of an item
// never changes once it is written.
func (c *Client) explainRefusal(ctx context.Context, taskID, uid string, refused error) error {
	out, err := c.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:                aws.String(c.table),
		Key:                      key(taskID),
		ConsistentRead:           aws.Bool(true),
		ProjectionExpression:     aws.String("#id, #k8s.#uid"), // the key too: an item without an owner is not empty
		ExpressionAttributeNames: map[string]string{"#id": attrTaskID, "#k8s": attrK8s, "#uid": attrUID},
	}, callOpts)
	if err != nil || len(out.Item) == 0 {
		return refused
	}
	if owner := itemOwner(out.Item); owner != uid {
		return fmt.Errorf("writing task %q to table %s: %w", taskID, c.table, ErrOwnedElsewhere)
	}
	return refused
}

// itemOwner is the k8s.uid of an item read with at least that attribute; "" when it has none.
func itemOwner(item map[string]types.AttributeValue) string {
	k, ok := item[attrK8s].(*types.AttributeValueMemberM)
	if !ok {
		return ""
	}
	u, ok := k.Value[attrUID].(*types.AttributeValueMemberS)
	if !ok {
		return ""
	}
	return u.Value
}

func (c *Client) run(ctx context.Context, taskID string, calls []call) error {
	for i, cl := range calls {
		_, err := c.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
			TableName:                 aws.String(c.table),
			Key:                       key(taskID),
			UpdateExpression:          aws.String(cl.update),
			ConditionExpression:       aws.String(cl.condition),
			ExpressionAttributeNames:  cl.names,
			ExpressionAttributeValues: cl.values,
		}, callOpts)
		if err != nil {
			return classify(fmt.Sprintf("writing task %q to table %s (call %d of %d)", taskID, c.table, i+1, len(calls)), err)
		}
	}
	return nil
}

func key(taskID string) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{attrTaskID: &types.AttributeValueMemberS{Value: taskID}}
}

// MarkCancelled sets the task's status to cancelled as version `version`, with completed_at and
// updated_at at `at` and no chunk processing, for the finalizer of a running ingestion that is
// deleted. The task must exist (ErrNotFound), belong to the CsvIngestion with uid `uid`
// (ErrOwnedElsewhere) and not be finished already (ErrFinished: it is left as it is, since a
// finished task's outcome is the truth); an older version gets ErrStale.
func (c *Client) MarkCancelled(ctx context.Context, taskID, uid string, version int64, at time.Time) error {
	if taskID == "" || uid == "" || version <= 0 {
		return fmt.Errorf("cancelling task %q: %w: task id and owner uid must be set and version > 0", taskID, ErrInvalid)
	}
	if at.IsZero() {
		at = time.Now()
	}
	ts := &types.AttributeValueMemberS{Value: formatTime(at)}
	set := "SET #st = :cancelled, #ca = :at, #ua = :at, #cp = :zero, #ver = :ver"
	names := map[string]string{
		"#id": attrTaskID, "#st": attrStatus, "#ca": attrComplete, "#ua": attrUpdated, "#cp": attrProcess, "#ver": attrVersion,
		"#k8s": attrK8s, "#uid": attrUID,
	}
	values := map[string]types.AttributeValue{
		":cancelled": &types.AttributeValueMemberS{Value: taskstatus.Cancelled},
		":completed": &types.AttributeValueMemberS{Value: taskstatus.Completed},
		":partial":   &types.AttributeValueMemberS{Value: taskstatus.PartiallyCompleted},
		":failed":    &types.AttributeValueMemberS{Value: taskstatus.Failed},
		":at":        ts,
		":zero":      &types.AttributeValueMemberN{Value: "0"},
		":ver":       &types.AttributeValueMemberN{Value: strconv.FormatInt(version, 10)},
		":uid":       &types.AttributeValueMemberS{Value: uid},
	}
	if c.retention > 0 {
		set += ", #exp = :exp"
		names["#exp"] = AttrExpiresAt
		values[":exp"] = &types.AttributeValueMemberN{Value: strconv.FormatInt(at.Add(c.retention).Unix(), 10)}
	}
	_, err := c.api.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:        aws.String(c.table),
		Key:              key(taskID),
		UpdateExpression: aws.String(set),
		ConditionExpression: aws.String("attribute_exists(#id) AND #k8s.#uid = :uid AND (attribute_not_exists(#ver) OR #ver < :ver) AND " +
			"NOT (#st IN (:completed, :partial, :failed, :cancelled))"),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	}, callOpts)
	if err == nil {
		return nil
	}
	what := fmt.Sprintf("cancelling task %q in table %s", taskID, c.table)
	err = classify(what, err)
	if !errors.Is(err, ErrStale) {
		return err
	}
	// Say why the condition failed; the read happens after the fact, which is enough to explain.
	out, gerr := c.api.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:                aws.String(c.table),
		Key:                      key(taskID),
		ConsistentRead:           aws.Bool(true),
		ProjectionExpression:     aws.String("#id, #st, #ver, #k8s.#uid"),
		ExpressionAttributeNames: map[string]string{"#id": attrTaskID, "#st": attrStatus, "#ver": attrVersion, "#k8s": attrK8s, "#uid": attrUID},
	}, callOpts)
	switch {
	case gerr != nil:
		return err
	case len(out.Item) == 0:
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	case itemOwner(out.Item) != uid:
		return fmt.Errorf("%s: %w", what, ErrOwnedElsewhere)
	}
	if s, ok := out.Item[attrStatus].(*types.AttributeValueMemberS); ok && taskstatus.Terminal(s.Value) {
		return fmt.Errorf("%s: %w (status %s)", what, ErrFinished, s.Value)
	}
	return err
}
