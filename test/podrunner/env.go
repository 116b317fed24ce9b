package podrunner

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/vectordb-io/vectordb-operator/internal/worker"
)

// absImages checks that every mapped executable exists and makes its path absolute, because a
// process starts in its pod's directory.
func absImages(images map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(images))
	for image, path := range images {
		if image == "" || path == "" {
			return nil, fmt.Errorf("podrunner: image map entry %q=%q: image and path must both be set", image, path)
		}
		abs, err := filepath.Abs(path)
		if err != nil {
			return nil, fmt.Errorf("podrunner: executable for image %s: %w", image, err)
		}
		info, err := os.Stat(abs)
		if err != nil {
			return nil, fmt.Errorf("podrunner: executable for image %s: %w", image, err)
		}
		if info.IsDir() || info.Mode().Perm()&0o111 == 0 {
			return nil, fmt.Errorf("podrunner: executable for image %s: %s is not an executable file", image, abs)
		}
		out[image] = abs
	}
	return out, nil
}

// executable finds the local binary for an image: the exact reference first, then its repository
// without tag or digest.
func (r *Runner) executable(image string) (string, bool) {
	if path, ok := r.o.Images[image]; ok {
		return path, true
	}
	path, ok := r.o.Images[imageRepository(image)]
	return path, ok
}

// imageRepository strips "@digest" and ":tag" (a colon after the last slash; one before it is a
// registry port).
func imageRepository(image string) string {
	if i := strings.Index(image, "@"); i >= 0 {
		image = image[:i]
	}
	if i := strings.LastIndex(image, ":"); i > strings.LastIndex(image, "/") {
		image = image[:i]
	}
	return image
}

// argv is the process's arguments: the image's entrypoint is the mapped binary, so a command
// overrides only the arguments after its first word, and args follow.
func argv(c *corev1.Container) []string {
	var out []string
	if len(c.Command) > 1 {
		out = append(out, c.Command[1:]...)
	}
	return append(out, c.Args...)
}

// configError is an env reference the kubelet cannot resolve yet; the pod stays Pending with
// CreateContainerConfigError and is retried.
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

// envResolver resolves a container's environment like the kubelet, reading each Secret and
// ConfigMap at most once.
type envResolver struct {
	r          *Runner
	pod        *corev1.Pod
	secrets    map[string]*corev1.Secret
	configMaps map[string]*corev1.ConfigMap
}

// resolveEnv returns the container's env as KEY=VALUE, envFrom first, then env, in order (a later
// entry wins, as in the kubelet). Values are never logged.
func (r *Runner) resolveEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container) ([]string, error) {
	res := &envResolver{r: r, pod: pod, secrets: map[string]*corev1.Secret{}, configMaps: map[string]*corev1.ConfigMap{}}
	var env []string
	for _, from := range c.EnvFrom {
		vars, err := res.envFrom(ctx, from)
		if err != nil {
			return nil, err
		}
		env = append(env, vars...)
	}
	for _, v := range c.Env {
		if v.ValueFrom == nil {
			env = append(env, v.Name+"="+v.Value)
			continue
		}
		val, ok, err := res.valueFrom(ctx, v.Name, v.ValueFrom)
		if err != nil {
			return nil, err
		}
		if ok {
			env = append(env, v.Name+"="+val)
		}
	}
	return env, nil
}

func (e *envResolver) envFrom(ctx context.Context, from corev1.EnvFromSource) ([]string, error) {
	var data map[string]string
	switch {
	case from.SecretRef != nil:
		s, err := e.secret(ctx, from.SecretRef.Name, optional(from.SecretRef.Optional))
		if err != nil || s == nil {
			return nil, err
		}
		data = make(map[string]string, len(s.Data))
		for k, v := range s.Data {
			data[k] = string(v)
		}
	case from.ConfigMapRef != nil:
		cm, err := e.configMap(ctx, from.ConfigMapRef.Name, optional(from.ConfigMapRef.Optional))
		if err != nil || cm == nil {
			return nil, err
		}
		data = cm.Data
	default:
		return nil, &configError{msg: "envFrom entry names neither a Secret nor a ConfigMap"}
	}
	var out []string
	for k, v := range data {
		// The kubelet skips keys that are not valid variable names.
		if len(validation.IsEnvVarName(from.Prefix+k)) > 0 {
			continue
		}
		out = append(out, from.Prefix+k+"="+v)
	}
	return out, nil
}

// valueFrom resolves one env var's source; ok is false for an optional reference that is absent.
func (e *envResolver) valueFrom(ctx context.Context, name string, src *corev1.EnvVarSource) (string, bool, error) {
	switch {
	case src.SecretKeyRef != nil:
		ref := src.SecretKeyRef
		s, err := e.secret(ctx, ref.Name, optional(ref.Optional))
		if err != nil || s == nil {
			return "", false, err
		}
		v, ok := s.Data[ref.Key]
		if !ok {
			if optional(ref.Optional) {
				return "", false, nil
			}
			return "", false, &configError{msg: fmt.Sprintf("couldn't find key %s in Secret %s/%s", ref.Key, e.pod.Namespace, ref.Name)}
		}
		return string(v), true, nil
	case src.ConfigMapKeyRef != nil:
		ref := src.ConfigMapKeyRef
		cm, err := e.configMap(ctx, ref.Name, optional(ref.Optional))
		if err != nil || cm == nil {
			return "", false, err
		}
		if v, ok := cm.Data[ref.Key]; ok {
			return v, true, nil
		}
		if v, ok := cm.BinaryData[ref.Key]; ok {
			return string(v), true, nil
		}
		if optional(ref.Optional) {
			return "", false, nil
		}
		return "", false, &configError{msg: fmt.Sprintf("couldn't find key %s in ConfigMap %s/%s", ref.Key, e.pod.Namespace, ref.Name)}
	case src.FieldRef != nil:
		v, err := e.field(src.FieldRef.FieldPath)
		return v, err == nil, err
	case src.ResourceFieldRef != nil:
		v, err := e.resourceField(src.ResourceFieldRef)
		return v, err == nil, err
	default:
		return "", false, &configError{msg: fmt.Sprintf("env %s: only secretKeyRef, configMapKeyRef, fieldRef and resourceFieldRef are supported by the pod runner", name)}
	}
}

// resourceField resolves a resourceFieldRef as the kubelet does: the named container's limit or
// request, a missing limit falling back to the node's allocatable, divided by the divisor
// (default 1) and rounded up.
func (e *envResolver) resourceField(ref *corev1.ResourceFieldSelector) (string, error) {
	var c *corev1.Container
	for i := range e.pod.Spec.Containers {
		if e.pod.Spec.Containers[i].Name == ref.ContainerName || (ref.ContainerName == "" && len(e.pod.Spec.Containers) == 1) {
			c = &e.pod.Spec.Containers[i]
		}
	}
	if c == nil {
		return "", &configError{msg: fmt.Sprintf("resourceFieldRef: no container %q", ref.ContainerName)}
	}
	kind, res, ok := strings.Cut(ref.Resource, ".")
	if !ok || (kind != "limits" && kind != "requests") || (res != "cpu" && res != "memory") {
		return "", &configError{msg: fmt.Sprintf("resourceFieldRef: unsupported resource %q", ref.Resource)}
	}
	name := corev1.ResourceName(res)
	q, set := c.Resources.Limits[name]
	if kind == "requests" {
		q, set = c.Resources.Requests[name]
	}
	if !set {
		q = e.r.nodeStatus().Allocatable[name]
		if kind == "requests" {
			q = resource.Quantity{}
		}
	}
	div := ref.Divisor
	if div.IsZero() {
		div = resource.MustParse("1")
	}
	if res == "cpu" {
		// Millicores, so fractional cores and divisors round up the way the kubelet does.
		return strconv.FormatInt((q.MilliValue()+div.MilliValue()-1)/div.MilliValue(), 10), nil
	}
	return strconv.FormatInt((q.Value()+div.Value()-1)/div.Value(), 10), nil
}

func (e *envResolver) field(path string) (string, error) {
	p := e.pod
	switch path {
	case "metadata.name":
		return p.Name, nil
	case "metadata.namespace":
		return p.Namespace, nil
	case "metadata.uid":
		return string(p.UID), nil
	case "spec.nodeName":
		return e.r.o.NodeName, nil
	case "spec.serviceAccountName":
		return p.Spec.ServiceAccountName, nil
	case "status.podIP", "status.hostIP":
		return loopback, nil
	}
	for prefix, m := range map[string]map[string]string{"metadata.labels": p.Labels, "metadata.annotations": p.Annotations} {
		if key, ok := strings.CutPrefix(path, prefix+"['"); ok && strings.HasSuffix(key, "']") {
			return m[strings.TrimSuffix(key, "']")], nil
		}
	}
	return "", &configError{msg: fmt.Sprintf("fieldRef %s is not supported by the pod runner", path)}
}

func (e *envResolver) secret(ctx context.Context, name string, opt bool) (*corev1.Secret, error) {
	if s, ok := e.secrets[name]; ok {
		return s, nil
	}
	s, err := e.r.cs.CoreV1().Secrets(e.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && opt:
		s = nil
	case apierrors.IsNotFound(err):
		return nil, &configError{msg: fmt.Sprintf("secret %q not found", name)}
	case err != nil:
		return nil, fmt.Errorf("reading Secret %s/%s: %w", e.pod.Namespace, name, err)
	}
	e.secrets[name] = s
	return s, nil
}

func (e *envResolver) configMap(ctx context.Context, name string, opt bool) (*corev1.ConfigMap, error) {
	if cm, ok := e.configMaps[name]; ok {
		return cm, nil
	}
	cm, err := e.r.cs.CoreV1().ConfigMaps(e.pod.Namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && opt:
		cm = nil
	case apierrors.IsNotFound(err):
		return nil, &configError{msg: fmt.Sprintf("configmap %q not found", name)}
	case err != nil:
		return nil, fmt.Errorf("reading ConfigMap %s/%s: %w", e.pod.Namespace, name, err)
	}
	e.configMaps[name] = cm
	return cm, nil
}

func optional(b *bool) bool { return b != nil && *b }

// processEnv is the full environment of a pod's process: a minimal base (PATH from the runner;
// HOME and TMPDIR inside the pod's directory, so the runner's own dotfiles and credentials do not
// leak in), the pod's env, ExtraEnv, then what the runner itself must set. exec keeps the last
// value of a repeated name.
func (r *Runner) processEnv(podEnv []string, st *podState) []string {
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + st.dir,
		"TMPDIR=" + filepath.Join(st.dir, "tmp"),
	}
	env = append(env, podEnv...)
	env = append(env, r.o.ExtraEnv...)
	if r.o.Kubeconfig != "" {
		env = append(env, "KUBECONFIG="+r.o.Kubeconfig)
	}
	return append(env, worker.EnvTerminationLog+"="+st.termPath)
}
