package chunkrun

import (
	"cmp"
	"context"
	"os"

	"github.com/go-logr/logr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/ratebudget"
	"github.com/vectordb-io/vectordb-operator/internal/ratelease"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// LeaseFromEnv returns the lease client's options from the pod's environment (the controller
// sets it when the manager runs the lease service), or nil when there is none. A lease URL
// without a credential is a lease Secret deleted under the ingestion (the controller's
// secretKeyRef is optional): the pod runs on its Job's frozen share and says so in log.
func LeaseFromEnv(ing worker.Ingestion, log logr.Logger) *ratelease.ClientOptions {
	url, cred := os.Getenv(ratelease.EnvURL), os.Getenv(ratelease.EnvCredential)
	if url != "" && cred == "" {
		log.Info("rate lease Secret missing (deleted?): running on the Job's frozen budget share without a lease",
			"secret", ratelease.SecretName(ing.Name), "key", ratelease.SecretKey)
	}
	if url == "" || cred == "" {
		return nil
	}
	return &ratelease.ClientOptions{
		URL: url, Credential: cred, Namespace: ing.Namespace, Ingestion: ing.Name,
		Job: os.Getenv(ratelease.EnvJob), Holder: os.Getenv(ratelease.EnvPod), Model: ing.Spec.Embedding.Model,
	}
}

// embedderLimiter lets a lease drive an Embedder.
type embedderLimiter struct{ *embedding.Embedder }

func (e embedderLimiter) Usage() ratelease.Usage {
	st := e.Stats()
	rr, rt := e.RateLimitRemaining()
	return ratelease.Usage{Requests: st.Requests, Tokens: st.Tokens, RateLimited: st.RateLimited,
		RemainingRequests: rr, RemainingTokens: rt, Waited: e.Waited()}
}

// startLease renews emb's lease until stop is called; stop releases the lease. The chunk's
// frozen shares are the lease's fallback until the service has said better.
func startLease(ctx context.Context, opts ratelease.ClientOptions, emb *embedding.Embedder, args worker.ChunkArgs, log logr.Logger) (stop func()) {
	return Lease(ctx, opts, emb, ratebudget.Rates{RPM: args.RequestsPerMinute, TPM: args.TokensPerMinute}, log)
}

// Lease takes emb's first rate lease (waiting at most ratelease.FirstLeaseWait, then starting on
// fallback) and renews it until stop is called; stop releases it. Chunk pods and the planner's
// vector-space guard use it.
func Lease(ctx context.Context, opts ratelease.ClientOptions, emb *embedding.Embedder, fallback ratebudget.Rates, log logr.Logger) (stop func()) {
	opts.Fallback = fallback
	opts.Log = log.WithName("rate-lease")
	if opts.Holder == "" {
		opts.Holder = opts.Job
	}
	c := ratelease.NewClient(opts, embedderLimiter{emb})
	// The first lease before the first request: the frozen share is the Job's part of its own
	// ingestion's budget, not of the key's, and other ingestions may hold all of that.
	if err := c.First(ctx, 0); err != nil {
		log.Info("no first rate lease; starting on the fallback share", "error", err.Error())
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

// batchReporter returns the live batch-state reporter of a batch-mode chunk (nil without a
// lease: the state then reaches the manager when the chunk ends). It posts to the lease
// service's report endpoint with the lease credential, best effort.
func batchReporter(ing worker.Ingestion, chunk int, lease *ratelease.ClientOptions, log logr.Logger) func(context.Context, v1alpha1.BatchStatus) {
	if lease == nil {
		return nil
	}
	rep := ratelease.NewReporter(ratelease.ReportURL(lease.URL), lease.Credential, ing.Namespace, ing.Name,
		cmp.Or(ing.UID, ing.ObjectID()), chunk, lease.HTTPClient, log.WithName("batch-report"))
	return func(ctx context.Context, s v1alpha1.BatchStatus) { rep.Report(ctx, s) }
}
