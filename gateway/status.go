package gateway

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"time"

	"github.com/meridian-gw/meridian/internal/serving"
)

// serveStatus serves /metrics, /status (JSON) and /healthz.
func (g *Gateway) serveStatus(ctx context.Context, ln net.Listener) {
	mux := serving.Admin(g.opts.Registry, func() bool { return !g.draining.Load() })
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(g.Status())
	})
	if err := serving.ServeAdmin(ctx, ln, mux); err != nil {
		g.log.Warn("status server stopped", "err", err)
	}
}

// StatusReport is /status: what the gateway is serving and why.
type StatusReport struct {
	Service         string   `json:"service"`
	ServiceConfig   string   `json:"serviceConfig"`
	Backend         string   `json:"backend"`
	BackendState    string   `json:"backendState"`
	Rollout         string   `json:"rollout"`
	LoadedAt        string   `json:"loadedAt"`
	LastReloadError string   `json:"lastReloadError,omitempty"`
	Transcoding     string   `json:"transcoding"`
	Routes          []string `json:"routes"`
	Draining        bool     `json:"draining"`
}

// Status reports the gateway's configuration state.
func (g *Gateway) Status() StatusReport {
	st := g.state.Load()
	g.mu.Lock()
	defer g.mu.Unlock()
	r := StatusReport{Service: st.svc.GetName(), ServiceConfig: g.opts.ServiceConfig, Backend: g.opts.Backend,
		BackendState: g.backend.GetState().String(), Rollout: g.opts.Rollout, LoadedAt: g.loadedAt.UTC().Format(time.RFC3339),
		Transcoding: "ready", Draining: g.draining.Load()}
	if g.lastErr != nil {
		r.LastReloadError = g.lastErr.Error()
	}
	if st.routerErr != nil {
		r.Transcoding = st.routerErr.Error()
	}
	for _, rt := range st.router.Routes() {
		r.Routes = append(r.Routes, rt.HTTPMethod+" "+rt.Template.String()+" → "+rt.Selector)
	}
	return r
}
