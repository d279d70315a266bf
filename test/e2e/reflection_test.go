package e2e

import (
	"go/build"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGrpcurlThroughTheEdge runs the grpcurl line that `meridian dev`
// prints, through the edge and its gateways. Regression: it failed with
// "server does not support the reflection API"; the gateways now answer
// reflection themselves (--reflection=authenticated in meridian dev) and
// the edge relays it like any gRPC call.
func TestGrpcurlThroughTheEdge(t *testing.T) {
	grpcurl, err := exec.LookPath("grpcurl")
	if err != nil {
		grpcurl = filepath.Join(build.Default.GOPATH, "bin", "grpcurl")
		if _, err := os.Stat(grpcurl); err != nil {
			t.Fatal("grpcurl is needed: scripts/ensure-tools.sh installs it")
		}
	}
	d := startDev(t)
	run := func(args ...string) string {
		t.Helper()
		args = append([]string{"-cacert", d.info.CA, "-max-time", "20", "-H", "authorization: Bearer " + d.info.Token}, args...)
		out, err := exec.Command(grpcurl, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("grpcurl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// The line meridian dev prints, as a person pastes it.
	if out := run(d.info.Edge, "meridian.scheduler.v1.SessionScheduler/GetQuota"); !strings.Contains(out, `"owner": "alice"`) {
		t.Errorf("grpcurl GetQuota through the edge: %s", out)
	}
	if out := run(d.info.Edge, "list"); !strings.Contains(out, "meridian.scheduler.v1.SessionScheduler") || !strings.Contains(out, "grpc.health.v1.Health") {
		t.Errorf("grpcurl list through the edge: %s", out)
	}
	if out := run(d.info.Regions[0].Gateway, "describe", "meridian.scheduler.v1.Session"); !strings.Contains(out, "message Session") {
		t.Errorf("grpcurl describe at a gateway: %s", out)
	}
}
