package edge

import (
	"context"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// checker runs one endpoint's active health checks.
type checker struct {
	e      *endpoint
	s      backendSettings
	tls    *tls.Config
	client *http.Client
	grpc   *grpc.ClientConn // for GRPC checks
	onEdge func(ev Event)
}

func (ed *Edge) newChecker(p *pool, e *endpoint) *checker {
	s := p.settings
	c := &checker{e: e, s: s, tls: ed.upstreamTLS.Clone(), onEdge: ed.event}
	host, _, _ := net.SplitHostPort(e.checkAddr(s.port))
	if c.tls.ServerName == "" {
		c.tls.ServerName = host
	}
	switch s.checkType {
	case "HTTP2":
		h2only := new(http.Protocols)
		h2only.SetHTTP2(true)
		c.client = &http.Client{Transport: &http.Transport{TLSClientConfig: c.tls, Protocols: h2only}}
	case "HTTPS":
		c.client = &http.Client{Transport: &http.Transport{TLSClientConfig: c.tls, DisableKeepAlives: false}}
	case "HTTP":
		c.client = &http.Client{Transport: &http.Transport{}}
	case "GRPC":
		if e.checkAddr(s.port) == e.addr {
			c.grpc = e.conn
		} else {
			if u, err := ed.dial(e.checkAddr(s.port)); err == nil {
				c.grpc = u.check
			}
		}
	}
	return c
}

// checkAddr is where health checks for the endpoint go.
func (e *endpoint) checkAddr(port int) string {
	a := e.addr
	if e.healthAddr != "" {
		a = e.healthAddr
	}
	if port != 0 {
		host, _, _ := net.SplitHostPort(a)
		a = net.JoinHostPort(host, strconv.Itoa(port))
	}
	return a
}

// run checks until ctx ends, with ±10% jitter so checks of many endpoints
// do not align.
func (c *checker) run(ctx context.Context) {
	okRun, failRun := 0, 0
	for {
		start := time.Now()
		err, notServing := c.check(ctx)
		if ctx.Err() != nil {
			return
		}
		c.e.mu.Lock()
		c.e.checkedAt = start
		if err == nil {
			c.e.lastCheck = "ok"
		} else {
			c.e.lastCheck = err.Error()
		}
		c.e.mu.Unlock()
		if err == nil {
			c.e.observeRTT(time.Since(start))
			okRun, failRun = okRun+1, 0
			if c.e.draining.CompareAndSwap(true, false) {
				c.onEdge(Event{Kind: "serving", Endpoint: c.e.id, Region: c.e.region, Detail: "health check answers SERVING again"})
			}
			recovered := false
			if okRun >= c.s.healthy && c.e.healthy.CompareAndSwap(false, true) {
				c.onEdge(Event{Kind: "healthy", Endpoint: c.e.id, Region: c.e.region, Detail: fmt.Sprintf("%d check(s) passed", okRun)})
				recovered = true
			}
			// An endpoint the checks saw die and come back is readmitted at
			// once; the ejection backoff only holds back one that fails
			// requests while passing checks.
			if c.e.ejected.Load() && (recovered || time.Now().UnixNano() >= c.e.ejectedUntil.Load()) && c.e.ejected.CompareAndSwap(true, false) {
				c.onEdge(Event{Kind: "readmitted", Endpoint: c.e.id, Region: c.e.region, Detail: "active check passed after ejection"})
			}
		} else {
			okRun, failRun = 0, failRun+1
			if notServing && c.e.draining.CompareAndSwap(false, true) {
				c.onEdge(Event{Kind: "draining", Endpoint: c.e.id, Region: c.e.region, Detail: "health check says NOT_SERVING: no new requests"})
			}
			if failRun >= c.s.unhealthy && c.e.healthy.CompareAndSwap(true, false) {
				c.onEdge(Event{Kind: "unhealthy", Endpoint: c.e.id, Region: c.e.region, Detail: err.Error()})
			}
		}
		jitter := time.Duration((rand.Float64()*0.2 - 0.1) * float64(c.s.interval))
		t := time.NewTimer(c.s.interval + jitter)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// check runs one check; notServing reports an explicit NOT_SERVING (503).
func (c *checker) check(ctx context.Context) (err error, notServing bool) {
	ctx, cancel := context.WithTimeout(ctx, c.s.timeout)
	defer cancel()
	addr := c.e.checkAddr(c.s.port)
	if c.s.checkType == "GRPC" {
		if c.grpc == nil {
			return fmt.Errorf("no connection to %s", addr), false
		}
		resp, err := healthpb.NewHealthClient(c.grpc).Check(ctx, &healthpb.HealthCheckRequest{Service: c.s.grpcService})
		if err != nil {
			return fmt.Errorf("grpc health: %s", status.Convert(err).Message()), false
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("grpc health: %s", resp.Status), true
		}
		return nil, false
	}
	scheme := "https"
	if c.s.checkType == "HTTP" {
		scheme = "http"
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+addr+c.s.path, nil)
	req.Header.Set("User-Agent", "meridian-edge-healthcheck")
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %v", c.s.checkType, c.s.path, shortErr(err)), false
	}
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s %s: HTTP %d", c.s.checkType, c.s.path, resp.StatusCode), resp.StatusCode == http.StatusServiceUnavailable
	}
	return nil, false
}

func shortErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 && len(s) > 80 {
		return s[i+2:]
	}
	return s
}
