// Package kubetest starts real Kubernetes control planes for tests: etcd,
// kube-apiserver, kube-controller-manager and kube-scheduler, with kwok
// simulating the nodes and their kubelets. Pods are scheduled, become
// Running and Ready with IPs from the cluster's pod CIDR, and the real
// EndpointSlice controller publishes them. A test then binds real servers
// on those pod IPs.
//
// Every process runs on 127.0.0.1 ports inside a network namespace of the
// test binary's own, where all of 10.244.0.0/16 is local: EndpointSlices
// refuse loopback addresses, and test traffic must stay on this machine, so
// pods get 10.244.x.y addresses that nothing outside the namespace can
// reach. A test package opts in with
//
//	func TestMain(m *testing.M) { kubetest.Main(m) }
//
// and its tests start as many clusters as they need:
//
//	c := kubetest.Start(t, kubetest.Options{Name: "member-a", Nodes: []kubetest.Node{
//		{Name: "gpu-1", Capacity: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("4")}},
//	}})
//	// c.Client (client-go), c.Config (*rest.Config), c.Kubeconfig (a file)
//	pods := c.WaitPodsReady(t, "default", "app=web", 3)
//	ln, _ := net.Listen("tcp", net.JoinHostPort(pods[0].Status.PodIP, "8080"))
//
// Everything stops when the test ends, and dies with the test binary.
//
// The binaries come from $MERIDIAN_KUBE_BIN, or else the directory that
// scripts/ensure-kube.sh (make kube-tools) fills and prints:
// ~/.cache/meridian/kube-v1.37.2 (or under $XDG_CACHE_HOME).
//
// Why not controller-runtime's envtest: it runs etcd and kube-apiserver
// only, and these tests need the controllers (EndpointSlice, Deployment,
// ReplicaSet, garbage collection), the scheduler and nodes. kubetest follows
// its lessons (free ports, generated certificates, a readiness wait per
// process, logs kept for failures) and drives the processes itself.
package kubetest
