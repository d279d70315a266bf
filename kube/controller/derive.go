package controller

import (
	"maps"

	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// loadBalancerMode: the MCS publishes its derived Services' load-balancer
// addresses instead of their pods.
func loadBalancerMode(mcs *networkingv1beta1.MultiClusterService) bool {
	return mcs.Annotations[meridianv1alpha1.AnnotationEndpoints] == meridianv1alpha1.EndpointsLoadBalancer
}

// derivedService is the Service an MCS wants in every member it selects,
// with the apiserver's defaults for the fields it sets (protocol TCP,
// targetPort = port), so that comparing it with what the member has finds
// only real differences.
func derivedService(mcs *networkingv1beta1.MultiClusterService, configCluster string) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: mcs.Namespace,
			Name:      mcs.Name,
			Labels: map[string]string{
				meridianv1alpha1.LabelDerivedFrom:   mcs.Name,
				meridianv1alpha1.LabelConfigCluster: configCluster,
			},
			Annotations: map[string]string{meridianv1alpha1.AnnotationMCSUID: string(mcs.UID)},
		},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeClusterIP,
			Selector: maps.Clone(mcs.Spec.Template.Spec.Selector),
		},
	}
	if loadBalancerMode(mcs) {
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	}
	for _, p := range mcs.Spec.Template.Spec.Ports {
		sp := corev1.ServicePort{Name: p.Name, Protocol: corev1.Protocol(p.Protocol), Port: p.Port, TargetPort: intstr.FromInt32(p.Port)}
		if sp.Protocol == "" {
			sp.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort != nil && (p.TargetPort.Type == intstr.String || p.TargetPort.IntVal != 0) {
			sp.TargetPort = *p.TargetPort
		}
		svc.Spec.Ports = append(svc.Spec.Ports, sp)
	}
	return svc
}

// serviceDiffers: the member's Service lacks something of want — a label
// or annotation of ours, the type, the selector, a port. What the
// apiserver or others add (a ClusterIP, node ports, other labels) is no
// difference.
func serviceDiffers(have, want *corev1.Service) bool {
	if !hasAll(have.Labels, want.Labels) || !hasAll(have.Annotations, want.Annotations) ||
		have.Spec.Type != want.Spec.Type || !equality.Semantic.DeepEqual(nilIfEmpty(have.Spec.Selector), nilIfEmpty(want.Spec.Selector)) ||
		len(have.Spec.Ports) != len(want.Spec.Ports) {
		return true
	}
	for i, w := range want.Spec.Ports {
		h := have.Spec.Ports[i]
		if h.Name != w.Name || h.Protocol != w.Protocol || h.Port != w.Port || h.TargetPort != w.TargetPort {
			return true
		}
	}
	return false
}

// updatedService is have changed to want in the fields the controller
// owns, keeping what the apiserver allocated (ClusterIP, and the node
// port of a port that stays).
func updatedService(have, want *corev1.Service) *corev1.Service {
	out := have.DeepCopy()
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	maps.Copy(out.Labels, want.Labels)
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	maps.Copy(out.Annotations, want.Annotations)
	out.Spec.Selector = want.Spec.Selector
	nodePorts := map[string]int32{}
	for _, p := range have.Spec.Ports {
		nodePorts[p.Name] = p.NodePort
	}
	out.Spec.Ports = nil
	for _, p := range want.Spec.Ports {
		if want.Spec.Type == corev1.ServiceTypeLoadBalancer {
			p.NodePort = nodePorts[p.Name]
		}
		out.Spec.Ports = append(out.Spec.Ports, p)
	}
	if out.Spec.Type != want.Spec.Type && want.Spec.Type == corev1.ServiceTypeClusterIP {
		// Back from LoadBalancer: what only a LoadBalancer may have.
		out.Spec.AllocateLoadBalancerNodePorts = nil
		out.Spec.ExternalTrafficPolicy = ""
		out.Spec.HealthCheckNodePort = 0
		out.Spec.LoadBalancerClass = nil
	}
	out.Spec.Type = want.Spec.Type
	return out
}

func hasAll(have, want map[string]string) bool {
	for k, v := range want {
		if hv, ok := have[k]; !ok || hv != v {
			return false
		}
	}
	return true
}

func nilIfEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return m
}
