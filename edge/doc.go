// Package edge is Meridian's multi-cluster load balancer: what Google's
// Ingress for Anthos does with a global load balancer, as one process.
//
// It reads the seed's MultiClusterIngress, MultiClusterService and
// BackendConfig resources unchanged (config.go), plus Cluster resources
// naming each member cluster's region and gateway endpoints, and serves
// one TLS port for native gRPC (on the h2relay frame relay, proxy.go) and
// REST/JSON and gRPC-Web (net/http, httpproxy.go). Each request goes to
// the nearest healthy region with capacity (Envoy's priority levels with
// overprovisioning 1.4, least-request among endpoints: pool.go); both data
// paths choose endpoints and retry through one attempt core (attempt.go)
// under a Finagle-style retry budget (budget.go), retrying anywhere what
// provably reached no backend and elsewhere what is idempotent
// (retry.go); dial.go keeps one connection pool per gateway address.
// The configuration comes from a Source (source.go): the files of
// --config, or kube/source watching a Kubernetes config cluster; either
// builds the same Config, and the edge imports nothing of Kubernetes.
// Health is active — HTTP, HTTPS, HTTP/2 or gRPC checks every second by
// default (health.go, settings.go) — and passive (ejection on
// connection failures and UNAVAILABLE). Configuration reloads swap in a
// new generation without failing a request (edge.go); /api/status, the
// dashboard and /metrics show what it does (admin.go, observe.go).
package edge
