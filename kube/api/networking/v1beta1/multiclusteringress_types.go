package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// MultiClusterIngress is one load balancer in front of member clusters:
// an Ingress template whose backends are MultiClusterServices.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mci,categories=meridian
// +kubebuilder:printcolumn:name="VIP",type=string,JSONPath=`.status.VIP`,description="The address clients reach"
// +kubebuilder:printcolumn:name="Backends",type=string,JSONPath=`.status.readyBackends`,description="Ready/total endpoints across member clusters"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MultiClusterIngress struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MultiClusterIngressSpec   `json:"spec"`
	Status MultiClusterIngressStatus `json:"status,omitempty"`
}

// MultiClusterIngressList is a list of MultiClusterIngresses.
//
// +kubebuilder:object:root=true
type MultiClusterIngressList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MultiClusterIngress `json:"items"`
}

// MultiClusterIngressSpec holds the Ingress template.
type MultiClusterIngressSpec struct {
	Template IngressTemplate `json:"template"`
}

// IngressTemplate wraps the Ingress spec, as GKE's does.
type IngressTemplate struct {
	Spec IngressSpec `json:"spec"`
}

// IngressSpec is an Ingress (networking.k8s.io/v1beta1 shape) whose
// backends name MultiClusterServices.
//
// +kubebuilder:validation:XValidation:rule="has(self.backend) || (has(self.rules) && size(self.rules) > 0)",message="spec.template.spec needs a backend or rules: name a MultiClusterService in backend.serviceName"
type IngressSpec struct {
	// Backend serves requests that no rule matches.
	// +optional
	Backend *IngressBackend `json:"backend,omitempty"`
	// Rules route by host and path prefix.
	// +optional
	// +listType=atomic
	Rules []IngressRule `json:"rules,omitempty"`
	// TLS names the certificates of the front door.
	// +optional
	// +listType=atomic
	TLS []IngressTLS `json:"tls,omitempty"`
}

// IngressBackend names a MultiClusterService in the MCI's namespace and
// one of its ports.
type IngressBackend struct {
	// +kubebuilder:validation:MinLength=1
	ServiceName string `json:"serviceName"`
	// ServicePort is the MultiClusterService port's number or name.
	ServicePort intstr.IntOrString `json:"servicePort"`
}

// IngressRule routes a host's paths.
type IngressRule struct {
	// Host is matched against the request's authority; empty: any host.
	// +optional
	Host string `json:"host,omitempty"`
	// +optional
	HTTP *HTTPIngressRuleValue `json:"http,omitempty"`
}

// HTTPIngressRuleValue lists a rule's paths.
type HTTPIngressRuleValue struct {
	// +listType=atomic
	Paths []HTTPIngressPath `json:"paths"`
}

// HTTPIngressPath sends a path (a prefix with a trailing /*) to a backend.
type HTTPIngressPath struct {
	// +optional
	// +kubebuilder:validation:Pattern=`^/`
	Path    string         `json:"path,omitempty"`
	Backend IngressBackend `json:"backend"`
}

// IngressTLS names a Secret (tls.crt, tls.key) in the MCI's namespace.
type IngressTLS struct {
	// +kubebuilder:validation:MinLength=1
	SecretName string `json:"secretName"`
	// +optional
	// +listType=atomic
	Hosts []string `json:"hosts,omitempty"`
}

// MultiClusterIngressStatus is written by `meridian controller`.
type MultiClusterIngressStatus struct {
	// VIP is the address clients reach: the networking.gke.io/static-ip
	// annotation, else the edge Service's load-balancer address. (GKE's
	// field name, capitalized as GKE writes it.)
	// +optional
	VIP string `json:"VIP,omitempty"`
	// Backends are the endpoints behind this MCI's MultiClusterServices,
	// one entry per (service, member cluster), ordered. Set with
	// SetBackends.
	// +optional
	// +listType=atomic
	Backends []ClusterBackends `json:"backends,omitempty"`
	// ReadyBackends is "ready/total" over Backends (the printer column).
	// +optional
	ReadyBackends string `json:"readyBackends,omitempty"`
	// ObservedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// SetBackends sets Backends, sorted by service then cluster, and the
// summary column, so that equal inputs give equal statuses (no churn).
func (s *MultiClusterIngressStatus) SetBackends(b []ClusterBackends) {
	s.Backends = sortedBackends(b)
	s.ReadyBackends = summarize(s.Backends)
}
