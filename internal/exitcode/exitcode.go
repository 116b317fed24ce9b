// Package exitcode turns a worker's outcome into what the controller reads: the process exit code
// (permanent failures have their own, which the Job's podFailurePolicy fails on at once) and the
// result JSON in the termination message, written on every exit, error or not.
package exitcode

import (
	"errors"
	"os"

	"github.com/vectordb-io/vectordb-operator/internal/csvplan"
	"github.com/vectordb-io/vectordb-operator/internal/embedding"
	"github.com/vectordb-io/vectordb-operator/internal/pinecone"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// Of returns the exit code and reason for err: worker.ExitOK for nil, worker.ExitPermanent for
// errors no retry can fix (*worker.PermanentError, the embedding and Pinecone clients' permanent
// errors, a CSV header that does not fit), and worker.ExitRetryable for everything else (retries
// exhausted, timeouts, a cancelled context, network failures).
func Of(err error) (code int, reason string) {
	if err == nil {
		return worker.ExitOK, ""
	}
	if p, ok := worker.AsPermanent(err); ok {
		return worker.ExitPermanent, p.Reason
	}
	var ep *embedding.PermanentError
	if errors.As(err, &ep) {
		return worker.ExitPermanent, ep.Reason
	}
	var pp *pinecone.PermanentError
	if errors.As(err, &pp) {
		return worker.ExitPermanent, pp.Reason
	}
	var he *csvplan.HeaderError
	if errors.As(err, &he) {
		return worker.ExitPermanent, worker.ReasonHeaderMismatch
	}
	return worker.ExitRetryable, worker.ReasonRetryableError
}

// TerminationPath is where the result goes: the --termination-log flag when set, else
// $VECTORDB_TERMINATION_LOG, else the kubelet's default /dev/termination-log.
func TerminationPath(flag string) string {
	if flag != "" {
		return flag
	}
	if env := os.Getenv(worker.EnvTerminationLog); env != "" {
		return env
	}
	return worker.DefaultTerminationLog
}

// Finish records err in res (reason and message), writes res to path and returns the exit code.
// A failure to write the message does not change the exit code: the code alone still tells the
// Job controller what to do, and the caller logs the write error.
func Finish(path string, res worker.Result, err error) (int, error) {
	code, reason := Of(err)
	if err != nil {
		res.Reason = reason
		res.Error = err.Error()
	}
	return code, worker.WriteResult(path, res)
}
