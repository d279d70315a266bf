package controller

import (
	"errors"
	"strings"
	"testing"

	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// TestServiceDiffersOnlyOnRealDifferences: what the apiserver adds
// (ClusterIP, node ports, other labels) is no difference; the template's
// fields and our labels are.
func TestServiceDiffersOnlyOnRealDifferences(t *testing.T) {
	mcs := testMCS()
	want := derivedService(mcs, "cfg")
	if want.Spec.Ports[1].TargetPort != intstr.FromInt32(80) || want.Spec.Ports[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("derived ports %+v: want the apiserver's defaults (TCP, targetPort = port)", want.Spec.Ports)
	}
	have := want.DeepCopy()
	have.Spec.ClusterIP, have.Spec.ClusterIPs = "10.96.0.9", []string{"10.96.0.9"}
	have.Spec.SessionAffinity = corev1.ServiceAffinityNone
	have.Labels["app.kubernetes.io/managed-by"] = "someone"
	if serviceDiffers(have, want) {
		t.Error("a derived Service as the apiserver keeps it differs")
	}
	for name, change := range map[string]func(*corev1.Service){
		"selector":  func(s *corev1.Service) { s.Spec.Selector = map[string]string{"app": "y"} },
		"port":      func(s *corev1.Service) { s.Spec.Ports[0].Port = 444 },
		"uid":       func(s *corev1.Service) { s.Annotations[meridianv1alpha1.AnnotationMCSUID] = "old" },
		"label":     func(s *corev1.Service) { delete(s.Labels, meridianv1alpha1.LabelConfigCluster) },
		"type":      func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeNodePort },
		"new ports": func(s *corev1.Service) { s.Spec.Ports = s.Spec.Ports[:1] },
	} {
		h := have.DeepCopy()
		change(h)
		if !serviceDiffers(h, want) {
			t.Errorf("%s changed: no difference", name)
		}
		if upd := updatedService(h, want); serviceDiffers(upd, want) || upd.Spec.ClusterIP != "10.96.0.9" || upd.Labels["app.kubernetes.io/managed-by"] != "someone" {
			t.Errorf("%s changed: updatedService gave %+v", name, upd)
		}
	}
}

// TestLoadBalancerModeKeepsNodePorts: switching to LoadBalancer and back.
func TestLoadBalancerModeKeepsNodePorts(t *testing.T) {
	mcs := testMCS()
	mcs.Annotations = map[string]string{meridianv1alpha1.AnnotationEndpoints: meridianv1alpha1.EndpointsLoadBalancer}
	lb := derivedService(mcs, "cfg")
	if lb.Spec.Type != corev1.ServiceTypeLoadBalancer {
		t.Fatalf("type %s; want LoadBalancer", lb.Spec.Type)
	}
	have := lb.DeepCopy()
	have.Spec.Ports[0].NodePort = 31000
	if upd := updatedService(have, lb); upd.Spec.Ports[0].NodePort != 31000 {
		t.Errorf("an update dropped the allocated node port")
	}
	back := updatedService(have, derivedService(testMCS(), "cfg"))
	if back.Spec.Type != corev1.ServiceTypeClusterIP || back.Spec.Ports[0].NodePort != 0 {
		t.Errorf("back to ClusterIP: %+v", back.Spec)
	}
}

func TestSelectClusters(t *testing.T) {
	ref := &meridianv1alpha1.SecretKeyRef{Name: "s"}
	all := []meridianv1alpha1.Cluster{
		{ObjectMeta: metav1.ObjectMeta{Name: "us-1"}, Spec: meridianv1alpha1.ClusterSpec{Region: "us-central1", KubeconfigSecretRef: ref}},
		{ObjectMeta: metav1.ObjectMeta{Name: "eu-1"}, Spec: meridianv1alpha1.ClusterSpec{Region: "europe-west1", KubeconfigSecretRef: ref}},
		{ObjectMeta: metav1.ObjectMeta{Name: "static"}, Spec: meridianv1alpha1.ClusterSpec{Region: "asia-east1", Endpoints: []meridianv1alpha1.ClusterEndpoint{{Address: "a:1"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "gone", DeletionTimestamp: ptr.To(metav1.Now())}, Spec: meridianv1alpha1.ClusterSpec{Region: "us-central1", KubeconfigSecretRef: ref}},
	}
	names := func(cs []*meridianv1alpha1.Cluster) string {
		var out []string
		for _, c := range cs {
			out = append(out, c.Name)
		}
		return strings.Join(out, ",")
	}
	mcs := testMCS()
	if got, problems := selectClusters(mcs, all); names(got) != "eu-1,us-1" || problems != nil {
		t.Errorf("no links: %s %v; want every live Cluster: eu-1,us-1", names(got), problems)
	}
	mcs.Spec.Clusters = []networkingv1beta1.ClusterSelector{{Link: "us-central1-a/us-1"}, {Link: "asia-east1/static"}, {Link: "us-east1/us-1"}}
	got, problems := selectClusters(mcs, all)
	if names(got) != "us-1" || len(problems) != 1 || !strings.Contains(problems[0], `"us-east1/us-1"`) {
		t.Errorf("links: %s %v; want us-1 (by a zone of its region), a problem for us-east1/us-1", names(got), problems)
	}
}

// TestMemberKubeconfigMustBeSelfContained: a Secret cannot make the
// controller run programs or read its own files.
func TestMemberKubeconfigMustBeSelfContained(t *testing.T) {
	const head = "apiVersion: v1\nkind: Config\ncurrent-context: m\ncontexts: [{name: m, context: {cluster: m, user: m}}]\n"
	const cluster = "clusters: [{name: m, cluster: {server: 'https://10.0.0.1:6443', certificate-authority-data: ''}}]\n"
	for _, tc := range []struct{ name, kubeconfig, want string }{
		{"not yaml", "{{{", "unusable kubeconfig"},
		{"no context", "apiVersion: v1\nkind: Config\n", "current-context"},
		{"exec", head + cluster + "users: [{name: m, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/sh}}}]\n", "exec plugins are refused"},
		{"auth provider", head + cluster + "users: [{name: m, user: {auth-provider: {name: gcp}}}]\n", "auth-provider"},
		{"token file", head + cluster + "users: [{name: m, user: {tokenFile: /var/run/secrets/kubernetes.io/serviceaccount/token}}]\n", "file paths"},
		{"ca file", head + "clusters: [{name: m, cluster: {server: 'https://10.0.0.1:6443', certificate-authority: /etc/ca.crt}}]\nusers: [{name: m, user: {token: x}}]\n", "certificate-authority"},
	} {
		_, err := memberConfig([]byte(tc.kubeconfig), Options{}.withDefaults())
		if !errors.Is(err, errKubeconfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want errKubeconfig saying %q", tc.name, err, tc.want)
		}
	}
	cfg, err := memberConfig([]byte(head+cluster+"users: [{name: m, user: {token: x}}]\n"), Options{}.withDefaults())
	if err != nil || cfg.Host != "https://10.0.0.1:6443" || cfg.BearerToken != "x" || cfg.QPS != 50 {
		t.Errorf("a self-contained kubeconfig: %+v, %v", cfg, err)
	}
}
