package controllers

import (
	"context"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// WithdrawQueued runs a pass's withdrawal of one queued chunk Job, as read (job), through c;
// it returns how soon the pass would look again.
func WithdrawQueued(ctx context.Context, c client.Client, job *batchv1.Job) (time.Duration, error) {
	p := &pass{r: &Reconciler{Client: c}, obj: &v1alpha1.CsvIngestion{}}
	err := p.withdraw(ctx, []*childJob{{job: job, state: jobSuspended}})
	return p.requeueAfter, err
}
