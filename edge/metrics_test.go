package edge

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metric returns the value of the first sample of name whose labels
// contain every one of labels (`key="value"`), or -1.
func metric(body, name string, labels ...string) float64 {
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		if err != nil {
			return -1
		}
		return v
	}
	return -1
}

// The admin port's /metrics counts what the edge did: requests by
// serving region and code, failovers, and the relay's connections.
func TestMetricsCountRequestsAndFailovers(t *testing.T) {
	r := newRig(t, "GRPC")
	for range 3 {
		if got, err := r.call("/test.Echo/GetRegion"); err != nil || got != "us-central1" {
			t.Fatalf("healthy: %q, %v", got, err)
		}
	}
	r.gws["us-central1"].kill()
	if got, err := r.call("/test.Echo/GetRegion"); err != nil || got != "europe-west1" {
		t.Fatalf("after the kill: %q, %v", got, err)
	}
	_, admin := r.ed.Addr()
	scrape := func() string {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return string(b)
	}
	// A call is counted when the relay has finished it, which may be just
	// after the client has its answer: wait for the last one.
	var body string
	waitUntil(t, 5*time.Second, "the failover to be counted", func() bool {
		body = scrape()
		return metric(body, "meridian_edge_failover_requests_total", `region="europe-west1"`) >= 1
	})
	for _, c := range []struct {
		name   string
		labels []string
		want   func(float64) bool
		says   string
	}{
		{"meridian_edge_requests_total", []string{`code="OK"`, `region="us-central1"`}, func(v float64) bool { return v == 3 }, "3"},
		{"meridian_edge_requests_total", []string{`code="OK"`, `region="europe-west1"`}, func(v float64) bool { return v == 1 }, "1"},
		{"meridian_edge_failover_requests_total", []string{`region="europe-west1"`}, func(v float64) bool { return v == 1 }, "1"},
		{"meridian_edge_h2_connections", nil, func(v float64) bool { return v == 1 }, "1"},
		{"meridian_edge_h2_connections_total", nil, func(v float64) bool { return v >= 1 }, ">= 1"},
	} {
		if v := metric(body, c.name, c.labels...); !c.want(v) {
			t.Errorf("%s%v = %v, want %s", c.name, c.labels, v, c.says)
		}
	}
}
