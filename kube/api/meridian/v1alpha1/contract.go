package v1alpha1

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
)

// The published backend set: how `meridian controller` hands each
// (MultiClusterService, member cluster) pair's endpoints to the edge, as
// standard discovery.k8s.io/v1 EndpointSlices in the config cluster, the
// way Kubernetes Multi-Cluster Services API implementations do.
//
//   - namespace: the MCS's; name: PublishedSliceName(mcs, cluster, n);
//   - labels: LabelServiceName=<mcs>, LabelManagedBy=ManagedByController,
//     LabelCluster=<Cluster name>;
//   - annotations, while the member cluster is unreachable (its last known
//     endpoints stay published): AnnotationStale="true" and
//     AnnotationStaleSince=<RFC 3339 time>;
//   - ports: the MCS template's ports, by name; endpoints: the member's pod
//     IPs with the ready/serving/terminating conditions of the member's
//     slices — or, with the MCS annotation AnnotationEndpoints=
//     EndpointsLoadBalancer, one endpoint: the derived Service's
//     load-balancer address (none until it has one);
//   - an owner reference to the MCS, so that deleting it removes them.
//
// The edge selects slices by LabelManagedBy and reads LabelServiceName and
// LabelCluster; it keeps stale endpoints (its health checks decide).
const (
	// LabelServiceName names the MultiClusterService (the Multi-Cluster
	// Services API's label).
	LabelServiceName = "multicluster.kubernetes.io/service-name"
	// LabelManagedBy is discovery.k8s.io/v1's managed-by label; the
	// EndpointSlice controller leaves slices with another value alone.
	LabelManagedBy = "endpointslice.kubernetes.io/managed-by"
	// ManagedByController is LabelManagedBy's value on published slices.
	ManagedByController = "meridian-controller"
	// LabelCluster names the member Cluster the endpoints are in.
	LabelCluster = "meridian.dev/cluster"

	// AnnotationStale is "true" on a slice whose cluster is unreachable.
	AnnotationStale = "meridian.dev/stale"
	// AnnotationStaleSince is when it became unreachable (RFC 3339).
	AnnotationStaleSince = "meridian.dev/stale-since"

	// AnnotationEndpoints on an MCS chooses what is published per cluster:
	// EndpointsPods (default) or EndpointsLoadBalancer.
	AnnotationEndpoints = "meridian.dev/endpoints"
	// EndpointsPods publishes the derived Service's ready pod addresses.
	EndpointsPods = "Pods"
	// EndpointsLoadBalancer publishes the derived Service's load-balancer
	// address, one endpoint per cluster; the derived Service is then of
	// type LoadBalancer.
	EndpointsLoadBalancer = "LoadBalancer"
)

// Derived Services: what the controller creates in member clusters, one
// per (MultiClusterService, selected member), named as the MCS, in its
// namespace.
const (
	// LabelDerivedFrom names the MultiClusterService a member's Service is
	// derived from; the controller's member watches select on it.
	LabelDerivedFrom = "meridian.dev/derived-from"
	// LabelConfigCluster names the config cluster (the controller's
	// --cluster_id), so that two config clusters never touch each other's
	// derived Services.
	LabelConfigCluster = "meridian.dev/config-cluster"
	// AnnotationMCSUID is the MultiClusterService's UID: a Service with the
	// same name but another UID belongs to an older MCS, and is replaced.
	AnnotationMCSUID = "meridian.dev/mcs-uid"
	// FinalizerDerivedServices, on MultiClusterServices and Clusters, holds
	// their deletion until the derived Services are deleted.
	FinalizerDerivedServices = "meridian.dev/derived-services"
)

// AnnotationFailoverOrder on an MCI lists regions in the order the edge
// prefers them ("us-central1,europe-west1"), instead of measured round
// trip time.
const AnnotationFailoverOrder = "meridian.dev/failover-order"

// maxNameLength is an object name's limit (a DNS subdomain).
const maxNameLength = 253

// PublishedSliceName is the name of the n-th (from 0) published slice of
// a (MultiClusterService, Cluster) pair: "<mcs>-<cluster>", then
// "-<n>" for n > 0. A name longer than an object name may be is cut, and
// a hash of the whole keeps it unique. The edge finds slices by their
// labels, never by name; names of two pairs can coincide ("a-b"+"c" and
// "a"+"b-c"), so the controller checks an existing slice's labels before
// it updates it.
func PublishedSliceName(mcs, cluster string, n int) string {
	name := mcs + "-" + cluster
	if n > 0 {
		name += "-" + strconv.Itoa(n)
	}
	if len(name) <= maxNameLength {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	suffix := "-" + hex.EncodeToString(sum[:5])
	// Each dot-separated part must start and end alphanumeric: the cut
	// must not end in '-' or '.' before the suffix.
	return strings.TrimRight(name[:maxNameLength-len(suffix)], "-.") + suffix
}
