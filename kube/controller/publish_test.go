package controller

import (
	"fmt"
	"strings"
	"testing"

	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func testMCS() *networkingv1beta1.MultiClusterService {
	tp := intstr.FromString("https")
	return &networkingv1beta1.MultiClusterService{
		ObjectMeta: metav1.ObjectMeta{Namespace: "meridian", Name: "svc", UID: "uid-1"},
		Spec: networkingv1beta1.MultiClusterServiceSpec{Template: networkingv1beta1.ServiceTemplate{Spec: networkingv1beta1.ServiceTemplateSpec{
			Selector: map[string]string{"app": "x"},
			Ports:    []networkingv1beta1.ServicePort{{Name: "ssl", Port: 443, TargetPort: &tp}, {Name: "http", Port: 80}},
		}}},
	}
}

func memberSlice(name string, port int32, addrs ...string) discoveryv1.EndpointSlice {
	s := discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: name},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{
			{Name: ptr.To("ssl"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To(port)},
			{Name: ptr.To("http"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](80)},
			{Name: ptr.To("not-in-template"), Protocol: ptr.To(corev1.ProtocolTCP), Port: ptr.To[int32](9)},
		},
	}
	for _, a := range addrs {
		ready := !strings.HasSuffix(a, ".9")
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{a},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(ready), Serving: ptr.To(ready), Terminating: ptr.To(false)},
			NodeName:   ptr.To("node-1"),
			TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: "p"},
		})
	}
	return s
}

// TestPublishPodsFollowsTheContract: names, labels, owner, the template's
// ports with the pods' numbers, conditions copied, member-only fields
// (node, pod reference) left out, an address in two member slices
// published once (ready if either says so).
func TestPublishPodsFollowsTheContract(t *testing.T) {
	mcs := testMCS()
	a := memberSlice("a", 8443, "10.244.1.2", "10.244.1.9")
	b := memberSlice("b", 8443, "10.244.1.3", "10.244.1.9")
	b.Endpoints[1].Conditions.Ready = ptr.To(true) // the same pod, ready in b
	pub := publishPods(mcs, "us-1", []discoveryv1.EndpointSlice{a, b}, 100)
	if len(pub.slices) != 1 || pub.dropped != 0 {
		t.Fatalf("%d slices, %d dropped; want 1, 0", len(pub.slices), pub.dropped)
	}
	s := pub.slices[0]
	if s.Name != "svc-us-1" || s.Namespace != "meridian" ||
		s.Labels[meridianv1alpha1.LabelServiceName] != "svc" || s.Labels[meridianv1alpha1.LabelCluster] != "us-1" ||
		s.Labels[meridianv1alpha1.LabelManagedBy] != meridianv1alpha1.ManagedByController {
		t.Errorf("slice %s/%s labels %v", s.Namespace, s.Name, s.Labels)
	}
	if len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != "uid-1" || s.OwnerReferences[0].Kind != "MultiClusterService" || !*s.OwnerReferences[0].Controller {
		t.Errorf("owner references %+v", s.OwnerReferences)
	}
	if got := fmt.Sprint(portsOf(s)); got != "[ssl:8443 http:80]" {
		t.Errorf("ports %s; want the template's, by name, with the pods' numbers: [ssl:8443 http:80]", got)
	}
	var got []string
	for _, e := range s.Endpoints {
		got = append(got, fmt.Sprintf("%s ready=%v", e.Addresses[0], *e.Conditions.Ready))
		if e.NodeName != nil || e.TargetRef != nil {
			t.Errorf("endpoint %s keeps the member's node or pod reference", e.Addresses[0])
		}
	}
	if want := "[10.244.1.2 ready=true 10.244.1.3 ready=true 10.244.1.9 ready=true]"; fmt.Sprint(got) != want {
		t.Errorf("endpoints %v; want %s", got, want)
	}
	if r, n := counts(pub.slices); r != 3 || n != 3 {
		t.Errorf("counts %d/%d; want 3/3", r, n)
	}
}

// TestPublishPodsBoundsWhatAMemberCanMakeUsPublish: a member with more
// endpoints than the limit gets the limit published, in slices of at
// most 100, and the rest counted as dropped.
func TestPublishPodsBoundsWhatAMemberCanMakeUsPublish(t *testing.T) {
	var member []discoveryv1.EndpointSlice
	for i := range 50 {
		var addrs []string
		for j := range 1000 {
			addrs = append(addrs, fmt.Sprintf("10.%d.%d.%d", i, j/250, j%250))
		}
		member = append(member, memberSlice(fmt.Sprint(i), 8443, addrs...))
	}
	pub := publishPods(testMCS(), "us-1", member, 1500)
	_, total := counts(pub.slices)
	if total != 1500 || pub.dropped != 50*1000-1500 || len(pub.slices) != 15 {
		t.Errorf("published %d in %d slices, dropped %d; want 1500 in 15, dropped %d", total, len(pub.slices), pub.dropped, 50*1000-1500)
	}
	if pub.slices[14].Name != "svc-us-1-14" {
		t.Errorf("15th slice named %q; want svc-us-1-14", pub.slices[14].Name)
	}
}

// TestPublishPodsSplitsByPorts: pods whose named target port resolves
// to different numbers go to different slices, as a slice has one port
// list.
func TestPublishPodsSplitsByPorts(t *testing.T) {
	pub := publishPods(testMCS(), "us-1", []discoveryv1.EndpointSlice{memberSlice("a", 8443, "10.0.0.1"), memberSlice("b", 9443, "10.0.0.2")}, 100)
	if len(pub.slices) != 2 || fmt.Sprint(portsOf(pub.slices[0])) == fmt.Sprint(portsOf(pub.slices[1])) {
		t.Fatalf("%d slices; want 2 with different ports", len(pub.slices))
	}
}

func TestPublishLoadBalancer(t *testing.T) {
	mcs := testMCS()
	svc := &corev1.Service{}
	if pub := publishLoadBalancer(mcs, "us-1", svc); len(pub.slices) != 0 {
		t.Errorf("published %d slices for a Service without an address; want none", len(pub.slices))
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.7"}}
	pub := publishLoadBalancer(mcs, "us-1", svc)
	if len(pub.slices) != 1 || len(pub.slices[0].Endpoints) != 1 || pub.slices[0].Endpoints[0].Addresses[0] != "203.0.113.7" ||
		pub.slices[0].AddressType != discoveryv1.AddressTypeIPv4 || fmt.Sprint(portsOf(pub.slices[0])) != "[ssl:443 http:80]" {
		t.Errorf("published %+v", pub.slices)
	}
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{Hostname: "lb.example.com"}}
	if pub := publishLoadBalancer(mcs, "us-1", svc); pub.slices[0].AddressType != discoveryv1.AddressTypeFQDN {
		t.Errorf("a hostname published as %s; want FQDN", pub.slices[0].AddressType)
	}
}

// TestSliceDiffersOnlyOnRealDifferences: a published slice read back is
// no difference; staleness, endpoints and ports are; others' labels and
// annotations are not.
func TestSliceDiffersOnlyOnRealDifferences(t *testing.T) {
	want := publishPods(testMCS(), "us-1", []discoveryv1.EndpointSlice{memberSlice("a", 8443, "10.0.0.1")}, 100).slices[0]
	have := want.DeepCopy()
	have.ResourceVersion, have.UID = "7", "x"
	have.Labels["someone.else/label"] = "x"
	have.Annotations = map[string]string{"someone.else/annotation": "y"}
	if sliceDiffers(have, want) {
		t.Error("a slice as published, with others' labels and annotations, differs")
	}
	stale := markStale(have, metav1.Now())
	if !sliceDiffers(stale, want) || !sliceDiffers(have, stale) || !isStale(stale) {
		t.Error("staleness is no difference")
	}
	if again := markStale(stale, metav1.NewTime(metav1.Now().Add(3600e9))); again.Annotations[meridianv1alpha1.AnnotationStaleSince] != stale.Annotations[meridianv1alpha1.AnnotationStaleSince] {
		t.Error("marking a stale slice stale again moved its stale-since")
	}
	upd := updatedSlice(stale, want)
	if sliceDiffers(upd, want) || upd.Annotations["someone.else/annotation"] != "y" || isStale(upd) {
		t.Errorf("updatedSlice gave %+v", upd.ObjectMeta)
	}
	other := have.DeepCopy()
	other.Endpoints[0].Conditions.Ready = ptr.To(false)
	if !sliceDiffers(other, want) {
		t.Error("a changed ready condition is no difference")
	}
}

func portsOf(s *discoveryv1.EndpointSlice) []string {
	var out []string
	for _, p := range s.Ports {
		out = append(out, fmt.Sprintf("%s:%d", *p.Name, *p.Port))
	}
	return out
}
