package edge

import (
	"strings"
	"time"
)

// backendSettings is a BackendConfig resolved with the edge's defaults.
type backendSettings struct {
	checkType   string // HTTP, HTTPS, HTTP2, GRPC
	path        string
	port        int // 0: the endpoint's (health) port
	grpcService string
	interval    time.Duration
	timeout     time.Duration
	healthy     int
	unhealthy   int

	requestTimeout time.Duration
	drainTimeout   time.Duration
	affinity       string
	cookieTTL      time.Duration
	headers        [][2]string
}

// Defaults much faster than GKE's NEG checks (15 s, unhealthy after 2):
// a dead region leaves rotation in about 2 s instead of 30–45 s.
const (
	defaultInterval  = time.Second
	defaultTimeout   = time.Second
	defaultHealthy   = 1
	defaultUnhealthy = 2
)

func resolveSettings(bc *BackendConfigSpec, appProtocol string) backendSettings {
	s := backendSettings{checkType: "HTTP2", path: "/", interval: defaultInterval, timeout: defaultTimeout,
		healthy: defaultHealthy, unhealthy: defaultUnhealthy, requestTimeout: 30 * time.Second, affinity: "NONE"}
	switch appProtocol {
	case "HTTPS":
		s.checkType = "HTTPS"
	case "HTTP":
		s.checkType = "HTTP"
	}
	if bc == nil {
		return s
	}
	if hc := bc.HealthCheck; hc != nil {
		if hc.Type != "" {
			s.checkType = hc.Type
		}
		if hc.RequestPath != "" {
			s.path = hc.RequestPath
		}
		if hc.Port != nil {
			s.port = *hc.Port
		}
		s.grpcService = hc.GRPCServiceName
		set := func(dst *time.Duration, v *int) {
			if v != nil {
				*dst = time.Duration(*v) * time.Second
			}
		}
		set(&s.interval, hc.CheckIntervalSec)
		set(&s.timeout, hc.TimeoutSec)
		if hc.HealthyThreshold != nil {
			s.healthy = *hc.HealthyThreshold
		}
		if hc.UnhealthyThreshold != nil {
			s.unhealthy = *hc.UnhealthyThreshold
		}
	}
	if bc.TimeoutSec != nil {
		s.requestTimeout = time.Duration(*bc.TimeoutSec) * time.Second
	}
	if bc.ConnectionDraining != nil {
		s.drainTimeout = time.Duration(bc.ConnectionDraining.DrainingTimeoutSec) * time.Second
	}
	if sa := bc.SessionAffinity; sa != nil && sa.AffinityType != "" {
		s.affinity = sa.AffinityType
		if sa.AffinityCookieTtlSec != nil {
			s.cookieTTL = time.Duration(*sa.AffinityCookieTtlSec) * time.Second
		}
	}
	if h := bc.CustomRequestHeaders; h != nil {
		for _, kv := range h.Headers {
			k, v, _ := strings.Cut(kv, ":")
			s.headers = append(s.headers, [2]string{strings.TrimSpace(k), strings.TrimSpace(v)})
		}
	}
	return s
}

// drainGrace is how long an endpoint that left the configuration keeps
// its calls in flight: connectionDraining.drainingTimeoutSec when set,
// else the backend timeout (a call is over by then either way).
func (s backendSettings) drainGrace() time.Duration {
	if s.drainTimeout > 0 {
		return s.drainTimeout
	}
	return s.requestTimeout
}

// sameChecks reports whether two settings check endpoints alike, so that
// a reload may keep an endpoint's running checker.
func sameChecks(a, b backendSettings) bool {
	return a.checkType == b.checkType && a.path == b.path && a.port == b.port && a.grpcService == b.grpcService &&
		a.interval == b.interval && a.timeout == b.timeout && a.healthy == b.healthy && a.unhealthy == b.unhealthy
}
