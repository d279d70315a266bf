package edge

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

const affinityCookie = "MERIDIAN_AFFINITY"

// serveHTTP proxies REST/JSON and gRPC-Web to a cluster gateway over TLS
// HTTP/2, with the same choice of endpoint and the same retry rules as
// native gRPC: never reached → retry anywhere; safe to repeat (GET, a
// create with a requestId, …) → retry after a reset or a 502/503 too.
func (ed *Edge) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	gen := ed.gen.Load()
	p := gen.route(r.Host, r.URL.Path)
	if p == nil {
		http.Error(w, `{"code":404,"message":"no backend for this host and path"}`, http.StatusNotFound)
		return
	}
	ed.budget.begin()
	defer ed.budget.end()
	body, over, err := readUpTo(r.Body, ed.opts.RetryBufferLimit)
	if err != nil {
		http.Error(w, `{"code":400,"message":"reading the request body failed"}`, http.StatusBadRequest)
		return
	}
	idempotent := ed.idem.httpOK(r.Method, r.URL.Path, body)
	if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc-web") {
		idempotent = ed.idem.grpcOK(r.URL.Path, firstWebFrame(body))
	}
	aff := ""
	switch p.settings.affinity {
	case "CLIENT_IP":
		aff, _, _ = net.SplitHostPort(r.RemoteAddr)
	case "GENERATED_COOKIE":
		if c, err := r.Cookie(affinityCookie); err == nil && c.Value != "" {
			aff = c.Value
		} else {
			var b [12]byte
			_, _ = rand.Read(b[:])
			aff = hex.EncodeToString(b[:])
			ck := &http.Cookie{Name: affinityCookie, Value: aff, Path: "/", HttpOnly: true, Secure: true}
			if p.settings.cookieTTL > 0 {
				ck.MaxAge = int(p.settings.cookieTTL.Seconds())
			}
			http.SetCookie(w, ck)
		}
	}
	tried := map[*endpoint]bool{}
	for attempt := 1; ; attempt++ {
		e, failover := p.pick(tried, aff)
		if e == nil {
			ed.served(p.name, "", "", "Unavailable", time.Since(start))
			http.Error(w, `{"code":503,"message":"no healthy endpoint in any region"}`, http.StatusServiceUnavailable)
			return
		}
		tried[e] = true
		var rd io.Reader = bytes.NewReader(body)
		if over {
			rd = io.MultiReader(bytes.NewReader(body), r.Body)
		}
		resp, cancel, reached, err := ed.roundTrip(r, e, p, rd)
		retryable := attempt < ed.opts.MaxAttempts && !over && (!reached || idempotent)
		if err == nil && (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusBadGateway) {
			err = fmt.Errorf("HTTP %d from the gateway", resp.StatusCode)
			if !retryable {
				err = nil // relay the answer as it is
			} else {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
				resp.Body.Close()
				cancel()
			}
		}
		if err != nil {
			e.recordError(err.Error())
			if e.eject(time.Now()) {
				ed.metrics.ejections.WithLabelValues(e.cluster).Inc()
				ed.event(Event{Kind: "ejected", Endpoint: e.id, Region: e.region, Detail: err.Error()})
			}
			if retryable && (!reached || ed.budget.tryRetry()) { // what reached nothing is free
				reason := "not_reached"
				if reached {
					reason = "unavailable"
				}
				ed.metrics.retries.WithLabelValues(p.name, reason).Inc()
				continue
			}
			ed.served(p.name, e.cluster, e.region, "Unavailable", time.Since(start))
			http.Error(w, fmt.Sprintf(`{"code":503,"message":%q}`, "upstream unavailable: "+err.Error()), http.StatusServiceUnavailable)
			return
		}
		ed.relay(w, resp)
		cancel()
		if resp.StatusCode != http.StatusServiceUnavailable && resp.StatusCode != http.StatusBadGateway {
			e.inflight.Add(-1) // roundTrip already released 502/503 answers
		}
		if failover {
			ed.metrics.failovers.WithLabelValues(e.region).Inc()
		}
		ed.served(p.name, e.cluster, e.region, httpCode(resp.StatusCode), time.Since(start))
		return
	}
}

// roundTrip sends one attempt; on success the endpoint's in-flight count
// stays raised until the caller has relayed the body.
func (ed *Edge) roundTrip(r *http.Request, e *endpoint, p *pool, body io.Reader) (*http.Response, context.CancelFunc, bool, error) {
	ctx, cancel := context.WithCancel(r.Context())
	timer := time.AfterFunc(p.settings.requestTimeout, cancel) // until the response headers
	out := r.Clone(ctx)
	out.URL.Scheme, out.URL.Host, out.RequestURI = "https", e.addr, ""
	out.Body = io.NopCloser(body)
	if r.ContentLength == 0 {
		out.Body = http.NoBody
	}
	for _, h := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Transfer-Encoding", "Upgrade"} {
		out.Header.Del(h)
	}
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := r.Header.Get("X-Forwarded-For"); prior != "" {
			ip = prior + ", " + ip
		}
		out.Header.Set("X-Forwarded-For", ip)
	}
	out.Header.Set("X-Forwarded-Proto", "https")
	for _, h := range p.settings.headers {
		out.Header.Set(h[0], h[1])
	}
	e.started()
	resp, err := ed.transport.RoundTrip(out)
	timer.Stop()
	if err != nil {
		e.inflight.Add(-1)
		cancel()
		var op *net.OpError
		reached := !(errors.As(err, &op) && op.Op == "dial")
		return nil, cancel, reached, err
	}
	if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusBadGateway {
		e.inflight.Add(-1)
	}
	return resp, cancel, true, nil
}

// relay streams the response, flushing as it goes (server streams,
// gRPC-Web), and passes trailers.
func (ed *Edge) relay(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	h := w.Header()
	for k, vs := range resp.Header {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	for k := range resp.Trailer {
		h.Add("Trailer", k)
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err != nil {
			break
		}
	}
	for k, vs := range resp.Trailer {
		for _, v := range vs {
			h.Add(k, v)
		}
	}
}

func readUpTo(r io.Reader, limit int) (b []byte, over bool, err error) {
	if r == nil {
		return nil, false, nil
	}
	b, err = io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, false, err
	}
	if len(b) > limit {
		return b, true, nil
	}
	return b, false, nil
}

func firstWebFrame(b []byte) []byte {
	if len(b) < 5 {
		return nil
	}
	n := int(b[1])<<24 | int(b[2])<<16 | int(b[3])<<8 | int(b[4])
	if len(b) < 5+n {
		return nil
	}
	return b[5 : 5+n]
}

func httpCode(c int) string {
	switch {
	case c < 400:
		return "OK"
	case c == 401:
		return "Unauthenticated"
	case c == 403:
		return "PermissionDenied"
	case c == 404:
		return "NotFound"
	case c == 429:
		return "ResourceExhausted"
	case c == 503:
		return "Unavailable"
	case c < 500:
		return "InvalidArgument"
	}
	return "Internal"
}
