package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
	"github.com/vectordb-io/vectordb-operator/test/csvgen"
)

// TestUnwritableDeadLetterFailsThePlan: an ingestion whose dead-letter bucket does not exist
// fails in the planner, permanently, with reason DeadLetterUnwritable and a message naming the
// bucket and the field to fix, before any chunk Job: the OpenAI fake embeds none of its rows
// (a dead-letter write found unwritable at a chunk's end used to fail the chunk retryably, and
// every attempt embedded the whole chunk again).
func TestUnwritableDeadLetterFailsThePlan(t *testing.T) {
	skipShort(t)
	ctx := context.Background()
	_, key := scenario(t, "deadletter", csvgen.Options{Rows: 1500, Seed: 53})
	before := st.OpenAI.Stats()
	obj := st.LegacyIngestion("deadletter", "unwritable", key)
	obj.Spec.DeadLetter = &v1alpha1.DeadLetterSpec{Bucket: "no-such-dead-letters", KeyPrefix: "failed/"}
	obj.Spec.Tracking = nil
	apply(t, obj)
	t.Cleanup(func() { _ = st.Cluster.Client.Delete(ctx, obj) })

	final := waitTerminal(t, obj, 5*time.Minute)
	cond := meta.FindStatusCondition(final.Status.Conditions, v1alpha1.ConditionFailed)
	if final.Status.Phase != v1alpha1.PhaseFailed || cond == nil || cond.Reason != worker.ReasonDeadLetterUnwritable {
		t.Fatalf("phase %s, Failed condition %+v, want Failed with reason %s", final.Status.Phase, cond, worker.ReasonDeadLetterUnwritable)
	}
	if !strings.Contains(cond.Message, "s3://no-such-dead-letters/failed/") || !strings.Contains(cond.Message, "spec.deadLetter") {
		t.Errorf("the message does not name the location and the field: %s", cond.Message)
	}
	if jobs := chunkJobs(t, obj); len(jobs) != 0 {
		t.Errorf("%d chunk Jobs created, want none", len(jobs))
	}
	// Every row embedded at most once: here not at once, as nothing was written.
	if after := st.OpenAI.Stats(); after.Inputs != before.Inputs || after.Tokens != before.Tokens {
		t.Errorf("the OpenAI fake embedded %d inputs (%d tokens) for an ingestion that cannot keep its dead letters",
			after.Inputs-before.Inputs, after.Tokens-before.Tokens)
	}
	t.Logf("refused: %s", cond.Message)
}
