package runtime

import "testing"

// kube-scheduler's volume cache lagging behind the API is retried, not a
// failure; a Pod that no node fits is. The messages are kube-scheduler's
// own, as seen in these tests' runs.
func TestVolumeCacheLagIsNotUnschedulable(t *testing.T) {
	for msg, want := range map[string]bool{
		`0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling.`: true,
		`0/2 nodes are available: persistentvolumeclaim "scratch-x" bound to non-existent persistentvolume "pvc-9c5a". not found`:                                     true,
		`0/2 nodes are available: 2 Insufficient nvidia.com/gpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.`:                false,
		`0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector.`:                                                                               false,
	} {
		if got := volumeCacheLag(msg); got != want {
			t.Errorf("volumeCacheLag(%q) = %v; want %v", msg, got, want)
		}
	}
}
