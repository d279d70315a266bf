package edge

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests    *prometheus.CounterVec
	latency     *prometheus.HistogramVec
	retries     *prometheus.CounterVec
	ejections   *prometheus.CounterVec
	transitions *prometheus.CounterVec
	failovers   *prometheus.CounterVec
	reloads     *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_edge_requests_total",
			Help: "Requests by pool, serving cluster and region, and gRPC code."}, []string{"pool", "cluster", "region", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "meridian_edge_request_duration_seconds",
			Help: "Request latency by serving region.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}, []string{"region"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_edge_retries_total",
			Help: "Requests retried on another endpoint, by pool and reason."}, []string{"pool", "reason"}),
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_edge_ejections_total",
			Help: "Endpoints ejected by outlier detection, by cluster."}, []string{"cluster"}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_edge_health_transitions_total",
			Help: "Endpoint health transitions by region and kind (healthy, unhealthy, draining, ejected, readmitted)."}, []string{"region", "kind"}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_edge_failover_requests_total",
			Help: "Requests served by a region other than the most preferred, by serving region."}, []string{"region"}),
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_edge_config_reloads_total",
			Help: "Configuration reloads by result."}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.latency, m.retries, m.ejections, m.transitions, m.failovers, m.reloads)
	}
	return m
}

func (m *metrics) request(pool, cluster, region, code string, d time.Duration) {
	if region == "" {
		region = "none"
	}
	m.requests.WithLabelValues(pool, cluster, region, code).Inc()
	m.latency.WithLabelValues(region).Observe(d.Seconds())
}

// Event is one entry of the timeline the dashboard shows.
type Event struct {
	Time     time.Time `json:"time"`
	Kind     string    `json:"kind"` // healthy, unhealthy, draining, serving, ejected, readmitted, reload, reload-failed
	Region   string    `json:"region,omitempty"`
	Endpoint string    `json:"endpoint,omitempty"`
	Detail   string    `json:"detail,omitempty"`
}

type eventLog struct {
	mu  sync.Mutex
	max int
	evs []Event
}

func newEventLog(n int) *eventLog { return &eventLog{max: n} }

func (l *eventLog) add(e Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, e)
	if len(l.evs) > l.max {
		l.evs = l.evs[len(l.evs)-l.max:]
	}
}

func (l *eventLog) list() []Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append(make([]Event, 0, len(l.evs)), l.evs...) // [] in JSON, never null
}

// event records a transition in the timeline, the log and the metrics.
func (ed *Edge) event(e Event) {
	e.Time = time.Now().UTC()
	ed.events.add(e)
	if e.Region != "" {
		ed.metrics.transitions.WithLabelValues(e.Region, e.Kind).Inc()
	}
	ed.log.Info("health event", "kind", e.Kind, "endpoint", e.Endpoint, "region", e.Region, "detail", e.Detail)
}
