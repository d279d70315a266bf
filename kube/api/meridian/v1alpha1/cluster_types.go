package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Cluster is a member of the fleet: a region and either its gateways'
// addresses (static, as in the edge's file mode) or a kubeconfig through
// which `meridian controller` derives Services in it and publishes their
// endpoints. Cluster-scoped, as fleet membership is.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=meridian
// +kubebuilder:printcolumn:name="Region",type=string,JSONPath=`.spec.region`
// +kubebuilder:printcolumn:name="Reachable",type=string,JSONPath=`.status.conditions[?(@.type=="Reachable")].status`
// +kubebuilder:printcolumn:name="Endpoints",type=integer,JSONPath=`.status.endpoints`,description="Endpoints published from this cluster"
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Reachable")].reason`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Cluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ClusterSpec   `json:"spec"`
	Status ClusterStatus `json:"status,omitempty"`
}

// ClusterList is a list of Clusters.
//
// +kubebuilder:object:root=true
type ClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Cluster `json:"items"`
}

// ClusterSpec is a region and exactly one of Endpoints or
// KubeconfigSecretRef.
//
// +kubebuilder:validation:XValidation:rule="has(self.endpoints) != has(self.kubeconfigSecretRef)",message="set exactly one of spec.endpoints (static gateway addresses) or spec.kubeconfigSecretRef (a Secret holding a kubeconfig of a live member cluster)"
type ClusterSpec struct {
	// Region is where the cluster runs, e.g. us-central1; MultiClusterService
	// links name it ("<region>/<cluster>").
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[^/\s]+$`
	Region string `json:"region"`
	// Endpoints are static gateway addresses, as in the edge's file mode.
	// +optional
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=1000
	// +listType=atomic
	Endpoints []ClusterEndpoint `json:"endpoints,omitempty"`
	// KubeconfigSecretRef names a Secret in the controller's namespace that
	// holds a kubeconfig for this member cluster.
	// +optional
	KubeconfigSecretRef *SecretKeyRef `json:"kubeconfigSecretRef,omitempty"`
}

// ClusterEndpoint is one gateway of a static cluster.
type ClusterEndpoint struct {
	// Address is host:port of the gateway's serving (TLS) port.
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:Pattern=`^\S+:[0-9]{1,5}$`
	Address string `json:"address"`
	// HealthAddress, when set, is where health checks go instead
	// (host:port), e.g. the gateway's --http_port.
	// +optional
	// +kubebuilder:validation:MaxLength=261
	// +kubebuilder:validation:Pattern=`^\S+:[0-9]{1,5}$`
	HealthAddress string `json:"healthAddress,omitempty"`
	// MaxInFlight caps concurrent requests to this endpoint; excess spills
	// to other endpoints and regions. 0: no cap.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxInFlight int32 `json:"maxInFlight,omitempty"`
	// MaxRatePerEndpoint caps requests per second to this endpoint; excess
	// spills to other endpoints and regions. 0: no cap.
	// +optional
	// +kubebuilder:validation:Minimum=0
	MaxRatePerEndpoint float64 `json:"maxRatePerEndpoint,omitempty"`
}

// SecretKeyRef names a key of a Secret in the controller's namespace.
type SecretKeyRef struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
	// Key in the Secret's data. Default "kubeconfig".
	// +optional
	// +kubebuilder:default=kubeconfig
	// +kubebuilder:validation:MinLength=1
	Key string `json:"key,omitempty"`
}

// ClusterStatus is written by `meridian controller`.
type ClusterStatus struct {
	// Endpoints is how many endpoints the controller publishes from this
	// cluster, over all MultiClusterServices (static: len(spec.endpoints)).
	// Always written, so that the printer column shows 0.
	// +optional
	Endpoints int32 `json:"endpoints"`
	// ObservedGeneration is the generation this status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Reachable.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// ConditionReachable is true while the controller's watches of the member
// cluster are connected.
const ConditionReachable = "Reachable"

// Reasons of the Reachable condition.
const (
	// ReasonConnected: the member's apiserver answers.
	ReasonConnected = "Connected"
	// ReasonUnreachable: the member's apiserver does not answer; its last
	// known endpoints stay published, marked stale.
	ReasonUnreachable = "Unreachable"
	// ReasonKubeconfigInvalid: the Secret's key does not hold a usable
	// kubeconfig; the message says why.
	ReasonKubeconfigInvalid = "KubeconfigInvalid"
	// ReasonSecretMissing: the Secret, or its key, does not exist.
	ReasonSecretMissing = "SecretMissing"
	// ReasonStatic: spec.endpoints lists the gateways; nothing to reach.
	ReasonStatic = "Static"
)
