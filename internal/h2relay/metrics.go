package h2relay

import (
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports the server's Stats as Prometheus metrics named
// <prefix>_h2_connections (open now), <prefix>_h2_connections_total,
// <prefix>_h2_connection_errors_total{code} (connections ended for a
// client's protocol error or abuse) and <prefix>_h2_floods_total{kind}
// (those of them cut off for crossing a limit: rapid_reset, ping,
// settings, settings_size, control_frames, queued_bytes, write_stall).
func (s *Server) Collector(prefix string) prometheus.Collector {
	return &collector{s: s,
		open:     prometheus.NewDesc(prefix+"_h2_connections", "Native gRPC (HTTP/2) client connections open.", nil, nil),
		accepted: prometheus.NewDesc(prefix+"_h2_connections_total", "Native gRPC (HTTP/2) client connections served.", nil, nil),
		errors: prometheus.NewDesc(prefix+"_h2_connection_errors_total",
			"Client connections ended for a protocol error or abuse, by the GOAWAY code sent (ENHANCE_YOUR_CALM: rapid reset, ping or SETTINGS floods).",
			[]string{"code"}, nil),
		floods: prometheus.NewDesc(prefix+"_h2_floods_total",
			"Client connections cut off for crossing an HTTP/2 limit, by kind (rapid_reset, ping, settings, settings_size, control_frames, queued_bytes, write_stall).",
			[]string{"kind"}, nil),
	}
}

type collector struct {
	s                              *Server
	open, accepted, errors, floods *prometheus.Desc
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.open
	ch <- c.accepted
	ch <- c.errors
	ch <- c.floods
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.Stats()
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(st.Open))
	ch <- prometheus.MustNewConstMetric(c.accepted, prometheus.CounterValue, float64(st.Accepted))
	for code, n := range st.Errors {
		ch <- prometheus.MustNewConstMetric(c.errors, prometheus.CounterValue, float64(n), strings.ToLower(code.String()))
	}
	for kind, n := range st.Floods {
		ch <- prometheus.MustNewConstMetric(c.floods, prometheus.CounterValue, float64(n), kind)
	}
}
