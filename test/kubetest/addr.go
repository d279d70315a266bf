package kubetest

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"sync"
)

// addressPlan hands out what the clusters of one test binary share: its
// network namespace, so pod CIDRs must not overlap, node IPs must lie
// outside every pod CIDR, and ports must not collide. It is a package
// variable because the namespace it describes is the process's.
type addressPlan struct {
	mu       sync.Mutex
	used     map[string]clusterAddrs // by cluster name
	nextPort int
}

type clusterAddrs struct {
	podCIDR netip.Prefix
	nodeIP  netip.Addr
}

var addrs = &addressPlan{used: map[string]clusterAddrs{}, nextPort: firstPort}

// Ports come from below the kernel's ephemeral range (32768 and up), so a
// client's source port never takes a port before its server binds it,
// nor while an apiserver is stopped for a restart.
const (
	firstPort = 20000
	lastPort  = 32000
)

var podNetwork = netip.MustParsePrefix(PodNetwork)

// reserve checks or picks the cluster's name, pod CIDR and node IP: by
// default the first free n in 1..254 gives 10.244.n.0/24, 10.244.0.n and
// the name cluster-n.
func (p *addressPlan) reserve(name, podCIDR, nodeIP string) (string, clusterAddrs, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, err := p.pick(podCIDR, nodeIP)
	if err != nil {
		return "", clusterAddrs{}, err
	}
	if name == "" {
		name = fmt.Sprintf("cluster-%d", a.podCIDR.Addr().As4()[2])
	}
	if _, dup := p.used[name]; dup {
		return "", clusterAddrs{}, fmt.Errorf("Options.Name = %q: a cluster of that name is running; give each cluster its own name", name)
	}
	p.used[name] = a
	return name, a, nil
}

func (p *addressPlan) pick(podCIDR, nodeIP string) (clusterAddrs, error) {
	var a clusterAddrs
	if podCIDR == "" && nodeIP == "" {
		for n := 1; n < 255; n++ {
			a = clusterAddrs{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 244, byte(n), 0}), 24), netip.AddrFrom4([4]byte{10, 244, 0, byte(n)})}
			if p.conflict(a) == nil {
				return a, nil
			}
		}
		return clusterAddrs{}, fmt.Errorf("no free pod CIDR left in %s: stop some clusters", PodNetwork)
	}
	var err error
	if a.podCIDR, err = netip.ParsePrefix(podCIDR); err != nil || !a.podCIDR.Addr().Is4() || a.podCIDR != a.podCIDR.Masked() {
		return clusterAddrs{}, fmt.Errorf("Options.PodCIDR = %q: want an IPv4 network such as 10.244.1.0/24 (inside %s); set both PodCIDR and NodeIP or neither", podCIDR, PodNetwork)
	}
	if a.nodeIP, err = netip.ParseAddr(nodeIP); err != nil || !a.nodeIP.Is4() {
		return clusterAddrs{}, fmt.Errorf("Options.NodeIP = %q: want an IPv4 address such as 10.244.0.1 (inside %s, outside the pod CIDR); set both PodCIDR and NodeIP or neither", nodeIP, PodNetwork)
	}
	switch {
	case !podNetwork.Contains(a.podCIDR.Addr()) || a.podCIDR.Bits() < podNetwork.Bits():
		return clusterAddrs{}, fmt.Errorf("Options.PodCIDR = %s: must lie inside %s, the only addresses local in the test's network namespace", a.podCIDR, PodNetwork)
	case a.podCIDR.Bits() > 28:
		return clusterAddrs{}, fmt.Errorf("Options.PodCIDR = %s: too small for pods; use a /24", a.podCIDR)
	case !podNetwork.Contains(a.nodeIP):
		return clusterAddrs{}, fmt.Errorf("Options.NodeIP = %s: must lie inside %s", a.nodeIP, PodNetwork)
	case a.podCIDR.Contains(a.nodeIP):
		return clusterAddrs{}, fmt.Errorf("Options.NodeIP = %s: inside Options.PodCIDR %s, where kwok hands out pod IPs; pick one outside it", a.nodeIP, a.podCIDR)
	}
	return a, p.conflict(a)
}

// conflict says how a overlaps a running cluster's addresses, if it does.
func (p *addressPlan) conflict(a clusterAddrs) error {
	for other, b := range p.used {
		switch {
		case a.podCIDR.Overlaps(b.podCIDR):
			return fmt.Errorf("Options.PodCIDR = %s overlaps cluster %q's pod CIDR %s: pod IPs would be ambiguous", a.podCIDR, other, b.podCIDR)
		case a.podCIDR.Contains(b.nodeIP):
			return fmt.Errorf("Options.PodCIDR = %s contains cluster %q's node IP %s", a.podCIDR, other, b.nodeIP)
		case b.podCIDR.Contains(a.nodeIP):
			return fmt.Errorf("Options.NodeIP = %s lies in cluster %q's pod CIDR %s", a.nodeIP, other, b.podCIDR)
		}
	}
	return nil
}

func (p *addressPlan) release(name string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.used, name)
}

// port returns a 127.0.0.1 port that nothing listens on.
func (p *addressPlan) port() (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for ; p.nextPort <= lastPort; p.nextPort++ {
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p.nextPort)))
		if err != nil {
			continue
		}
		ln.Close()
		p.nextPort++
		return p.nextPort - 1, nil
	}
	return 0, fmt.Errorf("no free port left in %d–%d of the test's network namespace", firstPort, lastPort)
}
