package planner

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// NewKubeClient returns a client for the cluster the planner runs in: in-cluster config in a pod,
// else KUBECONFIG or ~/.kube/config.
func NewKubeClient() (client.Client, error) {
	cfg, err := config.GetConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	cl, err := client.New(cfg, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cl, nil
}

// PlanConfigMap is the ConfigMap the controller reads the plan from: named <name>-plan, labelled
// like every child (the controller's cache only holds ConfigMaps labelled role=plan) and owned by
// the CsvIngestion, so it goes when the ingestion is deleted.
func PlanConfigMap(ing worker.Ingestion, plan *worker.Plan) (*corev1.ConfigMap, error) {
	if ing.Name == "" || ing.Namespace == "" || ing.UID == "" {
		return nil, worker.Permanent(worker.ReasonPermanentError,
			fmt.Errorf("the ingestion's name, namespace and uid are needed to own the plan ConfigMap (got %q, %q, %q)", ing.Name, ing.Namespace, ing.UID))
	}
	data, err := plan.Encode()
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name:      worker.PlanConfigMapName(ing.Name),
			Namespace: ing.Namespace,
			Labels: map[string]string{
				worker.LabelName:   ing.Name,
				worker.LabelUID:    ing.UID,
				worker.LabelTaskID: ing.TaskID,
				worker.LabelRole:   worker.RolePlan,
			},
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion:         v1alpha1.GroupVersion.String(),
				Kind:               "CsvIngestion",
				Name:               ing.Name,
				UID:                types.UID(ing.UID),
				Controller:         ptr.To(true),
				BlockOwnerDeletion: ptr.To(true),
			}},
		},
		Data: map[string]string{worker.PlanDataKey: data},
	}, nil
}

// WritePlanConfigMap creates the plan ConfigMap, or updates it when a previous attempt of the
// planner already created it for the same ingestion (same owner UID). A ConfigMap of that name
// owned by anything else is left alone and reported as a permanent error.
func WritePlanConfigMap(ctx context.Context, c client.Client, ing worker.Ingestion, plan *worker.Plan) error {
	want, err := PlanConfigMap(ing, plan)
	if err != nil {
		return err
	}
	err = c.Create(ctx, want)
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return classifyAPI(fmt.Sprintf("create ConfigMap %s/%s", want.Namespace, want.Name), err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var cur corev1.ConfigMap
		if err := c.Get(ctx, client.ObjectKeyFromObject(want), &cur); err != nil {
			return err
		}
		owner := metav1.GetControllerOf(&cur)
		if owner == nil || string(owner.UID) != ing.UID {
			return worker.Permanent(worker.ReasonPermanentError, fmt.Errorf(
				"ConfigMap %s/%s exists and is not owned by CsvIngestion %s (uid %s); delete or rename it",
				cur.Namespace, cur.Name, ing.Name, ing.UID))
		}
		if cur.Labels == nil {
			cur.Labels = map[string]string{}
		}
		for k, v := range want.Labels {
			cur.Labels[k] = v
		}
		cur.Data = want.Data
		cur.BinaryData = nil
		return c.Update(ctx, &cur)
	})
	if err != nil {
		if _, ok := worker.AsPermanent(err); ok {
			return err
		}
		return classifyAPI(fmt.Sprintf("update ConfigMap %s/%s", want.Namespace, want.Name), err)
	}
	return nil
}

// classifyAPI marks API errors that a retry of the planner cannot fix as permanent: missing RBAC,
// an invalid object, a namespace that is gone.
func classifyAPI(what string, err error) error {
	switch {
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return worker.Permanent(worker.ReasonUnauthorized, fmt.Errorf("%s: %w (may the worker's service account create and update ConfigMaps?)", what, err))
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsNotFound(err):
		return worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("%s: %w", what, err))
	}
	return fmt.Errorf("%s: %w", what, err)
}
