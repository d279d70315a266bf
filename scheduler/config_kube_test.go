package scheduler

import (
	"strings"
	"testing"
	"time"
)

// The pools' kubernetes settings: what this package can check without
// Kubernetes code is refused at parse time, naming the field and value.
func TestBadKubernetesConfigNamesFieldAndValue(t *testing.T) {
	pool := func(k string) string { return `pools: [{name: gpu, capacity: 1, kubernetes: ` + k + `}]` }
	for _, tc := range []struct{ yaml, want string }{
		{pool(`{}`), "pools[0].kubernetes.image: empty"},
		{pool(`{image: nb, imagePullPolicy: Sometimes}`), `pools[0].kubernetes.imagePullPolicy = "Sometimes"`},
		{pool(`{image: nb, command: [jupyter, "--IdentityProvider.token={token}"]}`), "pools[0].kubernetes.command[1]"},
		{pool(`{image: nb, args: ["{token}"]}`), "contains {token}"},
		{pool(`{image: nb, port: 70000}`), "pools[0].kubernetes.port = 70000"},
		{pool(`{image: nb, env: {JUPYTER_TOKEN: x}}`), "pools[0].kubernetes.env.JUPYTER_TOKEN: set by the runtime"},
		{pool(`{image: nb, tolerations: [{operator: Equal}]}`), "pools[0].kubernetes.tolerations[0]: operator Equal needs a key"},
		{pool(`{image: nb, tolerations: [{key: k, operator: Exists, value: v}]}`), "operator Exists takes no value"},
		{pool(`{image: nb, tolerations: [{key: k, effect: NoSchedule, tolerationSeconds: 5}]}`), "tolerationSeconds: only for effect NoExecute"},
		{pool(`{image: nb, volume: {policy: per-team}}`), `pools[0].kubernetes.volume.policy = "per-team"`},
		{pool(`{image: nb, volume: {name: Home}}`), `pools[0].kubernetes.volume.name = "Home"`},
		{pool(`{image: nb, volume: {mountPath: /tmp}}`), `pools[0].kubernetes.volume.mountPath = "/tmp"`},
		{pool(`{image: nb, volume: {accessMode: ReadOnlyMany}}`), `accessMode = "ReadOnlyMany"`},
		{pool(`{image: nb, securityContext: {runAsUser: 0}}`), "runAsUser = 0 with runAsNonRoot"},
		{pool(`{image: nb, terminationGracePeriod: 5m}`), "pools[0].kubernetes.terminationGracePeriod = 5m0s"},
		{pool(`{image: nb, readinessPath: api}`), `readinessPath = "api"`},
		{pool(`{image: nb, gpus: 2}`), `unknown field "gpus"`},
		{`pools: [{name: gpu, capacity: fromCluster}]`, "pools[0].capacity = fromCluster: needs pools[0].kubernetes"},
		{`pools: [{name: gpu, capacity: fromCluster, kubernetes: {image: nb}}]`, "asks for no nvidia.com/gpu"},
		{`pools: [{name: gpu, capacity: lots}]`, `capacity = "lots": want a number of slots or "fromCluster"`},
	} {
		_, err := ParseConfig([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseConfig(%q) = %v; want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}

func TestKubernetesDefaults(t *testing.T) {
	c, err := ParseConfig([]byte(`
pools:
- name: gpu
  capacity: fromCluster
  capacityByRegion: {asia-east1: 0}
  kubernetes: {image: nb, resources: {limits: {nvidia.com/gpu: 1, cpu: 4}}}`))
	if err != nil {
		t.Fatal(err)
	}
	p, _ := c.Pool("gpu")
	k := p.Kubernetes
	if k.Port != 8888 || k.TerminationGracePeriod.Duration != 30*time.Second || k.CapacityResource != "nvidia.com/gpu" {
		t.Errorf("defaults: port %d, grace %s, capacityResource %q; want 8888, 30s, nvidia.com/gpu", k.Port, k.TerminationGracePeriod, k.CapacityResource)
	}
	v := k.Volume
	if v.Policy != VolumePerUser || v.Name != "home" || v.Size != "10Gi" || v.AccessMode != "ReadWriteOnce" || v.MountPath != "/home/jovyan" {
		t.Errorf("volume defaults: %+v", v)
	}
	if *k.SecurityContext.RunAsUser != 1000 || *k.SecurityContext.FSGroup != 100 || !*k.SecurityContext.ReadOnlyRootFilesystem {
		t.Errorf("security defaults: %+v", k.SecurityContext)
	}
	if k.Resources.Limits["cpu"] != "4" {
		t.Errorf("a number as a quantity: cpu = %q; want \"4\"", k.Resources.Limits["cpu"])
	}
	if !p.CapacityFromCluster || p.FixedIn("us-central1") || !p.FixedIn("asia-east1") {
		t.Errorf("fromCluster: %v, fixed in us-central1 %v, in asia-east1 %v; want true, false, true", p.CapacityFromCluster, p.FixedIn("us-central1"), p.FixedIn("asia-east1"))
	}
}
