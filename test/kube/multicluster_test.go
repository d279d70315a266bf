package kube

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestMultiCluster is the whole path, from the seed's YAML to calls
// through the edge, while the member clusters change under it.
func TestMultiCluster(t *testing.T) {
	e := startEnv(t, envOptions{Log: t.Logf})
	e.waitRouted(2*time.Minute, map[string]int{"us-central1": 2, "europe-west1": 2})
}

// waitRouted waits until the edge routes to exactly want[region]
// gateways in each region, and those are the ones the kubelets run.
func (e *env) waitRouted(d time.Duration, want map[string]int) {
	e.t.Helper()
	e.waitFor(d, fmt.Sprintf("the edge to route to %v", want), func(ctx context.Context) error {
		st, err := e.edgeStatus(ctx)
		if err != nil {
			return err
		}
		got := routed(st)
		for _, m := range e.members {
			eps := slices.Sorted(slices.Values(got[m.region]))
			running := m.pods.gateways()
			if len(eps) != want[m.region] || !slices.Equal(eps, running) {
				return fmt.Errorf("region %s: the edge routes to %v; gateways running: %v", m.region, eps, running)
			}
		}
		return nil
	})
}
