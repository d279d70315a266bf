package edge

import (
	"context"
	_ "embed"
	"encoding/json"
	"net"
	"net/http"
	"sort"
	"sync/atomic"
	"time"

	"github.com/meridian-gw/meridian/internal/serving"
)

//go:embed dashboard.html
var dashboardHTML []byte

// regionStats counts what a region served, for live traffic shares.
type regionStats struct {
	requests atomic.Int64
	latency  atomic.Int64 // ns, summed
}

// served records a finished request in metrics and the live counters.
func (ed *Edge) served(pool, cluster, region, code string, d time.Duration) {
	ed.metrics.request(pool, cluster, region, code, d)
	if region == "" {
		return
	}
	v, ok := ed.stats.Load(region)
	if !ok {
		v, _ = ed.stats.LoadOrStore(region, &regionStats{})
	}
	rs := v.(*regionStats)
	rs.requests.Add(1)
	rs.latency.Add(int64(d))
}

// Status is /api/status: what `kubectl describe mci` shows, and more.
type Status struct {
	MCI       string         `json:"mci"`
	VIP       string         `json:"vip"`
	Region    string         `json:"region"`
	LoadedAt  time.Time      `json:"loadedAt"`
	LastError string         `json:"lastReloadError,omitempty"`
	Warnings  []string       `json:"warnings,omitempty"`
	Pools     []PoolStatus   `json:"pools"`
	Served    map[string]any `json:"served"` // region → {requests, latencyMsTotal}
	Now       time.Time      `json:"now"`
}

// PoolStatus is one backend pool.
type PoolStatus struct {
	Name        string         `json:"name"`
	HealthCheck string         `json:"healthCheck"`
	Routing     []RegionStatus `json:"routing"` // in preference order
}

// RegionStatus is one region of a pool.
type RegionStatus struct {
	Region       string           `json:"region"`
	Load         float64          `json:"load"` // share of new requests it gets now
	HealthyShare float64          `json:"healthyShare"`
	Endpoints    []EndpointStatus `json:"endpoints"`
}

// EndpointStatus is one gateway.
type EndpointStatus struct {
	Cluster    string   `json:"cluster"`
	Address    string   `json:"address"`
	Healthy    bool     `json:"healthy"`
	Draining   bool     `json:"draining"`
	Ejected    bool     `json:"ejected"`
	RTTMs      float64  `json:"rttMs"`
	InFlight   int64    `json:"inFlight"`
	Requests   int64    `json:"requests"`
	Failures   int64    `json:"failures"`
	LastCheck  string   `json:"lastCheck"`
	CheckedAt  string   `json:"checkedAt,omitempty"`
	LastErrors []string `json:"recentErrors,omitempty"`
}

// Status reports the edge's view of its fleet.
func (ed *Edge) Status() Status {
	gen := ed.gen.Load()
	if gen == nil { // a Source has not given a valid configuration yet
		st := Status{Region: ed.opts.Region, Now: time.Now().UTC(), Pools: []PoolStatus{}, Served: map[string]any{}}
		ed.mu.Lock()
		if ed.lastErr != nil {
			st.LastError = ed.lastErr.Error()
		}
		ed.mu.Unlock()
		return st
	}
	st := Status{MCI: gen.mci.Metadata.Name, VIP: ed.listenAddr(), Region: ed.opts.Region, LoadedAt: gen.loadedAt.UTC(),
		Warnings: gen.cfg.Warnings, Served: map[string]any{}, Now: time.Now().UTC(), Pools: []PoolStatus{}}
	if ed.ln != nil {
		st.VIP = ed.ln.Addr().String()
	}
	ed.mu.Lock()
	if ed.lastErr != nil {
		st.LastError = ed.lastErr.Error()
	}
	ed.mu.Unlock()
	seen := map[*pool]bool{}
	names := make([]string, 0, len(gen.pools))
	for n := range gen.pools {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := gen.pools[n]
		if seen[p] {
			continue
		}
		seen[p] = true
		ps := PoolStatus{Name: p.name, HealthCheck: p.settings.checkType + " " + p.settings.path + " every " + p.settings.interval.String(),
			Routing: []RegionStatus{}}
		order := p.order()
		ls := loads(order)
		for i, r := range order {
			rs := RegionStatus{Region: r.name, Load: ls[i], HealthyShare: r.healthyShare(), Endpoints: []EndpointStatus{}}
			for _, e := range r.eps {
				e.mu.Lock()
				es := EndpointStatus{Cluster: e.cluster, Address: e.addr, Healthy: e.healthy.Load(), Draining: e.draining.Load(),
					Ejected: e.ejected.Load(), RTTMs: float64(e.rtt.Load()) / 1e6, InFlight: e.inflight.Load(),
					Requests: e.requests.Load(), Failures: e.failures.Load(), LastCheck: e.lastCheck, LastErrors: e.lastErrors}
				if !e.checkedAt.IsZero() {
					es.CheckedAt = e.checkedAt.UTC().Format(time.RFC3339Nano)
				}
				e.mu.Unlock()
				rs.Endpoints = append(rs.Endpoints, es)
			}
			ps.Routing = append(ps.Routing, rs)
		}
		st.Pools = append(st.Pools, ps)
	}
	ed.stats.Range(func(k, v any) bool {
		rs := v.(*regionStats)
		st.Served[k.(string)] = map[string]any{"requests": rs.requests.Load(), "latencyMsTotal": float64(rs.latency.Load()) / 1e6}
		return true
	})
	return st
}

func (ed *Edge) serveAdmin(ctx context.Context, ln net.Listener) {
	mux := serving.Admin(ed.opts.Registry, nil)
	mux.HandleFunc("GET /api/status", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, ed.Status()) })
	mux.HandleFunc("GET /api/events", func(w http.ResponseWriter, _ *http.Request) { writeJSON(w, ed.events.list()) })
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_, _ = w.Write(dashboardHTML)
	})
	if err := serving.ServeAdmin(ctx, ln, mux); err != nil {
		ed.log.Warn("admin server stopped", "err", err)
	}
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
