package gateway

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"testing"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// syncBuffer is an access log the test reads while the gateway writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Over quota, a native gRPC call gets RESOURCE_EXHAUSTED and Retry-After,
// as the REST one gets 429.
func TestGRPCQuotaSaysWhenToRetry(t *testing.T) {
	is := newIssuer(t)
	quota := `
metrics:
- {name: list-requests, metric_kind: DELTA, value_type: INT64}
quota:
  limits:
  - {name: list-per-minute, metric: list-requests, unit: "1/min/{project}", values: {STANDARD: 2}}
  metric_rules:
  - {selector: meridian.scheduler.v1.SessionScheduler.ListSessions, metric_costs: {list-requests: 1}}
`
	h := newGW(t, func(o *Options) { o.ServiceConfig = serviceConfig(t, is, "/jwks", quota) })
	h.is = is
	gc := h.grpcClient()
	tok := is.token(t, "alice")
	for i := range 2 {
		if _, err := gc.ListSessions(bearer(tok), &schedulerv1.ListSessionsRequest{}); err != nil {
			t.Fatalf("call %d within quota: %v", i, err)
		}
	}
	// A trailers-only response: grpc-go shows its fields as trailers.
	var tr metadata.MD
	_, err := gc.ListSessions(bearer(tok), &schedulerv1.ListSessionsRequest{}, grpc.Trailer(&tr))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "list-per-minute") || len(tr.Get("retry-after")) != 1 {
		t.Fatalf("over quota: %v, trailers %v; want RESOURCE_EXHAUSTED naming the limit, with retry-after", err, tr)
	}
}

// While the gateway drains, health checks say NOT_SERVING (answered by
// the gateway itself), so that load balancers stop sending before it stops.
func TestDrainingHealthOverGRPC(t *testing.T) {
	h := newGW(t)
	conn, err := grpc.NewClient(h.ssl, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: h.roots})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	check := func() healthpb.HealthCheckResponse_ServingStatus {
		r, err := hc.Check(bearer(""), &healthpb.HealthCheckRequest{})
		if err != nil {
			t.Fatalf("health check: %v", err)
		}
		return r.GetStatus()
	}
	if s := check(); s != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("serving: %v", s)
	}
	h.g.draining.Store(true)
	if s := check(); s != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("draining: %v, want NOT_SERVING", s)
	}
	// Other calls still go through while draining.
	tok := h.is.token(t, "alice")
	if _, err := h.grpcClient().ListSessions(bearer(tok), &schedulerv1.ListSessionsRequest{}); err != nil {
		t.Fatalf("a call while draining: %v", err)
	}
}

// An HTTP/2 connection whose first request was REST is served by net/http;
// a native gRPC call later on it must still work (grpc-go serves it there).
func TestGRPCAfterRESTOnOneConnection(t *testing.T) {
	h := newGW(t)
	tok := h.is.token(t, "alice")
	if r := h.do(h.h2, "GET", h.tls("/v1/quota"), tok, ""); r.code != 200 {
		t.Fatalf("REST first: %d %s", r.code, r.body)
	}
	reused := false
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
	frame := []byte{0, 0, 0, 0, 0} // an empty HealthCheckRequest
	req, _ := http.NewRequest("POST", h.tls("/grpc.health.v1.Health/Check"), bytes.NewReader(frame))
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("Te", "trailers")
	resp, err := h.h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if !reused || resp.ProtoMajor != 2 {
		t.Fatalf("the gRPC call did not share the REST call's HTTP/2 connection (reused %v, %s)", reused, resp.Proto)
	}
	// One message: status SERVING (field 1 = 1).
	if resp.Trailer.Get("Grpc-Status") != "0" || !bytes.Equal(body, []byte{0, 0, 0, 0, 2, 8, 1}) {
		t.Fatalf("gRPC after REST: grpc-status %q, body %x", resp.Trailer.Get("Grpc-Status"), body)
	}
}

// The metrics a production dashboard reads, scraped from the status port:
// requests by protocol, selector and code; auth failures by reason; JWKS
// fetches; the relay's connections.
func TestMetricsCountWhatHappened(t *testing.T) {
	h := newGW(t)
	gc := h.grpcClient()
	tok := h.is.token(t, "alice")
	for range 2 {
		if _, err := gc.ListSessions(bearer(tok), &schedulerv1.ListSessionsRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := gc.ListSessions(bearer(""), &schedulerv1.ListSessionsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous call: %v", err)
	}
	if r := h.do(h.h1, "GET", h.tls("/v1/sessions"), tok, ""); r.code != 200 {
		t.Fatalf("REST: %d", r.code)
	}
	var body string
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + h.g.Addr("status") + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return strings.Contains(body, `meridian_gateway_requests_total{code="Unauthenticated"`)
	}, "metrics of the calls")
	for _, want := range []string{
		`meridian_gateway_requests_total{code="OK",protocol="grpc",selector="meridian.scheduler.v1.SessionScheduler.ListSessions"} 2`,
		`meridian_gateway_requests_total{code="OK",protocol="rest",selector="meridian.scheduler.v1.SessionScheduler.ListSessions"} 1`,
		`meridian_gateway_requests_total{code="Unauthenticated",protocol="grpc",selector="meridian.scheduler.v1.SessionScheduler.ListSessions"} 1`,
		`meridian_gateway_auth_failures_total{reason="missing"} 1`,
		`meridian_gateway_jwks_fetches_total{provider=`,
		`meridian_gateway_request_duration_seconds_count{protocol="grpc",selector="meridian.scheduler.v1.SessionScheduler.ListSessions"} 3`,
		`meridian_gateway_h2_connections 1`,
		`meridian_gateway_h2_connections_total 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
