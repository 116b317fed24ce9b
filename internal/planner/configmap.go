package planner

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/vectordb-io/vectordb-operator/api/v1alpha1"
	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// ConfigMaps is what the planner needs of the API: one ConfigMap created, or read back. Never
// updated: the plan is immutable once written (the controller pins it), and the worker's Role
// grants only create and get.
type ConfigMaps interface {
	Get(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error)
	Create(ctx context.Context, cm *corev1.ConfigMap) error
}

// NewKubeClient returns a ConfigMap client for the cluster the planner runs in: in-cluster config
// in a pod, else KUBECONFIG or ~/.kube/config.
func NewKubeClient() (ConfigMaps, error) {
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(
		clientcmd.NewDefaultClientConfigLoadingRules(), &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	return NewConfigMapClient(cfg)
}

// NewConfigMapClient returns a ConfigMap client for cfg. It is a REST client over a scheme with
// core/v1 only: the generated clientset registers every built-in API group at init, which costs
// the embedder (a process per chunk) megabytes of heap and of touched binary for one ConfigMap.
func NewConfigMapClient(cfg *rest.Config) (ConfigMaps, error) {
	sch := runtime.NewScheme()
	if err := corev1.AddToScheme(sch); err != nil {
		return nil, fmt.Errorf("kubernetes client scheme: %w", err)
	}
	c := rest.CopyConfig(cfg)
	c.APIPath = "/api"
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.NegotiatedSerializer = serializer.NewCodecFactory(sch).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = "vectordb-embedder"
	}
	rc, err := rest.RESTClientFor(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return &configMaps{rc: rc}, nil
}

type configMaps struct{ rc *rest.RESTClient }

func (c *configMaps) Get(ctx context.Context, namespace, name string) (*corev1.ConfigMap, error) {
	var out corev1.ConfigMap
	err := c.rc.Get().Namespace(namespace).Resource("configmaps").Name(name).Do(ctx).Into(&out)
	return &out, err
}

func (c *configMaps) Create(ctx context.Context, cm *corev1.ConfigMap) error {
	return c.rc.Post().Namespace(cm.Namespace).Resource("configmaps").Body(cm).Do(ctx).Into(cm)
}

// PlanConfigMap is the ConfigMap the controller reads the plan from: named <name>-plan, labelled
// like every child (the controller's cache only holds ConfigMaps labelled role=plan; values that
// are not valid labels are hashed, the full ones annotated), owned by the CsvIngestion so it goes
// when the ingestion is deleted, and immutable.
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
				worker.LabelName:   worker.LabelValue(ing.Name),
				worker.LabelUID:    ing.UID,
				worker.LabelTaskID: worker.LabelValue(ing.TaskID),
				worker.LabelRole:   worker.RolePlan,
			},
			Annotations: map[string]string{
				worker.AnnotationName:   ing.Name,
				worker.AnnotationTaskID: ing.TaskID,
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
		Data:      map[string]string{worker.PlanDataKey: data},
		Immutable: ptr.To(true),
	}, nil
}

// WritePlanConfigMap creates the plan ConfigMap. When a previous attempt of the planner already
// created it for the same ingestion (same owner UID) with the same plan, that is success; with
// another plan (the object changed between attempts) it is a permanent PlanChanged error: the
// first plan stands and is never rewritten. A ConfigMap of that name owned by anything else is
// left alone and reported as a permanent error.
func WritePlanConfigMap(ctx context.Context, c ConfigMaps, ing worker.Ingestion, plan *worker.Plan) error {
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
	cur, err := c.Get(ctx, want.Namespace, want.Name)
	if err != nil {
		return classifyAPI(fmt.Sprintf("get ConfigMap %s/%s", want.Namespace, want.Name), err)
	}
	owner := metav1.GetControllerOf(cur)
	if owner == nil || string(owner.UID) != ing.UID {
		return worker.Permanent(worker.ReasonPermanentError, fmt.Errorf(
			"ConfigMap %s/%s exists and is not owned by CsvIngestion %s (uid %s); delete or rename it",
			cur.Namespace, cur.Name, ing.Name, ing.UID))
	}
	if cur.Data[worker.PlanDataKey] != want.Data[worker.PlanDataKey] {
		return worker.Permanent(ReasonPlanChanged, fmt.Errorf(
			"ConfigMap %s/%s already holds a different plan from an earlier attempt (the object changed meanwhile?); plans are never rewritten",
			cur.Namespace, cur.Name))
	}
	return nil
}

// ReasonPlanChanged is the reason of a plan that differs from the one already written.
const ReasonPlanChanged = "PlanChanged"

// classifyAPI marks API errors that a retry of the planner cannot fix as permanent: missing RBAC,
// an invalid object, a namespace that is gone.
func classifyAPI(what string, err error) error {
	switch {
	case apierrors.IsForbidden(err), apierrors.IsUnauthorized(err):
		return worker.Permanent(worker.ReasonUnauthorized, fmt.Errorf("%s: %w (may the worker's service account create and get ConfigMaps?)", what, err))
	case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsNotFound(err):
		return worker.Permanent(worker.ReasonPermanentError, fmt.Errorf("%s: %w", what, err))
	}
	return fmt.Errorf("%s: %w", what, err)
}
