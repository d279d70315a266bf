package kubetest

import (
	"errors"
	"strings"
	"testing"
)

func TestAddressPlanGivesEachClusterItsOwnAddresses(t *testing.T) {
	p := &addressPlan{used: map[string]clusterAddrs{}, nextPort: firstPort}
	name1, a1, err := p.reserve("", "", "")
	if err != nil {
		t.Fatal(err)
	}
	name2, a2, err := p.reserve("member", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if name1 != "cluster-1" || a1.podCIDR.String() != "10.244.1.0/24" || a1.nodeIP.String() != "10.244.0.1" {
		t.Errorf("first cluster: %s %v %v; want cluster-1 10.244.1.0/24 10.244.0.1", name1, a1.podCIDR, a1.nodeIP)
	}
	if name2 != "member" || a2.podCIDR.String() != "10.244.2.0/24" || a2.nodeIP.String() != "10.244.0.2" {
		t.Errorf("second cluster: %s %v %v; want member 10.244.2.0/24 10.244.0.2", name2, a2.podCIDR, a2.nodeIP)
	}
	p.release(name1)
	if _, a3, err := p.reserve("", "", ""); err != nil || a3 != a1 {
		t.Errorf("after release: %v, %v; want the first cluster's addresses again", a3, err)
	}
}

func TestAddressPlanRefusesAmbiguousAddresses(t *testing.T) {
	p := &addressPlan{used: map[string]clusterAddrs{}, nextPort: firstPort}
	if _, _, err := p.reserve("a", "10.244.8.0/24", "10.244.0.8"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, cidr, nodeIP, want string }{
		{"a", "10.244.9.0/24", "10.244.0.9", `Options.Name = "a"`},
		{"b", "10.244.8.0/25", "10.244.0.9", "overlaps cluster \"a\""},
		{"b", "10.244.0.0/16", "10.245.0.1", "Options.NodeIP = 10.245.0.1: must lie inside"},
		{"b", "10.244.9.0/24", "10.244.9.1", "inside Options.PodCIDR"},
		{"b", "10.244.9.0/24", "10.244.8.5", "lies in cluster \"a\"'s pod CIDR"},
		{"b", "10.0.0.0/24", "10.244.0.9", "must lie inside 10.244.0.0/16"},
		{"b", "10.244.9.1/24", "10.244.0.9", "want an IPv4 network"},
		{"b", "10.244.9.0/30", "10.244.0.9", "too small"},
		{"b", "10.244.9.0/24", "", "Options.NodeIP = \"\""},
	} {
		_, _, err := p.reserve(tc.name, tc.cidr, tc.nodeIP)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("reserve(%s, %s, %s) = %v; want an error with %q", tc.name, tc.cidr, tc.nodeIP, err, tc.want)
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, tc := range []struct {
		opts Options
		want string
	}{
		{Options{ServiceCIDR: "10.244.0.0/16"}, "overlaps 10.244.0.0/16"},
		{Options{ServiceCIDR: "10.96.0.0/8"}, "from /12 to /24"},
		{Options{Nodes: []Node{{Name: "n"}, {Name: "n"}}}, "Options.Nodes[1].Name = \"n\""},
		{Options{ExtraArgs: map[string][]string{"kubelet": nil}}, "Options.ExtraArgs[\"kubelet\"]"},
	} {
		_, err := tc.opts.withDefaults().validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("validate(%+v) = %v; want an error with %q", tc.opts, err, tc.want)
		}
	}
	ip, err := Options{}.withDefaults().validate()
	if err != nil || ip.String() != "10.96.0.1" {
		t.Errorf("default options: service IP %v, %v; want 10.96.0.1", ip, err)
	}
}

// TestStartFailsAtOnceWhenAProgramExits: a program that exits during Start
// ends the wait with its log, instead of a timeout minutes later.
func TestStartFailsAtOnceWhenAProgramExits(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: no Kubernetes control plane")
	}
	_, err := start(t, Options{Name: "broken", ExtraArgs: map[string][]string{"kube-apiserver": {"--no-such-flag"}}})
	if !errors.Is(err, errExited) {
		t.Fatalf("start with a bad apiserver flag: %v; want the apiserver's exit", err)
	}
	if !strings.Contains(err.Error(), "unknown flag: --no-such-flag") {
		t.Errorf("error %q does not show the apiserver's log", err)
	}
}
