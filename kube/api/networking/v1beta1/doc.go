// Package v1beta1 is GKE Multi Cluster Ingress's API, networking.gke.io/v1beta1:
// MultiClusterIngress and MultiClusterService, with the field names of the
// seed's manifests so that they apply unchanged. The status is Meridian's:
// `meridian controller` writes it (the VIP, and each member cluster's
// endpoints) where GKE writes its cloud resources.
//
// +kubebuilder:object:generate=true
// +groupName=networking.gke.io
package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is networking.gke.io/v1beta1.
var GroupVersion = schema.GroupVersion{Group: "networking.gke.io", Version: "v1beta1"}

// AddToScheme registers this group's kinds.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&MultiClusterIngress{}, &MultiClusterIngressList{},
		&MultiClusterService{}, &MultiClusterServiceList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// Annotations GKE defines on these resources. The edge acts on StaticIP,
// BackendConfig(GA) and AppProtocols, and warns about the others.
const (
	// AnnotationStaticIP (MCI) is the address clients reach; it becomes
	// status.VIP.
	AnnotationStaticIP = "networking.gke.io/static-ip"
	// AnnotationPreSharedCerts (MCI) names Google-managed certificates.
	AnnotationPreSharedCerts = "networking.gke.io/pre-shared-certs"
	// AnnotationFrontendConfig (MCI) names a FrontendConfig.
	AnnotationFrontendConfig = "networking.gke.io/frontend-config"
	// AnnotationBackendConfig (MCS) maps ports to BackendConfigs:
	// {"ports": {"<port name|number>": "<bc>"}} or {"default": "<bc>"}.
	AnnotationBackendConfig = "beta.cloud.google.com/backend-config"
	// AnnotationBackendConfigGA is the same under its GA name.
	AnnotationBackendConfigGA = "cloud.google.com/backend-config"
	// AnnotationAppProtocols (MCS) gives ports' protocols: {"ssl": "HTTP2"}.
	AnnotationAppProtocols = "networking.gke.io/app-protocols"
)

// ConditionReady is the condition type of both kinds: true when every
// selected member cluster is reachable and its endpoints are published.
const ConditionReady = "Ready"

// Reasons of the Ready condition.
const (
	// ReasonPublished: every selected cluster's endpoints are published.
	ReasonPublished = "Published"
	// ReasonClustersUnreachable: some selected clusters are unreachable;
	// their last known endpoints stay published, marked stale.
	ReasonClustersUnreachable = "ClustersUnreachable"
	// ReasonNoClusters: no Cluster matches spec.clusters.
	ReasonNoClusters = "NoClusters"
	// ReasonInvalid: the spec names something that does not exist (a
	// MultiClusterService, a port); the message says what.
	ReasonInvalid = "Invalid"
)
