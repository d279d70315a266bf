// Package kube runs Meridian on Kubernetes end to end, with real processes
// against real control planes (test/kubetest): a config cluster and two
// member clusters in two regions; deploy/kubernetes applied as
// docs/kubernetes.md says; the seed's MultiClusterIngress,
// MultiClusterService and BackendConfig unchanged; two `meridian
// controller` replicas; the seed's pod (the scheduler Deployment of the
// member overlays) scheduled on kwok nodes, each Ready pod answered by a
// real `meridian gateway` bound to its pod IP in front of its region's
// real `meridian scheduler`; and `meridian edge --source=kubernetes`
// routing real gRPC and REST calls to them while the clusters change.
//
// The test plays the kubelet's part that kwok does not: for each pod of
// the Deployment it starts the esp container (the gateway, with the pod's
// own arguments) on the pod's IP, runs the pod's readiness probe (GET
// /v1/health on port 9000), and only then marks the pod Ready; it stops
// the gateway with SIGTERM when the pod is deleted.
//
// MERIDIAN_KUBE_BENCH=1 adds TestPropagation, the numbers in
// docs/benchmarks.md.
package kube
