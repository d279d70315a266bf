package e2e

import (
	"fmt"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/scheduler/store/storetest"
)

// TestSchedulersStartTogetherOnFreshStore starts a region's schedulers at
// the same moment on a store nobody has opened yet, as a deployment of
// several replicas does: every one must come up, none may trip over the
// others creating the schema.
func TestSchedulersStartTogetherOnFreshStore(t *testing.T) {
	const rounds, replicas = 4, 3
	storetest.Each(t, func(t *testing.T, kind string) {
		for round := range rounds {
			url := storetest.URL(t, kind)
			var scheds []*schedulerProc
			for i := range replicas {
				scheds = append(scheds, launchScheduler(t, schedulerSpec{
					Region: "us-central1", Instance: fmt.Sprintf("us-central1-%d", i), Store: url,
					Config: "pools:\n- name: cpu\n  capacity: 1\n"}))
			}
			for _, s := range scheds {
				s.waitServing(t, 30*time.Second)
			}
			t.Logf("round %d: %d schedulers SERVING", round, replicas)
			for _, s := range scheds {
				s.proc.cleanup()
			}
		}
	})
}
