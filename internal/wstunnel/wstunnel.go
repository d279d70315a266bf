// Package wstunnel proxies WebSockets, for notebooks through the edge and
// the gateway: Jupyter's kernels, terminals and collaboration all use
// them. A client may open one over HTTP/1.1 (Upgrade) or over HTTP/2
// (extended CONNECT, RFC 8441, as browsers do when the server announces
// it); upstream, each is one HTTP/1.1 Upgrade on a connection of its own,
// which every WebSocket server speaks. Frames are not parsed: after the
// handshake the bytes are the same in both protocols, and are copied both
// ways as they come, with an idle timeout.
//
// httputil.ReverseProxy proxies HTTP/1.1 upgrades, but neither extended
// CONNECT nor an idle timeout, nor does it say when bytes flow (which is
// a notebook's activity); hence this package.
package wstunnel

import (
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultIdleTimeout is how long a tunnel may carry nothing before it is
// closed. Jupyter pings its WebSockets every 30 s, so only a dead one is
// ever this idle.
const DefaultIdleTimeout = 30 * time.Minute

// IsWebSocket reports whether r opens a WebSocket: an HTTP/1.1 Upgrade,
// or an HTTP/2 extended CONNECT with :protocol websocket.
func IsWebSocket(r *http.Request) bool {
	if r.ProtoMajor >= 2 {
		return r.Method == http.MethodConnect && strings.EqualFold(r.Header.Get(":protocol"), "websocket")
	}
	return r.Method == http.MethodGet && headerHasToken(r.Header, "Connection", "upgrade") && strings.EqualFold(r.Header.Get("Upgrade"), "websocket")
}

// Proxy opens WebSocket tunnels to an upstream.
type Proxy struct {
	// Transport sends the upstream handshake, an HTTP/1.1 GET with
	// Upgrade: websocket (net/http's Transport then uses HTTP/1.1 even
	// where it would use HTTP/2). Required.
	Transport http.RoundTripper
	// IdleTimeout closes a tunnel that carried no byte either way for this
	// long. Default DefaultIdleTimeout.
	IdleTimeout time.Duration
}

// Result is what became of one tunnel.
type Result struct {
	// Status is the upstream's answer (101 for a tunnel), or 502 when it
	// gave none.
	Status int
	// In and Out count the bytes from the client and to it after the
	// handshake.
	In, Out int64
	// Idle: the tunnel was closed by the idle timeout.
	Idle bool
}

// Serve opens the WebSocket r asks for by sending out, the upstream
// request its caller prepared (URL, headers), as an HTTP/1.1 Upgrade; an
// answer other than 101 is relayed as it is. Then it copies bytes both
// ways until either side closes or the tunnel idles, calling activity
// (when set) as bytes flow. Serve returns when the tunnel has closed.
func (p *Proxy) Serve(w http.ResponseWriter, r *http.Request, out *http.Request, activity func()) (Result, error) {
	h2 := r.ProtoMajor >= 2
	key := out.Header.Get("Sec-WebSocket-Key")
	for _, h := range []string{"Connection", "Keep-Alive", "Proxy-Connection", "Te", "Transfer-Encoding", "Upgrade", ":protocol", "Content-Length"} {
		out.Header.Del(h)
	}
	if h2 {
		// RFC 8441 has no key: the HTTP/1.1 hop needs one, and its accept
		// proves that the upstream speaks WebSocket.
		key = newKey()
		out.Header.Set("Sec-WebSocket-Key", key)
	}
	out.Method = http.MethodGet
	out.Header.Set("Connection", "Upgrade")
	out.Header.Set("Upgrade", "websocket")
	out.Body, out.ContentLength = http.NoBody, 0
	resp, err := p.Transport.RoundTrip(out)
	if err != nil {
		return Result{Status: http.StatusBadGateway}, fmt.Errorf("WebSocket handshake upstream: %w", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		relay(w, resp)
		return Result{Status: resp.StatusCode}, nil
	}
	up, ok := resp.Body.(io.ReadWriteCloser)
	if !ok || !strings.EqualFold(resp.Header.Get("Upgrade"), "websocket") || (h2 && resp.Header.Get("Sec-WebSocket-Accept") != accept(key)) {
		resp.Body.Close()
		http.Error(w, "the upstream's WebSocket handshake is not valid", http.StatusBadGateway)
		return Result{Status: http.StatusBadGateway}, errors.New("WebSocket handshake upstream: not a valid 101 answer")
	}
	t := &tunnel{idle: p.IdleTimeout, activity: activity}
	if t.idle <= 0 {
		t.idle = DefaultIdleTimeout
	}
	if h2 {
		err = t.serveH2(w, r, up, resp.Header)
	} else {
		err = t.serveH1(w, up, resp.Header)
	}
	return Result{Status: http.StatusSwitchingProtocols, In: t.in.Load(), Out: t.out.Load(), Idle: t.idled.Load()}, err
}

// tunnel is one open WebSocket's copying.
type tunnel struct {
	idle     time.Duration
	activity func()
	last     atomic.Int64 // unix ns of the last byte either way
	in, out  atomic.Int64
	idled    atomic.Bool
}

// serveH1 takes over the client's connection and answers 101 with the
// upstream's handshake headers (its accept answers the client's key).
func (t *tunnel) serveH1(w http.ResponseWriter, up io.ReadWriteCloser, hdr http.Header) error {
	conn, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		up.Close()
		return fmt.Errorf("taking over the client's connection: %w", err)
	}
	_ = conn.SetDeadline(time.Time{}) // the server's read and write timeouts are for requests
	var head strings.Builder
	head.WriteString("HTTP/1.1 101 Switching Protocols\r\n")
	_ = hdr.Write(&head)
	head.WriteString("\r\n")
	_, err = brw.WriteString(head.String())
	if err == nil {
		err = brw.Flush()
	}
	if err != nil {
		conn.Close()
		up.Close()
		return fmt.Errorf("answering the client: %w", err)
	}
	// What the client sent past its request is in brw's buffer.
	var client io.Reader = conn
	if n := brw.Reader.Buffered(); n > 0 {
		client = io.MultiReader(io.LimitReader(brw.Reader, int64(n)), conn)
	}
	closeBoth := sync.OnceFunc(func() { conn.Close(); up.Close() })
	stop := t.watch(closeBoth)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { t.copy(up, client, &t.in); closeBoth() })
	t.copy(conn, up, &t.out)
	closeBoth()
	wg.Wait()
	return nil
}

// serveH2 answers 200 on the client's stream (RFC 8441: no Upgrade, no
// accept) with the upstream's subprotocol and extensions, then copies
// between the stream and the upstream.
func (t *tunnel) serveH2(w http.ResponseWriter, r *http.Request, up io.ReadWriteCloser, hdr http.Header) error {
	for k, vs := range hdr {
		switch http.CanonicalHeaderKey(k) {
		case "Connection", "Upgrade", "Sec-Websocket-Accept", "Keep-Alive", "Transfer-Encoding", "Content-Length":
			continue
		}
		w.Header()[k] = vs
	}
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	if err := rc.Flush(); err != nil {
		up.Close()
		return fmt.Errorf("answering the client: %w", err)
	}
	closeUp := sync.OnceFunc(func() { up.Close() })
	// The stream's own end is the handler's return; an idle tunnel
	// closes the upstream, which ends the copy to the client.
	stop := t.watch(closeUp)
	defer stop()
	go func() { t.copy(up, r.Body, &t.in); closeUp() }()
	t.copy(flushWriter{w, rc}, up, &t.out)
	closeUp()
	return nil
}

// copy moves bytes from src to dst as they come, counting them and
// noting the activity.
func (t *tunnel) copy(dst io.Writer, src io.Reader, n *atomic.Int64) {
	buf := make([]byte, 32<<10)
	for {
		k, err := src.Read(buf)
		if k > 0 {
			t.last.Store(time.Now().UnixNano())
			n.Add(int64(k))
			if t.activity != nil {
				t.activity()
			}
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// watch closes the tunnel, through end, once nothing has moved for the
// idle timeout. stop ends the watch.
func (t *tunnel) watch(end func()) (stop func()) {
	t.last.Store(time.Now().UnixNano())
	var timer *time.Timer
	var mu sync.Mutex
	stopped := false
	var check func()
	check = func() {
		mu.Lock()
		defer mu.Unlock()
		if stopped {
			return
		}
		quiet := time.Since(time.Unix(0, t.last.Load()))
		if quiet >= t.idle {
			t.idled.Store(true)
			end()
			return
		}
		timer = time.AfterFunc(t.idle-quiet, check)
	}
	mu.Lock()
	timer = time.AfterFunc(t.idle, check)
	mu.Unlock()
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		timer.Stop()
	}
}

// flushWriter sends each write to the client at once.
type flushWriter struct {
	w  io.Writer
	rc *http.ResponseController
}

func (f flushWriter) Write(p []byte) (int, error) {
	n, err := f.w.Write(p)
	if err == nil {
		err = f.rc.Flush()
	}
	return n, err
}

// relay answers with the upstream's response (a refusal of the handshake).
func relay(w http.ResponseWriter, resp *http.Response) {
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, io.LimitReader(resp.Body, 1<<20))
}

func newKey() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.StdEncoding.EncodeToString(b[:])
}

// accept is the Sec-WebSocket-Accept that answers key (RFC 6455).
func accept(key string) string {
	h := sha1.New()
	h.Write([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// Limiter bounds the tunnels open per key (a client's address, an
// owner): each holds two connections and two goroutines until it closes
// or idles, so one client must not be able to open them without end.
type Limiter struct {
	// Max is the tunnels one key may have open; <= 0: no limit.
	Max int

	mu sync.Mutex
	n  map[string]int
}

// Acquire counts a tunnel for key, or reports false at the limit.
func (l *Limiter) Acquire(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n == nil {
		l.n = map[string]int{}
	}
	if l.Max > 0 && l.n[key] >= l.Max {
		return false
	}
	l.n[key]++
	return true
}

// Release ends a tunnel counted for key.
func (l *Limiter) Release(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[key] <= 1 {
		delete(l.n, key)
		return
	}
	l.n[key]--
}

// Open is the number of tunnels counted.
func (l *Limiter) Open() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	total := 0
	for _, n := range l.n {
		total += n
	}
	return total
}
