// Package kubernetes_test renders every kustomization under
// deploy/kubernetes and checks what it renders: typed objects with no
// unknown field, hardened workloads, the seed's pod, a drain that adds up,
// RBAC whose every verb says why. (apply_test.go then applies them to a
// real apiserver.)
//
// Rendering is in process, with sigs.k8s.io/kustomize/api at the version
// kubectl 1.37 embeds (`kubectl kustomize` renders the same), so that
// these checks need no binary.
package kubernetes_test

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	kubeapi "github.com/meridian-gw/meridian/kube/api"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
)

// kustomizations lists every directory under deploy/kubernetes with a
// kustomization.yaml.
func kustomizations(t *testing.T) []string {
	t.Helper()
	var dirs []string
	err := filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Name() == "kustomization.yaml" {
			dirs = append(dirs, filepath.Dir(p))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(dirs)
	return dirs
}

// rendered is one kustomization's output: the YAML stream and each
// object decoded strictly into its Go type.
type rendered struct {
	yaml    []byte
	objects []runtime.Object
}

func render(t *testing.T, dir string) rendered {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	s, err := kubeapi.NewScheme()
	if err != nil {
		t.Fatal(err)
	}
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	dec := serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer()
	r := rendered{yaml: out}
	for _, res := range m.Resources() {
		b, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, _, err := dec.Decode(b, nil, nil)
		if err != nil {
			t.Errorf("%s: %s %s: %v", dir, res.GetKind(), res.GetName(), err)
			continue
		}
		r.objects = append(r.objects, obj)
	}
	return r
}

func TestEveryKustomizationRenders(t *testing.T) {
	dirs := kustomizations(t)
	want := []string{"base", "crds", "overlays/config", "overlays/member-europe-west1", "overlays/member-us-central1"}
	if !slices.Equal(dirs, want) {
		t.Fatalf("kustomizations %v; want %v (update this test and apply_test.go with a new one)", dirs, want)
	}
	for _, dir := range dirs {
		r := render(t, dir)
		if len(r.objects) == 0 {
			t.Errorf("%s renders nothing", dir)
		}
	}
}

// deployments returns the rendered Deployments of a kustomization.
func deployments(r rendered) []*appsv1.Deployment {
	var out []*appsv1.Deployment
	for _, o := range r.objects {
		if d, ok := o.(*appsv1.Deployment); ok {
			out = append(out, d)
		}
	}
	return out
}

// TestWorkloadsAreHardened: every container has requests and a memory
// limit and runs non-root, read-only, with no capabilities and no
// privilege escalation; every Pod has RuntimeDefault seccomp, a grace
// period, a PodDisruptionBudget and a real image.
func TestWorkloadsAreHardened(t *testing.T) {
	for _, dir := range kustomizations(t) {
		r := render(t, dir)
		var pdbs []*policyv1.PodDisruptionBudget
		for _, o := range r.objects {
			if p, ok := o.(*policyv1.PodDisruptionBudget); ok {
				pdbs = append(pdbs, p)
			}
		}
		for _, d := range deployments(r) {
			where := dir + ": Deployment " + d.Name
			ps := d.Spec.Template.Spec
			if sc := ps.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0 ||
				sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
				t.Errorf("%s: pod securityContext %+v; want runAsNonRoot, a non-zero runAsUser, seccomp RuntimeDefault", where, sc)
			}
			if ps.TerminationGracePeriodSeconds == nil {
				t.Errorf("%s: no terminationGracePeriodSeconds", where)
			}
			if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
				t.Errorf("%s: replicas %v; want at least 2", where, d.Spec.Replicas)
			}
			covered := false
			for _, p := range pdbs {
				sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
				if err == nil && p.Namespace == d.Namespace && sel.Matches(labels.Set(d.Spec.Template.Labels)) {
					covered = true
				}
			}
			if !covered {
				t.Errorf("%s: no PodDisruptionBudget selects its pods", where)
			}
			for _, c := range ps.Containers {
				cw := where + " container " + c.Name
				for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
					if _, ok := c.Resources.Requests[res]; !ok {
						t.Errorf("%s: no %s request", cw, res)
					}
				}
				if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
					t.Errorf("%s: no memory limit", cw)
				}
				sc := c.SecurityContext
				if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
					sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 || sc.Privileged != nil && *sc.Privileged {
					t.Errorf("%s: securityContext %+v; want no privilege escalation, a read-only root, capabilities: drop ALL", cw, sc)
				}
				if c.LivenessProbe == nil {
					t.Errorf("%s: no liveness probe", cw)
				}
				if strings.HasPrefix(dir, "overlays/") && c.Image == "meridian" {
					t.Errorf("%s: image %q: the overlay's images: entry did not apply", cw, c.Image)
				}
				if c.Image == "" {
					t.Errorf("%s: no image", cw)
				}
			}
		}
	}
}

// schedulerPod is the member overlays' scheduler Deployment.
func schedulerPod(t *testing.T, dir string) *appsv1.Deployment {
	t.Helper()
	for _, d := range deployments(render(t, dir)) {
		if d.Name == "session-scheduler" {
			return d
		}
	}
	t.Fatalf("%s: no session-scheduler Deployment", dir)
	return nil
}

func container(t *testing.T, ps corev1.PodSpec, name string) *corev1.Container {
	t.Helper()
	for i := range ps.Containers {
		if ps.Containers[i].Name == name {
			return &ps.Containers[i]
		}
	}
	t.Fatalf("no container %s", name)
	return nil
}

// TestSchedulerPodIsTheSeeds: the seed's pod spec is in the scheduler
// Deployment unchanged — esp's arguments in order, its ports, probes and
// TLS mount, the scheduler's port, the nginx-ssl volume.
func TestSchedulerPodIsTheSeeds(t *testing.T) {
	b, err := os.ReadFile("testdata/seed-pod.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"base", "overlays/member-us-central1", "overlays/member-europe-west1"} {
		ours := schedulerPod(t, dir).Spec.Template.Spec
		for i, doc := range bytes.Split(b, []byte("\n---\n"))[1:] {
			var seed corev1.Pod
			if err := decodeStrict(doc, &seed); err != nil {
				t.Fatalf("seed pod %d: %v", i+1, err)
			}
			for _, sc := range seed.Spec.Containers {
				c := container(t, ours, sc.Name)
				if sc.Args != nil && (len(c.Args) == 0 || c.Args[0] != "gateway" || !subsequence(sc.Args, c.Args[1:])) {
					t.Errorf("%s: %s args %q; want gateway, then the seed's %q in order", dir, c.Name, c.Args, sc.Args)
				}
				for _, sp := range sc.Ports {
					if !slices.ContainsFunc(c.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == sp.ContainerPort }) {
						t.Errorf("%s: %s lacks the seed's port %d", dir, c.Name, sp.ContainerPort)
					}
				}
				for _, p := range []struct{ seed, ours *corev1.Probe }{{sc.LivenessProbe, c.LivenessProbe}, {sc.ReadinessProbe, c.ReadinessProbe}} {
					if p.seed != nil && (p.ours == nil || !reflect.DeepEqual(p.ours.HTTPGet, p.seed.HTTPGet)) {
						t.Errorf("%s: %s probe %+v; want the seed's %+v", dir, c.Name, p.ours, p.seed.HTTPGet)
					}
				}
				for _, m := range sc.VolumeMounts {
					if !slices.ContainsFunc(c.VolumeMounts, func(o corev1.VolumeMount) bool { return reflect.DeepEqual(o, m) }) {
						t.Errorf("%s: %s lacks the seed's mount %+v", dir, c.Name, m)
					}
				}
			}
			for _, v := range seed.Spec.Volumes {
				if !slices.ContainsFunc(ours.Volumes, func(o corev1.Volume) bool {
					return o.Name == v.Name && o.Secret != nil && o.Secret.SecretName == v.Secret.SecretName
				}) {
					t.Errorf("%s: no volume %s from Secret %s", dir, v.Name, v.Secret.SecretName)
				}
			}
		}
	}
}

// subsequence says whether all of sub are in s, in order.
func subsequence(sub, s []string) bool {
	for _, x := range s {
		if len(sub) > 0 && x == sub[0] {
			sub = sub[1:]
		}
	}
	return len(sub) == 0
}

// decodeStrict decodes a seed pod spec fragment as a Pod.
func decodeStrict(b []byte, into runtime.Object) error {
	s := runtime.NewScheme()
	if err := corev1.AddToScheme(s); err != nil {
		return err
	}
	_, _, err := serializer.NewCodecFactory(s, serializer.EnableStrict).UniversalDeserializer().Decode(
		append([]byte("apiVersion: v1\nkind: Pod\nmetadata: {name: seed}\n"), b...), nil, into)
	return err
}
