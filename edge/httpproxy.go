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

	"github.com/meridian-gw/meridian/internal/bulkbuf"
	"github.com/meridian-gw/meridian/internal/forwarded"
	"github.com/meridian-gw/meridian/internal/grpcframe"
	"github.com/meridian-gw/meridian/internal/sessionid"
)

const affinityCookie = "MERIDIAN_AFFINITY"

// serveHTTP proxies REST/JSON and gRPC-Web to a cluster gateway over TLS
// HTTP/2, with the same choice of endpoint and the same retry rules as
// native gRPC: never reached → retry anywhere; safe to repeat (GET, a
// create with a requestId, …) → retry after a reset or a 502/503 too.
func (ed *Edge) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	gen := ed.gen.Load()
	if id, ok := sessionid.FromHost(r.Host, ed.opts.Notebooks.HostSuffix); ok {
		ed.serveNotebook(w, r, gen, id, true)
		return
	}
	if rest, ok := strings.CutPrefix(r.URL.Path, NotebookPrefix); ok {
		id, _, _ := strings.Cut(rest, "/")
		ed.serveNotebook(w, r, gen, id, false)
		return
	}
	p := gen.route(r.Host, r.URL.Path)
	if p == nil {
		http.Error(w, `{"code":404,"message":"no backend for this host and path"}`, http.StatusNotFound)
		return
	}
	a := ed.newAttempts(p, ed.httpAffinity(w, r, p), start)
	body, over, err := readUpTo(r.Body, ed.opts.RetryBufferLimit)
	if err != nil {
		a.done("InvalidArgument")
		http.Error(w, `{"code":400,"message":"reading the request body failed"}`, http.StatusBadRequest)
		return
	}
	idempotent := func() bool {
		if strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc-web") {
			return ed.idem.grpcOK(r.URL.Path, grpcframe.First(body))
		}
		return ed.idem.httpOK(r.Method, r.URL.Path, body)
	}
	for e := a.next(); ; {
		if e == nil {
			a.done("Unavailable")
			http.Error(w, `{"code":503,"message":"no healthy endpoint in any region"}`, http.StatusServiceUnavailable)
			return
		}
		var rd io.Reader = bytes.NewReader(body)
		if over {
			rd = io.MultiReader(bytes.NewReader(body), r.Body)
		}
		resp, cancel, reached, err := ed.roundTrip(r, e, p, rd)
		f := failure{reached: reached, replayable: !over, idempotent: idempotent, reason: "not_reached"}
		if reached {
			f.reason = "unavailable"
		}
		if err == nil && (resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusBadGateway) {
			// A gateway's 502/503 is relayed as it is unless it may be retried.
			if !a.allowed(f) {
				ed.relay(w, resp)
				cancel()
				a.done(httpCode(resp.StatusCode))
				return
			}
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			cancel()
			err = fmt.Errorf("HTTP %d from the gateway", resp.StatusCode)
		}
		if err != nil {
			f.msg = err.Error()
			if e = a.retry(f); e != nil {
				continue
			}
			a.done("Unavailable")
			http.Error(w, fmt.Sprintf(`{"code":503,"message":%q}`, "upstream unavailable: "+err.Error()), http.StatusServiceUnavailable)
			return
		}
		ed.relay(w, resp)
		cancel()
		a.done(httpCode(resp.StatusCode))
		return
	}
}

// httpAffinity is the request's affinity key under the pool's
// sessionAffinity: the client's address, or a cookie (set on first use).
func (ed *Edge) httpAffinity(w http.ResponseWriter, r *http.Request, p *pool) string {
	switch p.settings.affinity {
	case "CLIENT_IP":
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		return host
	case "GENERATED_COOKIE":
		if c, err := r.Cookie(affinityCookie); err == nil && c.Value != "" {
			return c.Value
		}
		var b [12]byte
		_, _ = rand.Read(b[:])
		aff := hex.EncodeToString(b[:])
		ck := &http.Cookie{Name: affinityCookie, Value: aff, Path: "/", HttpOnly: true, Secure: true}
		if p.settings.cookieTTL > 0 {
			ck.MaxAge = int(p.settings.cookieTTL.Seconds())
		}
		http.SetCookie(w, ck)
		return aff
	}
	return ""
}

// roundTrip sends one attempt to e (acquired by the caller, who releases
// it), with the BackendConfig's timeoutSec until the response headers.
// reached is false when the request provably never left (dial failed).
func (ed *Edge) roundTrip(r *http.Request, e *endpoint, p *pool, body io.Reader) (*http.Response, context.CancelFunc, bool, error) {
	return ed.roundTripWithin(r, e, p, body, p.settings.requestTimeout)
}

// roundTripWithin is roundTrip with a timeout until the response headers
// (0: none).
func (ed *Edge) roundTripWithin(r *http.Request, e *endpoint, p *pool, body io.Reader, timeout time.Duration) (*http.Response, context.CancelFunc, bool, error) {
	ctx, cancel := context.WithCancel(r.Context())
	stop := func() bool { return true }
	if timeout > 0 {
		stop = time.AfterFunc(timeout, cancel).Stop
	}
	out := upstreamRequest(ctx, r, e, p)
	out.Body = io.NopCloser(body)
	if r.ContentLength == 0 {
		out.Body = http.NoBody
	}
	resp, err := ed.transport.RoundTrip(out)
	stop()
	if err != nil {
		cancel()
		return nil, cancel, !dialFailed(err), err
	}
	return resp, cancel, true, nil
}

// upstreamRequest is r as a gateway at e receives it: hop-by-hop headers
// removed, X-Forwarded-For/-Proto and the BackendConfig's headers added.
func upstreamRequest(ctx context.Context, r *http.Request, e *endpoint, p *pool) *http.Request {
	out := r.Clone(ctx)
	out.URL.Scheme, out.URL.Host, out.RequestURI = "https", e.addr, ""
	for _, h := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Transfer-Encoding", "Upgrade"} {
		out.Header.Del(h)
	}
	peer, _, _ := net.SplitHostPort(r.RemoteAddr)
	out.Header.Set("X-Forwarded-For", forwarded.For(r.Header.Values("X-Forwarded-For"), peer))
	out.Header.Set("X-Forwarded-Proto", "https")
	for _, h := range p.settings.headers {
		out.Header.Set(h[0], h[1])
	}
	return out
}

// dialFailed reports whether err is a failure to connect: the request
// provably never reached the gateway.
func dialFailed(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// A response that has relayed bulkAfter bytes is a bulk transfer (a
// notebook's download): it goes on with a bulkBufferSize buffer if the
// budget (Options.BulkBufferBytes) has one. Reading 256 KiB at a time
// from the gateway's stream instead of 32 KiB halves the CPU the edge
// spends per byte, in fewer writes to the client and fewer flow-control
// updates to the gateway (docs/benchmarks.md).
const (
	bulkAfter      = 1 << 20
	bulkBufferSize = bulkbuf.BufferSize
)

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
	var relayed int
	var bulk []byte
	failed := false
	defer func() {
		switch {
		case bulk == nil:
		case failed:
			ed.bulk.Drop(bulk) // the server may still be copying from it (see bulkbuf.Pool.Drop)
		default:
			ed.bulk.Put(bulk)
		}
	}()
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				failed = true
				return
			}
			_ = rc.Flush()
			if relayed += n; bulk == nil && relayed >= bulkAfter {
				if bulk = ed.bulk.Get(); bulk != nil {
					buf = bulk
				}
			}
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
