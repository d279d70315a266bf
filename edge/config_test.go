package edge

import (
	"math"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/clock"
)

const testClusters = `
---
apiVersion: meridian.dev/v1alpha1
kind: Cluster
metadata: {name: us-1}
spec:
  region: us-central1
  endpoints: [{address: "127.0.0.1:9443"}]
---
apiVersion: meridian.dev/v1alpha1
kind: Cluster
metadata: {name: eu-1}
spec:
  region: europe-west1
  endpoints: [{address: "127.0.0.1:9444", maxInFlight: 10}]
`

func seedPlus(t *testing.T, extra string) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/seed.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return append(b, []byte(extra)...)
}

func TestSeedResourcesLoadUnchanged(t *testing.T) {
	c, err := Parse("seed", seedPlus(t, testClusters))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Warnings) != 0 {
		t.Fatalf("the seed's YAML produced warnings: %v", c.Warnings)
	}
	mci := c.Ingresses[0]
	if mci.Metadata.Name != "session-scheduler-mci" || mci.Spec.Template.Spec.Backend.ServiceName != "session-scheduler-svc" ||
		mci.Spec.Template.Spec.Backend.ServicePort != "443" || mci.Spec.Template.Spec.TLS[0].SecretName != "session-scheduler-tls" {
		t.Fatalf("MCI parsed as %+v", mci.Spec.Template.Spec)
	}
	svc := c.Services["session-scheduler-svc"]
	bcs, _ := svc.backendConfigs()
	aps, _ := svc.appProtocols()
	if bcs["ssl"] != "session-scheduler-svc-backend" || aps["ssl"] != "HTTP2" {
		t.Fatalf("MCS annotations: %v %v", bcs, aps)
	}
	s := resolveSettings(&c.BackendConfigs["session-scheduler-svc-backend"].Spec, aps["ssl"])
	if s.checkType != "HTTPS" || s.path != "/v1/health" || s.interval != time.Second || s.unhealthy != 2 || s.healthy != 1 {
		t.Fatalf("BackendConfig resolved to %+v", s)
	}
}

func TestConfigErrorsNameResourceAndField(t *testing.T) {
	for _, tc := range []struct{ yaml, want string }{
		{testClusters, "no MultiClusterIngress"},
		{strings.Replace(string(seedPlus(t, testClusters)), "serviceName: session-scheduler-svc", "serviceName: nope", 1),
			`MultiClusterIngress session-scheduler-mci: spec.template.spec.backend.serviceName = "nope": no such MultiClusterService`},
		{strings.Replace(string(seedPlus(t, testClusters)), "servicePort: 443", "servicePort: 8443", 1), "servicePort = 8443: MultiClusterService session-scheduler-svc has no such port"},
		{strings.Replace(string(seedPlus(t, testClusters)), `"ssl":"session-scheduler-svc-backend"`, `"ssl":"missing-bc"`, 1), `names BackendConfig "missing-bc", which is not defined`},
		{strings.Replace(string(seedPlus(t, testClusters)), "type: HTTPS", "type: TCP", 1), `BackendConfig session-scheduler-svc-backend: spec.healthCheck.type = "TCP"`},
		{strings.Replace(string(seedPlus(t, testClusters)), "requestPath: /v1/health", "requestPath: v1/health", 1), "spec.healthCheck.requestPath"},
		{strings.Replace(string(seedPlus(t, testClusters)), `address: "127.0.0.1:9443"`, `address: "nowhere"`, 1), `Cluster us-1: spec.endpoints[0].address = "nowhere": want host:port`},
		{strings.Replace(string(seedPlus(t, testClusters)), "region: us-central1", "region: \"\"", 1), "Cluster us-1: spec.region is empty"},
		{strings.Replace(string(seedPlus(t, testClusters)), "maxInFlight: 10", "maxRatePerEndpoint: -5", 1), "Cluster eu-1: spec.endpoints[0].maxRatePerEndpoint = -5: want requests per second"},
		{string(seedPlus(t, testClusters)) + "---\nkind: MultiClusterService\nmetadata: {name: x}\nspec:\n  template: {spec: {ports: [{name: a, port: 1}]}}\n  clusters: [{link: us-central1/ghost}]\n",
			`MultiClusterService x: spec.clusters[0].link = "us-central1/ghost": no Cluster named ghost`},
		{string(seedPlus(t, testClusters)) + "---\nmetadata: {name: x}\n", "no kind"},
	} {
		_, err := Parse("t.yaml", []byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("want an error containing %q, got %v", tc.want, err)
		}
	}
}

func TestUnsupportedFieldsAreReportedNotIgnored(t *testing.T) {
	y := strings.Replace(string(seedPlus(t, testClusters)), "  healthCheck:", "  iap: {enabled: true}\n  healthCheck:", 1)
	y = strings.Replace(y, "networking.gke.io/static-ip: GLOBAL_IP_ADDRESS", "networking.gke.io/static-ip: GLOBAL_IP_ADDRESS\n    networking.gke.io/pre-shared-certs: cert1", 1)
	c, err := Parse("t.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	all := strings.Join(c.Warnings, "\n")
	if !strings.Contains(all, `unknown field "iap"`) || !strings.Contains(all, "pre-shared-certs") {
		t.Fatalf("warnings do not report the unsupported fields:\n%s", all)
	}
}

func reg(name string, healthy, total int) *region {
	r := &region{name: name}
	for i := range total {
		e := &endpoint{id: name + string(rune('a'+i)), region: name}
		e.healthy.Store(i < healthy)
		r.eps = append(r.eps, e)
	}
	return r
}

func TestLoadsFollowOverprovisioning(t *testing.T) {
	for _, tc := range []struct {
		h    [][2]int
		want []float64
	}{
		{[][2]int{{4, 4}, {4, 4}}, []float64{1, 0}},
		{[][2]int{{3, 4}, {4, 4}}, []float64{1, 0}},     // 75% × 1.4 > 1: keeps everything
		{[][2]int{{2, 4}, {4, 4}}, []float64{0.7, 0.3}}, // 50% × 1.4
		{[][2]int{{0, 4}, {4, 4}}, []float64{0, 1}},     // dead region: all to the next
		{[][2]int{{1, 4}, {1, 4}}, []float64{0.5, 0.5}}, // degraded everywhere: normalised
		{[][2]int{{0, 2}, {0, 2}, {2, 2}}, []float64{0, 0, 1}},
	} {
		var rs []*region
		for i, h := range tc.h {
			rs = append(rs, reg(string(rune('A'+i)), h[0], h[1]))
		}
		got := loads(rs)
		for i := range got {
			if math.Abs(got[i]-tc.want[i]) > 1e-9 {
				t.Errorf("healthy %v: loads %v, want %v", tc.h, got, tc.want)
				break
			}
		}
	}
}

func TestPickLocalFirstSpillsOnCapacityAndPanics(t *testing.T) {
	us, eu, asia := reg("us", 2, 2), reg("eu", 1, 1), reg("asia", 1, 1)
	eu.eps[0].rtt.Store(int64(5 * time.Millisecond))
	asia.eps[0].rtt.Store(int64(50 * time.Millisecond))
	p := &pool{local: "asia", regions: []*region{us, eu, asia}}
	p.all = append(append(append([]*endpoint{}, us.eps...), eu.eps...), asia.eps...)
	if o := p.order(); o[0].name != "asia" || o[1].name != "eu" || o[2].name != "us" {
		t.Fatalf("order %s %s %s; want local first, then by RTT (eu 5ms, us unknown)", o[0].name, o[1].name, o[2].name)
	}
	p.local = "us"
	for range 50 {
		e, failover := p.pick(nil, "")
		if e.region != "us" || failover {
			t.Fatalf("healthy local region: picked %s", e.region)
		}
	}
	// Full local region spills to the next one.
	for _, e := range us.eps {
		e.maxInFlight = 1
		e.inflight.Store(1)
	}
	if e, failover := p.pick(nil, ""); e.region != "eu" || !failover {
		t.Fatalf("local region at capacity: picked %s", e.region)
	}
	// So does a local region at its rate cap (GCRA: after 100 ms worth of
	// requests at once, no more until time passes).
	clk := clock.NewFake(time.Unix(1_800_000_000, 0))
	for _, e := range us.eps {
		e.maxInFlight = 0
		e.inflight.Store(0)
		e.clock = clk
		e.setMaxRate(100)
		for range 11 { // 100 ms at 100/s, and one more
			e.started()
		}
	}
	if e, failover := p.pick(nil, ""); e.region != "eu" || !failover {
		t.Fatalf("local region at its rate cap: picked %s", e.region)
	}
	clk.Advance(150 * time.Millisecond)
	if e, _ := p.pick(nil, ""); e.region != "us" {
		t.Fatalf("local region under its rate cap again: picked %s", e.region)
	}
	for _, e := range us.eps {
		e.maxInFlight = 1
		e.inflight.Store(1)
	}
	// Tried endpoints are excluded.
	if e, _ := p.pick(map[*endpoint]bool{eu.eps[0]: true}, ""); e.region != "asia" {
		t.Fatalf("after eu was tried: %s", e.region)
	}
	// Nothing healthy: panic mode still answers.
	for _, e := range p.all {
		e.healthy.Store(false)
	}
	if e, _ := p.pick(nil, ""); e == nil {
		t.Fatal("panic mode returned nothing")
	}
	// p2c prefers the less loaded of two.
	a, b := &endpoint{id: "a"}, &endpoint{id: "b"}
	a.inflight.Store(10)
	wins := 0
	for range 200 {
		if choose([]*endpoint{a, b}, "") == b {
			wins++
		}
	}
	if wins != 200 {
		t.Fatalf("least-request chose the busier endpoint too often: %d/200 to the idle one", wins)
	}
	// Affinity is stable.
	first, again := choose([]*endpoint{a, b}, "client-1"), choose([]*endpoint{a, b}, "client-1")
	if first != again {
		t.Fatal("affinity not stable")
	}
}

func TestIdempotencyRules(t *testing.T) {
	id, err := parseIdempotent(DefaultIdempotent)
	if err != nil {
		t.Fatal(err)
	}
	withReq := []byte{0x0a, 3, 'c', 'p', 'u', 0x12, 2, 'r', '1'} // pool=cpu, request_id=r1
	noReq := []byte{0x0a, 3, 'c', 'p', 'u'}
	for _, c := range []struct {
		m     string
		msg   []byte
		retry bool
	}{
		{"/meridian.scheduler.v1.SessionScheduler/GetSession", nil, true},
		{"/meridian.scheduler.v1.SessionScheduler/ListSessions", nil, true},
		{"/grpc.health.v1.Health/Check", nil, true},
		{"/meridian.scheduler.v1.SessionScheduler/CreateSession", withReq, true},
		{"/meridian.scheduler.v1.SessionScheduler/CreateSession", noReq, false},
		{"/meridian.scheduler.v1.SessionScheduler/WatchSession", nil, false},
		{"/other.Service/Delete", nil, false},
	} {
		if got := id.grpcOK(c.m, c.msg); got != c.retry {
			t.Errorf("%s: retry %v, want %v", c.m, got, c.retry)
		}
	}
	if !id.httpOK("POST", "/v1/sessions", []byte(`{"pool":"cpu","requestId":"r"}`)) || id.httpOK("POST", "/v1/sessions", []byte(`{"pool":"cpu"}`)) ||
		!id.httpOK("GET", "/v1/anything", nil) || !id.httpOK("POST", "/v1/sessions/abc:stop", nil) {
		t.Fatal("REST idempotency rules")
	}
}

func FuzzParse(f *testing.F) {
	b, _ := os.ReadFile("testdata/seed.yaml")
	f.Add(append(b, testClusters...))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = Parse("fuzz", b) // must not panic
	})
}
