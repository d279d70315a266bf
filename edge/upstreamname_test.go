package edge

import (
	"testing"
	"time"
)

// TestUpstreamServerName: with Options.UpstreamServerName the gateways'
// certificates are verified for that name, on calls and on health checks,
// not for the address dialled (on Kubernetes a pod's IP, which a
// certificate shared by every pod cannot name).
func TestUpstreamServerName(t *testing.T) {
	t.Run("a name the certificates have", func(t *testing.T) {
		r := newRig(t, "HTTPS", func(o *Options) { o.UpstreamServerName = "localhost" })
		if _, err := r.call("/test.Echo/GetRegion"); err != nil {
			t.Fatalf("a call with the gateways verified for localhost: %v", err)
		}
		for _, p := range r.ed.Status().Pools {
			for _, rs := range p.Routing {
				for _, e := range rs.Endpoints {
					if !e.Healthy {
						t.Errorf("%s: unhealthy (%s) though its certificate names localhost", e.Address, e.LastCheck)
					}
				}
			}
		}
	})
	t.Run("a name they lack", func(t *testing.T) {
		r := newRig(t, "HTTPS", func(o *Options) { o.UpstreamServerName = "not-the-gateway.example" })
		waitUntil(t, 10*time.Second, "every gateway unhealthy: its certificate does not name not-the-gateway.example", func() bool {
			for _, p := range r.ed.Status().Pools {
				for _, rs := range p.Routing {
					for _, e := range rs.Endpoints {
						if e.Healthy {
							return false
						}
					}
				}
			}
			return true
		})
		if _, err := r.call("/test.Echo/GetRegion"); err == nil {
			t.Fatal("a call succeeded though no gateway's certificate names not-the-gateway.example")
		}
	})
}
