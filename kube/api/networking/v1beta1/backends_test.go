package v1beta1

import (
	"reflect"
	"testing"
)

func TestStatusSummariesAreSortedAndCounted(t *testing.T) {
	in := []ClusterBackends{
		{Cluster: "us-1", Region: "us-central1", Ready: 2, Total: 3},
		{Cluster: "eu-1", Region: "europe-west1", Ready: 1, Total: 1, Stale: true},
	}
	var mcs MultiClusterServiceStatus
	mcs.SetClusters(in)
	if mcs.Clusters[0].Cluster != "eu-1" || mcs.ClusterCount != 2 || mcs.ReadyEndpoints != "3/4 (1 stale)" {
		t.Errorf("MCS status = %+v", mcs)
	}
	if in[0].Cluster != "us-1" {
		t.Error("SetClusters reordered its argument")
	}
	// The same set in another order gives the same status: no churn.
	var again MultiClusterServiceStatus
	again.SetClusters([]ClusterBackends{in[1], in[0]})
	if !reflect.DeepEqual(mcs, again) {
		t.Errorf("order changed the status: %+v vs %+v", mcs, again)
	}

	var mci MultiClusterIngressStatus
	mci.SetBackends([]ClusterBackends{{Service: "b", Cluster: "a", Ready: 1, Total: 1}, {Service: "a", Cluster: "z", Ready: 0, Total: 2}})
	if mci.Backends[0].Service != "a" || mci.ReadyBackends != "1/3" {
		t.Errorf("MCI status = %+v", mci)
	}
	mci.SetBackends(nil)
	if mci.Backends != nil || mci.ReadyBackends != "0/0" {
		t.Errorf("MCI status with no backends = %+v", mci)
	}
}
