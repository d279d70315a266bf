package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// MultiClusterService is a Service template that `meridian controller`
// derives in each selected member cluster; the endpoints of those derived
// Services are the MCI's backends.
//
// Annotation meridian.dev/endpoints: LoadBalancer publishes each derived
// Service's load-balancer address instead of its pods (see the meridian.dev
// contract).
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=mcs,categories=meridian
// +kubebuilder:printcolumn:name="Clusters",type=integer,JSONPath=`.status.clusterCount`,description="Member clusters with a derived Service"
// +kubebuilder:printcolumn:name="Endpoints",type=string,JSONPath=`.status.readyEndpoints`,description="Ready/total endpoints across member clusters"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type MultiClusterService struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   MultiClusterServiceSpec   `json:"spec"`
	Status MultiClusterServiceStatus `json:"status,omitempty"`
}

// MultiClusterServiceList is a list of MultiClusterServices.
//
// +kubebuilder:object:root=true
type MultiClusterServiceList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MultiClusterService `json:"items"`
}

// MultiClusterServiceSpec is the derived Services' template and where
// they go.
type MultiClusterServiceSpec struct {
	Template ServiceTemplate `json:"template"`
	// Clusters selects member clusters; absent: every Cluster with a
	// kubeconfig (and every static Cluster, for the edge). Blue/green by
	// editing it.
	// +optional
	// +listType=atomic
	Clusters []ClusterSelector `json:"clusters,omitempty"`
}

// ServiceTemplate wraps the derived Service's spec, as GKE's does.
type ServiceTemplate struct {
	Spec ServiceTemplateSpec `json:"spec"`
}

// ServiceTemplateSpec is the part of a Service spec that is derived.
type ServiceTemplateSpec struct {
	// Selector picks the pods in each member cluster.
	// +optional
	Selector map[string]string `json:"selector,omitempty"`
	// +kubebuilder:validation:MinItems=1
	// +listType=atomic
	Ports []ServicePort `json:"ports"`
}

// ServicePort is one port of the derived Services.
type ServicePort struct {
	// Name is what MCI backends, BackendConfig and app-protocols
	// annotations refer to.
	// +optional
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name,omitempty"`
	// +optional
	// +kubebuilder:validation:Enum=TCP;UDP;SCTP
	Protocol string `json:"protocol,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`
	// TargetPort is the pods' port, a number or a container port's name;
	// default: Port.
	// +optional
	TargetPort *intstr.IntOrString `json:"targetPort,omitempty"`
}

// ClusterSelector names one member cluster.
type ClusterSelector struct {
	// Link is "<region-or-zone>/<cluster>": the Cluster's spec.region (or
	// a zone in it) and its metadata.name.
	// +kubebuilder:validation:Pattern=`^[^/\s]+/[^/\s]+$`
	Link string `json:"link"`
}

// MultiClusterServiceStatus is written by `meridian controller`.
type MultiClusterServiceStatus struct {
	// Clusters are the selected member clusters' endpoints, ordered by
	// cluster. Set with SetClusters.
	// +optional
	// +listType=atomic
	Clusters []ClusterBackends `json:"clusters,omitempty"`
	// ClusterCount is len(Clusters) (the printer column); always written,
	// so that the column shows 0.
	// +optional
	ClusterCount int32 `json:"clusterCount"`
	// ReadyEndpoints is "ready/total" over Clusters (the printer column).
	// +optional
	ReadyEndpoints string `json:"readyEndpoints,omitempty"`
	// ObservedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// SetClusters sets Clusters, sorted by cluster, and the summary columns,
// so that equal inputs give equal statuses (no churn).
func (s *MultiClusterServiceStatus) SetClusters(c []ClusterBackends) {
	s.Clusters = sortedBackends(c)
	s.ClusterCount = int32(len(s.Clusters))
	s.ReadyEndpoints = summarize(s.Clusters)
}
