package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// This file and ../v1beta1/backendconfig_types.go are the same but for the
// storage-version marker; a test keeps their schemas equal.

// BackendConfig tunes the load balancer's view of a MultiClusterService
// port: health checks, timeouts, draining, affinity, headers. An MCS names
// it in its beta.cloud.google.com/backend-config annotation.
//
// +kubebuilder:object:root=true
// +kubebuilder:storageversion
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=bc,categories=meridian
// +kubebuilder:printcolumn:name="Check",type=string,JSONPath=`.spec.healthCheck.type`,description="Health-check type"
// +kubebuilder:printcolumn:name="Path",type=string,JSONPath=`.spec.healthCheck.requestPath`
// +kubebuilder:printcolumn:name="Interval",type=integer,JSONPath=`.spec.healthCheck.checkIntervalSec`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BackendConfig struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   BackendConfigSpec   `json:"spec,omitempty"`
	Status BackendConfigStatus `json:"status,omitempty"`
}

// BackendConfigList is a list of BackendConfigs.
//
// +kubebuilder:object:root=true
type BackendConfigList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BackendConfig `json:"items"`
}

// BackendConfigSpec holds GKE's fields. Unset fields take the edge's
// defaults (docs/edge.md).
type BackendConfigSpec struct {
	// +optional
	HealthCheck *HealthCheckConfig `json:"healthCheck,omitempty"`
	// TimeoutSec bounds a request to a backend. Edge default 30.
	// +optional
	// +kubebuilder:validation:Minimum=1
	TimeoutSec *int64 `json:"timeoutSec,omitempty"`
	// +optional
	ConnectionDraining *ConnectionDrainingConfig `json:"connectionDraining,omitempty"`
	// +optional
	SessionAffinity *SessionAffinityConfig `json:"sessionAffinity,omitempty"`
	// +optional
	CustomRequestHeaders *CustomHeadersConfig `json:"customRequestHeaders,omitempty"`

	// Fields GKE defines that Meridian does not act on: kept as given, and
	// the edge warns.

	// +optional
	CustomResponseHeaders *CustomHeadersConfig `json:"customResponseHeaders,omitempty"`
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	IAP *runtime.RawExtension `json:"iap,omitempty"`
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	CDN *runtime.RawExtension `json:"cdn,omitempty"`
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	SecurityPolicy *runtime.RawExtension `json:"securityPolicy,omitempty"`
	// +optional
	// +kubebuilder:pruning:PreserveUnknownFields
	Logging *runtime.RawExtension `json:"logging,omitempty"`
}

// HealthCheckConfig is the active health check. Edge defaults, much
// faster than GKE's 15 s: every 1 s, timeout 1 s, healthy after 1 success,
// unhealthy after 2 failures.
type HealthCheckConfig struct {
	// +optional
	// +kubebuilder:validation:Minimum=1
	CheckIntervalSec *int64 `json:"checkIntervalSec,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=1
	TimeoutSec *int64 `json:"timeoutSec,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=1
	HealthyThreshold *int64 `json:"healthyThreshold,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=1
	UnhealthyThreshold *int64 `json:"unhealthyThreshold,omitempty"`
	// Type is HTTP, HTTPS, HTTP2, or GRPC (grpc.health.v1; Meridian's
	// addition). Default: from the port's app protocol.
	// +optional
	// +kubebuilder:validation:Enum=HTTP;HTTPS;HTTP2;GRPC
	Type string `json:"type,omitempty"`
	// Port is where checks go; default: the serving port.
	// +optional
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port *int64 `json:"port,omitempty"`
	// RequestPath of HTTP checks. Default "/".
	// +optional
	// +kubebuilder:validation:Pattern=`^/`
	RequestPath string `json:"requestPath,omitempty"`
	// GRPCServiceName is the service a GRPC check asks about; empty: the
	// server as a whole. Meridian's addition.
	// +optional
	GRPCServiceName string `json:"grpcServiceName,omitempty"`
}

// ConnectionDrainingConfig is how long a removed endpoint keeps its
// in-flight requests.
type ConnectionDrainingConfig struct {
	// +optional
	// +kubebuilder:validation:Minimum=0
	DrainingTimeoutSec int64 `json:"drainingTimeoutSec,omitempty"`
}

// SessionAffinityConfig keeps a client on one endpoint.
type SessionAffinityConfig struct {
	// +optional
	// +kubebuilder:validation:Enum=NONE;CLIENT_IP;GENERATED_COOKIE
	AffinityType string `json:"affinityType,omitempty"`
	// +optional
	// +kubebuilder:validation:Minimum=0
	AffinityCookieTtlSec *int64 `json:"affinityCookieTtlSec,omitempty"`
}

// CustomHeadersConfig lists headers as "Name: value".
type CustomHeadersConfig struct {
	// +optional
	// +listType=atomic
	// +kubebuilder:validation:items:Pattern=`^\s*[^:\s][^:]*:`
	Headers []string `json:"headers,omitempty"`
}

// BackendConfigStatus is empty, as GKE's.
type BackendConfigStatus struct{}
