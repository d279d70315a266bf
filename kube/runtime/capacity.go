package runtime

import (
	"maps"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	corelisters "k8s.io/client-go/listers/core/v1"
)

// Pools with `capacity: fromCluster` take their slots from the nodes
// their Pods may run on: each Ready, schedulable node that the pool's
// nodeSelector matches and whose NoSchedule and NoExecute taints its
// tolerations accept holds allocatable ÷ per-session of the pool's
// capacityResource (whole sessions: one does not span nodes). The sum is
// the pool's slots, sessions of every pool on those nodes included, so
// two pools sharing nodes should not both count them (give one a fixed
// capacity, or disjoint nodeSelectors).

func (r *Pods) measuresCapacity() bool {
	for _, p := range r.pools {
		if p.capacity {
			return true
		}
	}
	return false
}

// Capacity is the pool's slots on the cluster's nodes now; ok is false
// before the nodes are listed, or for a pool with a fixed capacity.
func (r *Pods) Capacity(pool string) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.capacity == nil {
		return 0, false
	}
	n, ok := r.capacity[pool]
	return n, ok
}

// measure recounts every pool's slots and wakes the scheduler when a
// count changed (it places queued sessions in new slots).
func (r *Pods) measure(nodes corelisters.NodeLister) {
	all, err := nodes.List(labels.Everything())
	if err != nil {
		return
	}
	counts := map[string]int{}
	for name, p := range r.pools {
		if p.capacity {
			counts[name] = slots(p, all)
		}
	}
	r.mu.Lock()
	same := r.capacity != nil && maps.Equal(r.capacity, counts)
	if !same {
		r.log.Info("pool capacity from the cluster", "slots", counts)
	}
	r.capacity = counts
	r.mu.Unlock()
	if !same {
		r.changed("")
	}
}

// slots is how many of the pool's sessions the nodes hold.
func slots(p *pool, nodes []*corev1.Node) int {
	per := p.perSession.MilliValue()
	if per <= 0 {
		return 0
	}
	n := 0
	for _, node := range nodes {
		if !usable(p, node) {
			continue
		}
		q, ok := node.Status.Allocatable[p.capacityResource]
		if !ok {
			continue
		}
		n += int(q.MilliValue() / per)
	}
	return n
}

func usable(p *pool, node *corev1.Node) bool {
	if node.Spec.Unschedulable || !p.selector.Matches(labels.Set(node.Labels)) {
		return false
	}
	ready := false
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			ready = c.Status == corev1.ConditionTrue
		}
	}
	if !ready {
		return false
	}
	for i := range node.Spec.Taints {
		t := &node.Spec.Taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule {
			continue
		}
		tolerated := false
		for j := range p.tolerations {
			if p.tolerations[j].ToleratesTaint(logr.Discard(), t, false) {
				tolerated = true
				break
			}
		}
		if !tolerated {
			return false
		}
	}
	return true
}
