// Package v1beta1 is GKE's BackendConfig, cloud.google.com/v1beta1 (the
// version the seed uses), with GKE's field names so that its manifests
// apply unchanged. Package v1 serves the same schema as cloud.google.com/v1;
// the apiserver converts between them by changing apiVersion alone.
//
// The apiserver refuses what the edge would: a health-check interval,
// timeout or threshold below 1, a type other than HTTP, HTTPS, HTTP2 or
// GRPC, a port outside 1–65535. GKE's fields that Meridian does not act
// on (iap, cdn, securityPolicy, logging, customResponseHeaders) are
// accepted and kept as given; the edge warns about them.
//
// +kubebuilder:object:generate=true
// +groupName=cloud.google.com
package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is cloud.google.com/v1beta1.
var GroupVersion = schema.GroupVersion{Group: "cloud.google.com", Version: "v1beta1"}

// AddToScheme registers this group version's kinds.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &BackendConfig{}, &BackendConfigList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
