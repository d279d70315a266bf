package controller

import (
	"cmp"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	meridianv1alpha1 "github.com/meridian-gw/meridian/kube/api/meridian/v1alpha1"
	networkingv1beta1 "github.com/meridian-gw/meridian/kube/api/networking/v1beta1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// maxEndpointsPerSlice is what the EndpointSlice controller puts in one
// slice by default; the API allows 1000.
const maxEndpointsPerSlice = 100

// publication is what is published of one (MCS, member cluster) pair.
type publication struct {
	slices []*discoveryv1.EndpointSlice
	// dropped counts endpoints left out by the per-cluster limit.
	dropped int
}

// endpointGroup is endpoints that share an address type and ports, as
// one EndpointSlice's do.
type endpointGroup struct {
	addressType discoveryv1.AddressType
	ports       []discoveryv1.EndpointPort
	endpoints   map[string]discoveryv1.Endpoint // by first address
}

// publishPods is the published slices of a member's derived Service from
// that member's EndpointSlices: their endpoints, with the ready, serving
// and terminating conditions, under the MCS template's ports (with the
// pods' port numbers, which the member's slices hold). An endpoint in two
// member slices (as during a move between them) is published once, ready
// if either says so. At most limit endpoints are published.
func publishPods(mcs *networkingv1beta1.MultiClusterService, cluster string, member []discoveryv1.EndpointSlice, limit int) publication {
	groups := map[string]*endpointGroup{}
	for i := range member {
		s := &member[i]
		if s.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		ports := templatePorts(mcs, s.Ports)
		key := groupKey(s.AddressType, ports)
		g := groups[key]
		if g == nil {
			g = &endpointGroup{addressType: s.AddressType, ports: ports, endpoints: map[string]discoveryv1.Endpoint{}}
			groups[key] = g
		}
		for _, e := range s.Endpoints {
			if len(e.Addresses) == 0 {
				continue
			}
			out := discoveryv1.Endpoint{
				Addresses: slices.Clone(e.Addresses),
				Conditions: discoveryv1.EndpointConditions{
					Ready:       cloneBool(e.Conditions.Ready),
					Serving:     cloneBool(e.Conditions.Serving),
					Terminating: cloneBool(e.Conditions.Terminating),
				},
				Zone: cloneString(e.Zone),
			}
			if prev, ok := g.endpoints[e.Addresses[0]]; ok && endpointReady(prev) {
				continue
			}
			g.endpoints[e.Addresses[0]] = out
		}
	}
	var pub publication
	budget := limit
	for _, key := range slices.Sorted(maps.Keys(groups)) {
		g := groups[key]
		addrs := slices.Sorted(maps.Keys(g.endpoints))
		if len(addrs) > budget {
			pub.dropped += len(addrs) - budget
			addrs = addrs[:budget]
		}
		budget -= len(addrs)
		for chunk := range slices.Chunk(addrs, maxEndpointsPerSlice) {
			s := publishedSlice(mcs, cluster, len(pub.slices), g.addressType, g.ports)
			for _, a := range chunk {
				s.Endpoints = append(s.Endpoints, g.endpoints[a])
			}
			pub.slices = append(pub.slices, s)
		}
	}
	return pub
}

// publishLoadBalancer is the published slice of a member's derived
// Service of type LoadBalancer: one endpoint, its first load-balancer
// address, under the template's ports. Nothing until it has an address.
func publishLoadBalancer(mcs *networkingv1beta1.MultiClusterService, cluster string, svc *corev1.Service) publication {
	if svc == nil || len(svc.Status.LoadBalancer.Ingress) == 0 {
		return publication{}
	}
	ing := svc.Status.LoadBalancer.Ingress[0]
	addr, addrType := ing.Hostname, discoveryv1.AddressTypeFQDN
	if ip, err := netip.ParseAddr(ing.IP); err == nil {
		addr, addrType = ip.String(), discoveryv1.AddressTypeIPv4
		if ip.Is6() {
			addrType = discoveryv1.AddressTypeIPv6
		}
	}
	if addr == "" {
		return publication{}
	}
	var ports []discoveryv1.EndpointPort
	for _, p := range mcs.Spec.Template.Spec.Ports {
		ports = append(ports, endpointPort(p.Name, cmp.Or(corev1.Protocol(p.Protocol), corev1.ProtocolTCP), p.Port))
	}
	s := publishedSlice(mcs, cluster, 0, addrType, ports)
	s.Endpoints = []discoveryv1.Endpoint{{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true), Terminating: ptr.To(false)},
	}}
	return publication{slices: []*discoveryv1.EndpointSlice{s}}
}

// templatePorts are the MCS template's ports that a member slice has, by
// name, in the template's order, with the member's (the pods') numbers.
func templatePorts(mcs *networkingv1beta1.MultiClusterService, member []discoveryv1.EndpointPort) []discoveryv1.EndpointPort {
	var out []discoveryv1.EndpointPort
	for _, tp := range mcs.Spec.Template.Spec.Ports {
		for _, mp := range member {
			if ptr.Deref(mp.Name, "") == tp.Name && mp.Port != nil {
				out = append(out, endpointPort(tp.Name, ptr.Deref(mp.Protocol, corev1.ProtocolTCP), *mp.Port))
				break
			}
		}
	}
	return out
}

func endpointPort(name string, proto corev1.Protocol, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr.To(name), Protocol: ptr.To(proto), Port: ptr.To(port)}
}

func groupKey(t discoveryv1.AddressType, ports []discoveryv1.EndpointPort) string {
	var b strings.Builder
	b.WriteString(string(t))
	for _, p := range ports {
		b.WriteString("|" + *p.Name + ":" + strconv.Itoa(int(*p.Port)) + "/" + string(*p.Protocol))
	}
	return b.String()
}

// publishedSlice is the n-th published slice of (mcs, cluster), without
// endpoints.
func publishedSlice(mcs *networkingv1beta1.MultiClusterService, cluster string, n int, t discoveryv1.AddressType, ports []discoveryv1.EndpointPort) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: mcs.Namespace,
			Name:      meridianv1alpha1.PublishedSliceName(mcs.Name, cluster, n),
			Labels: map[string]string{
				meridianv1alpha1.LabelServiceName: mcs.Name,
				meridianv1alpha1.LabelManagedBy:   meridianv1alpha1.ManagedByController,
				meridianv1alpha1.LabelCluster:     cluster,
			},
			OwnerReferences: []metav1.OwnerReference{ownerRef(mcs)},
		},
		AddressType: t,
		Ports:       ports,
	}
}

func ownerRef(mcs *networkingv1beta1.MultiClusterService) metav1.OwnerReference {
	return metav1.OwnerReference{
		APIVersion:         networkingv1beta1.GroupVersion.String(),
		Kind:               "MultiClusterService",
		Name:               mcs.Name,
		UID:                mcs.UID,
		Controller:         ptr.To(true),
		BlockOwnerDeletion: ptr.To(true),
	}
}

// markStale is s with the stale annotations: since, unless s already says
// since when.
func markStale(s *discoveryv1.EndpointSlice, since metav1.Time) *discoveryv1.EndpointSlice {
	out := s.DeepCopy()
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	if out.Annotations[meridianv1alpha1.AnnotationStale] != "true" || out.Annotations[meridianv1alpha1.AnnotationStaleSince] == "" {
		out.Annotations[meridianv1alpha1.AnnotationStaleSince] = since.UTC().Format(time.RFC3339)
	}
	out.Annotations[meridianv1alpha1.AnnotationStale] = "true"
	return out
}

func isStale(s *discoveryv1.EndpointSlice) bool {
	return s.Annotations[meridianv1alpha1.AnnotationStale] == "true"
}

// sliceDiffers: have is not want in what the controller owns: its
// labels, the stale annotations (present or not), the owner reference,
// ports and endpoints.
func sliceDiffers(have, want *discoveryv1.EndpointSlice) bool {
	for _, k := range []string{meridianv1alpha1.AnnotationStale, meridianv1alpha1.AnnotationStaleSince} {
		if have.Annotations[k] != want.Annotations[k] {
			return true
		}
	}
	return !hasAll(have.Labels, want.Labels) || !slices.ContainsFunc(have.OwnerReferences, func(r metav1.OwnerReference) bool {
		return equality.Semantic.DeepEqual(r, want.OwnerReferences[0])
	}) || have.AddressType != want.AddressType ||
		!equality.Semantic.DeepEqual(emptyIfNil(have.Ports), emptyIfNil(want.Ports)) ||
		!equality.Semantic.DeepEqual(emptyIfNil(have.Endpoints), emptyIfNil(want.Endpoints))
}

// updatedSlice is have with want's content, keeping others' labels and
// annotations.
func updatedSlice(have, want *discoveryv1.EndpointSlice) *discoveryv1.EndpointSlice {
	out := have.DeepCopy()
	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	maps.Copy(out.Labels, want.Labels)
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	for _, k := range []string{meridianv1alpha1.AnnotationStale, meridianv1alpha1.AnnotationStaleSince} {
		if v, ok := want.Annotations[k]; ok {
			out.Annotations[k] = v
		} else {
			delete(out.Annotations, k)
		}
	}
	out.OwnerReferences = want.OwnerReferences
	out.Ports, out.Endpoints = want.Ports, want.Endpoints
	return out
}

// counts are ready and total endpoints over slices.
func counts(ss []*discoveryv1.EndpointSlice) (ready, total int32) {
	for _, s := range ss {
		for _, e := range s.Endpoints {
			total++
			if endpointReady(e) {
				ready++
			}
		}
	}
	return ready, total
}

// endpointReady: the API reads an unset ready condition as ready.
func endpointReady(e discoveryv1.Endpoint) bool { return ptr.Deref(e.Conditions.Ready, true) }

func emptyIfNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func cloneBool(b *bool) *bool {
	if b == nil {
		return nil
	}
	return ptr.To(*b)
}

func cloneString(s *string) *string {
	if s == nil {
		return nil
	}
	return ptr.To(*s)
}
