package runtime_test

import (
	"strings"
	"testing"

	kuberuntime "github.com/meridian-gw/meridian/kube/runtime"
	"github.com/meridian-gw/meridian/scheduler"
)

// What only Kubernetes code can check (quantities, label syntax, a pool
// without kubernetes settings) is refused when the runtime starts, each
// error naming the field.
func TestCheckConfigNamesTheField(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{`pools: [{name: cpu, capacity: 1}]`, "pools[0].kubernetes: missing for pool \"cpu\""},
		{`pools: [{name: cpu, capacity: 1, kubernetes: {image: nb, resources: {requests: {cpu: four}}}}]`, `pools[0].kubernetes.resources.requests.cpu = "four"`},
		{`pools: [{name: cpu, capacity: 1, kubernetes: {image: nb, resources: {limits: {"bad name!": 1}}}}]`, `resource name "bad name!"`},
		{`pools: [{name: cpu, capacity: 1, kubernetes: {image: nb, nodeSelector: {"a b": x}}}]`, `pools[0].kubernetes.nodeSelector: key "a b"`},
		{`pools: [{name: cpu, capacity: 1, kubernetes: {image: nb, nodeSelector: {pool: "x y"}}}]`, `pools[0].kubernetes.nodeSelector.pool = "x y"`},
		{`pools: [{name: cpu, capacity: 1, kubernetes: {image: nb, env: {"1X": z}}}]`, `pools[0].kubernetes.env: name "1X"`},
		{`pools: [{name: cpu, capacity: 1, kubernetes: {image: nb, volume: {size: big}}}]`, `pools[0].kubernetes.volume.size = "big"`},
		{`pools: [{name: cpu, capacity: 1, kubernetes: {image: nb, volume: {storageClass: "Fast SSD"}}}]`, `volume.storageClass = "Fast SSD"`},
		{`pools: [{name: gpu, capacity: fromCluster, kubernetes: {image: nb, resources: {limits: {nvidia.com/gpu: 0}}}}]`, "asks for no nvidia.com/gpu"},
	} {
		cfg, err := scheduler.ParseConfig([]byte(tc.yaml))
		if err == nil {
			err = kuberuntime.CheckConfig(cfg)
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v; want an error containing %q", tc.yaml, err, tc.want)
		}
	}
}
