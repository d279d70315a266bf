package scheduler

import (
	"context"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the scheduler's Prometheus instruments. A nil *Metrics
// records nothing.
type Metrics struct {
	admissions   *prometheus.CounterVec
	refusals     *prometheus.CounterVec
	ends         *prometheus.CounterVec
	timeToStart  *prometheus.HistogramVec
	timeToServe  *prometheus.HistogramVec
	registerer   prometheus.Registerer
	storeCounter func(context.Context) ([]store.Count, error)
}

// NewMetrics creates the instruments and registers them on reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_scheduler_admissions_total",
			Help: "Sessions admitted, by pool and initial state (STARTING or QUEUED).",
		}, []string{"pool", "state"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_scheduler_admissions_refused_total",
			Help: "CreateSession calls refused, by pool and reason (quota, concurrency, unknown_pool, not_in_region).",
		}, []string{"pool", "reason"}),
		ends: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meridian_scheduler_sessions_ended_total",
			Help: "Sessions ended, by pool, final state and stop reason.",
		}, []string{"pool", "state", "reason"}),
		timeToStart: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meridian_scheduler_time_to_start_seconds",
			Help:    "From CreateSession to RUNNING, queueing included.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 16),
		}, []string{"pool"}),
		timeToServe: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "meridian_scheduler_workload_start_seconds",
			Help:    "From getting a slot to the workload serving.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
		}, []string{"pool"}),
		registerer: reg,
	}
	if reg != nil {
		reg.MustRegister(m.admissions, m.refusals, m.ends, m.timeToStart, m.timeToServe)
	}
	return m
}

// WatchStore exports live-session gauges computed from st at scrape time
// (every region's sessions, since the store is shared).
func (m *Metrics) WatchStore(st store.Store) {
	if m == nil || m.registerer == nil {
		return
	}
	m.storeCounter = func(ctx context.Context) (out []store.Count, err error) {
		err = st.View(ctx, func(tx store.Tx) error {
			out, err = tx.Counts(ctx)
			return err
		})
		return out, err
	}
	m.registerer.MustRegister(storeCollector{m})
}

var (
	sessionsDesc = prometheus.NewDesc("meridian_scheduler_sessions",
		"Live sessions in the store, by region, pool and state.", []string{"region", "pool", "state"}, nil)
	queueDesc = prometheus.NewDesc("meridian_scheduler_queue_length",
		"Sessions waiting for a slot, by region and pool.", []string{"region", "pool"}, nil)
	storeUpDesc = prometheus.NewDesc("meridian_scheduler_store_up",
		"1 if the last scrape could read the store.", nil, nil)
)

type storeCollector struct{ m *Metrics }

func (c storeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionsDesc
	ch <- queueDesc
	ch <- storeUpDesc
}

func (c storeCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	counts, err := c.m.storeCounter(ctx)
	if err != nil {
		ch <- prometheus.MustNewConstMetric(storeUpDesc, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(storeUpDesc, prometheus.GaugeValue, 1)
	for _, n := range counts {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(n.N), n.Region, n.Pool, n.State.String())
		if n.State == schedulerv1.Session_QUEUED {
			ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, float64(n.N), n.Region, n.Pool)
		}
	}
}

func (m *Metrics) admitted(pool string, st schedulerv1.Session_State) {
	if m != nil {
		m.admissions.WithLabelValues(pool, st.String()).Inc()
	}
}

func (m *Metrics) refused(pool, reason string) {
	if m != nil {
		m.refusals.WithLabelValues(pool, reason).Inc()
	}
}

func (m *Metrics) ended(pool string, st schedulerv1.Session_State, r schedulerv1.Session_StopReason) {
	if m != nil {
		m.ends.WithLabelValues(pool, st.String(), r.String()).Inc()
	}
}

func (m *Metrics) started(pool string, sinceCreate, sincePlace time.Duration) {
	if m != nil {
		m.timeToStart.WithLabelValues(pool).Observe(sinceCreate.Seconds())
		m.timeToServe.WithLabelValues(pool).Observe(sincePlace.Seconds())
	}
}
