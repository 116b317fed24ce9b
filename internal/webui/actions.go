package webui

import (
	"fmt"
	"net/http"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
)

// Event reasons of the UI's actions (on the CsvIngestion, by the manager's recorder).
const (
	ReasonSuspendRequested = "SuspendRequested"
	ReasonResumeRequested  = "ResumeRequested"
	ReasonCancelRequested  = "CancelRequested"
)

// actionPlan is what an action does to an ingestion.
type actionPlan struct {
	patch  string // JSON merge patch of the spec
	reason string // event reason
	verb   string // for the event and the reply: "suspended"
	code   int    // non-zero: refused with this status and message
	msg    string
}

// planAction decides what action does to obj: a patch of spec.suspend or spec.cancel, or a
// refusal that says why.
func planAction(action string, obj *v1alpha1.CsvIngestion) actionPlan {
	refuse := func(code int, format string, args ...any) actionPlan {
		return actionPlan{code: code, msg: fmt.Sprintf(format, args...)}
	}
	switch action {
	case "suspend", "resume", "cancel":
	default:
		return refuse(http.StatusNotFound, "unknown action %q: suspend, resume or cancel", action)
	}
	if obj.Status.Phase.Terminal() {
		return refuse(http.StatusConflict, "%s/%s has already ended (%s); nothing to %s", obj.Namespace, obj.Name, obj.Status.Phase, action)
	}
	if !obj.DeletionTimestamp.IsZero() {
		return refuse(http.StatusConflict, "%s/%s is being deleted", obj.Namespace, obj.Name)
	}
	if obj.Spec.Cancel {
		return refuse(http.StatusConflict, "%s/%s is already being cancelled", obj.Namespace, obj.Name)
	}
	switch action {
	case "suspend":
		if obj.Spec.Suspend {
			return refuse(http.StatusConflict, "%s/%s is already suspended", obj.Namespace, obj.Name)
		}
		return actionPlan{patch: `{"spec":{"suspend":true}}`, reason: ReasonSuspendRequested, verb: "suspended"}
	case "resume":
		if !obj.Spec.Suspend {
			return refuse(http.StatusConflict, "%s/%s is not suspended", obj.Namespace, obj.Name)
		}
		return actionPlan{patch: `{"spec":{"suspend":false}}`, reason: ReasonResumeRequested, verb: "resumed"}
	default:
		return actionPlan{patch: `{"spec":{"cancel":true}}`, reason: ReasonCancelRequested, verb: "cancelled"}
	}
}

// handleAction suspends, resumes or cancels an ingestion: a merge patch of its spec with the
// manager's identity, allowed only to a read-write key, and an event naming the key (never its
// value) on the ingestion.
func (s *Server) handleAction(w http.ResponseWriter, r *http.Request) {
	if why := sameOrigin(r, s.cfg.PublicOrigin); why != "" {
		fail(w, http.StatusForbidden, why)
		return
	}
	k, err := s.session(r.Context(), r)
	if err != nil {
		sessionError(w, err)
		return
	}
	key := keyOf(r)
	action := r.PathValue("action")
	if !s.scopeOf(k).Allows(key.Namespace) {
		notFound(w, key)
		return
	}
	if !k.Write {
		s.log.Info("action refused: read-only key", "key", k.Name, "action", action, "ingestion", key.String())
		fail(w, http.StatusForbidden, fmt.Sprintf("the API key %q is read-only: it may view ingestions but not suspend, resume or cancel them; sign in with a key marked for writes", k.Name))
		return
	}
	ctx, cancel := readCtx(r)
	defer cancel()
	var obj v1alpha1.CsvIngestion
	if err := s.deps.Reader.Get(ctx, key, &obj); err != nil {
		if apierrors.IsNotFound(err) {
			notFound(w, key)
			return
		}
		fail(w, http.StatusServiceUnavailable, "cannot read the ingestion: "+err.Error())
		return
	}
	p := planAction(action, &obj)
	if p.code != 0 {
		fail(w, p.code, p.msg)
		return
	}
	if err := s.deps.Writer.Patch(ctx, &obj, client.RawPatch(types.MergePatchType, []byte(p.patch))); err != nil {
		s.log.Error(err, "action failed", "key", k.Name, "action", action, "ingestion", key.String())
		code := http.StatusBadGateway
		switch {
		case apierrors.IsNotFound(err):
			code = http.StatusNotFound
		case apierrors.IsInvalid(err):
			code = http.StatusUnprocessableEntity
		case apierrors.IsConflict(err):
			code = http.StatusConflict
		}
		fail(w, code, fmt.Sprintf("the API server refused to %s %s: %v", action, key, err))
		return
	}
	s.deps.Recorder.Eventf(&obj, nil, corev1.EventTypeNormal, p.reason, "WebUI",
		"%s from the web UI with API key %q", p.verb, k.Name)
	s.log.Info("action", "key", k.Name, "action", action, "ingestion", key.String())
	writeJSON(w, http.StatusOK, map[string]string{"message": fmt.Sprintf("%s %s", key, p.verb)})
}
