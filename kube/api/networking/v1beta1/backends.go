package v1beta1

import (
	"cmp"
	"fmt"
	"slices"
)

// ClusterBackends counts one member cluster's published endpoints of a
// MultiClusterService.
type ClusterBackends struct {
	// Service is the MultiClusterService (in MCI status; empty in MCS
	// status, where it is the object itself).
	// +optional
	Service string `json:"service,omitempty"`
	// Cluster is the Cluster's name.
	Cluster string `json:"cluster"`
	// Region is the Cluster's spec.region.
	// +optional
	Region string `json:"region,omitempty"`
	// Ready endpoints: ready pods (or the load-balancer address).
	Ready int32 `json:"ready"`
	// Total endpoints, ready or not.
	Total int32 `json:"total"`
	// Stale: the cluster is unreachable and these are its last known
	// endpoints, still published (the edge's health checks decide).
	// +optional
	Stale bool `json:"stale,omitempty"`
}

func sortedBackends(b []ClusterBackends) []ClusterBackends {
	if len(b) == 0 {
		return nil
	}
	out := slices.Clone(b)
	slices.SortFunc(out, func(x, y ClusterBackends) int {
		return cmp.Or(cmp.Compare(x.Service, y.Service), cmp.Compare(x.Cluster, y.Cluster))
	})
	return out
}

// summarize is "ready/total", with " (N stale)" when some clusters are
// unreachable.
func summarize(b []ClusterBackends) string {
	var ready, total, stale int
	for _, c := range b {
		ready += int(c.Ready)
		total += int(c.Total)
		if c.Stale {
			stale++
		}
	}
	if stale > 0 {
		return fmt.Sprintf("%d/%d (%d stale)", ready, total, stale)
	}
	return fmt.Sprintf("%d/%d", ready, total)
}
