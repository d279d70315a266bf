// Package v1 is GKE's BackendConfig, cloud.google.com/v1 (GA), with the
// same schema as package v1beta1 (the version the seed uses): the
// apiserver converts between them by changing apiVersion alone, so one
// object reads the same in either version. See package v1beta1.
//
// +kubebuilder:object:generate=true
// +groupName=cloud.google.com
package v1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is cloud.google.com/v1.
var GroupVersion = schema.GroupVersion{Group: "cloud.google.com", Version: "v1"}

// AddToScheme registers this group version's kinds.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &BackendConfig{}, &BackendConfigList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
