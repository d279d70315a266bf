// Package controller is `meridian controller`: it runs in the config
// cluster, where the MultiClusterIngresses, MultiClusterServices and
// Clusters are, and
//
//   - derives a Service from each MultiClusterService in each selected live
//     member Cluster (spec.kubeconfigSecretRef): same namespace and name,
//     the template's selector and ports, labelled with its origin;
//   - watches those Services' EndpointSlices in the members — one
//     controller-runtime cluster.Cluster per member, its cache scoped by
//     label to derived objects, started and stopped as Clusters come and go —
//     and publishes each (MCS, member) pair's endpoints in the config
//     cluster as discovery.k8s.io/v1 EndpointSlices (the contract in
//     kube/api/meridian/v1alpha1), which the edge reads;
//   - keeps a member's last known endpoints published, marked stale, while
//     its apiserver does not answer;
//   - writes the status of MultiClusterServices, MultiClusterIngresses and
//     Clusters.
//
// Every reconciler is level-based: it compares what is with what should be
// and writes only a real difference, so a restarted controller changes
// nothing. Leader election (a Lease) makes several replicas safe; only the
// leader reconciles and watches members.
package controller
