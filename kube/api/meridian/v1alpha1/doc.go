// Package v1alpha1 is Meridian's own API, meridian.dev/v1alpha1: the
// Cluster (a member of the fleet) and, in contract.go, the labels and
// annotations by which `meridian controller` publishes endpoints for the
// edge to read.
//
// +kubebuilder:object:generate=true
// +groupName=meridian.dev
package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is meridian.dev/v1alpha1.
var GroupVersion = schema.GroupVersion{Group: "meridian.dev", Version: "v1alpha1"}

// AddToScheme registers this group's kinds.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion, &Cluster{}, &ClusterList{})
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
