package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// The controller's own metrics, beside controller-runtime's (reconcile
// counts, durations and errors, work queue depths, client requests), in
// its registry: /metrics on --admin_listen serves them all.
var (
	memberReachable = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meridian_controller_member_ready",
		Help: "1 while a member cluster is reachable and its cache synced, else 0.",
	}, []string{"cluster"})
	writes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_controller_writes_total",
		Help: "Objects written: derived Services in members, published EndpointSlices in the config cluster.",
	}, []string{"kind", "op"})
	publishedEndpoints = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "meridian_controller_published_endpoints",
		Help: "Endpoints published from a member cluster, over all MultiClusterServices.",
	}, []string{"cluster"})
)

func init() {
	metrics.Registry.MustRegister(memberReachable, writes, publishedEndpoints)
}
