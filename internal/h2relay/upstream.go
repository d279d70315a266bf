package h2relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
)

// UpstreamOptions configure an Upstream. Zero values take the defaults.
type UpstreamOptions struct {
	// TLS, when set, dials TLS with ALPN h2; nil dials cleartext HTTP/2
	// (prior knowledge), as grpc:// backends are.
	TLS *tls.Config
	// DialTimeout bounds connecting (and the TLS handshake). Default 2s.
	DialTimeout time.Duration
	// Dial, when set, opens the connection to addr in place of a TCP
	// dial: a unix socket, for one. Default: TCP.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// MaxConns caps connections to the upstream; more open only when the
	// existing ones are at the upstream's stream limit. Default 8.
	MaxConns int
	// StreamWindow and ConnWindow are our receive windows. Defaults 1 MiB
	// and 8 MiB.
	StreamWindow, ConnWindow uint32
	// KeepaliveTime: a connection with calls in flight that has been
	// quiet this long is pinged; one that does not answer within
	// KeepaliveTimeout is closed (its calls fail as UNAVAILABLE).
	// Defaults 5 minutes and 10s. Connections without calls are never
	// pinged. As with grpc-go's client: a grpc-go server by default
	// closes a connection pinged more often than every 5 minutes
	// (GOAWAY too_many_pings), or pinged at all without streams.
	KeepaliveTime, KeepaliveTimeout time.Duration
	// IdleTimeout closes a connection without streams. Default 5 minutes.
	IdleTimeout time.Duration
	// MaxBackoff caps the wait before redialing an upstream that refused;
	// meanwhile calls fail at once as never sent. Default 1s.
	MaxBackoff time.Duration
}

// Upstream is a pool of HTTP/2 connections to one address.
type Upstream struct {
	addr   string
	scheme string
	opts   UpstreamOptions
	set    settings

	mu        sync.Mutex
	conns     []*conn
	dialing   bool
	waiters   []*Call
	backoff   time.Duration
	failUntil time.Time
	lastErr   error
	closed    bool
}

// NewUpstream returns a pool for addr ("host:port"); it connects on
// first use (or Connect).
func NewUpstream(addr string, o UpstreamOptions) *Upstream {
	if o.DialTimeout <= 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 8
	}
	if o.StreamWindow == 0 {
		o.StreamWindow = 1 << 20
	}
	if o.ConnWindow == 0 {
		o.ConnWindow = 8 << 20
	}
	if o.KeepaliveTime <= 0 {
		o.KeepaliveTime = 5 * time.Minute
	}
	if o.KeepaliveTimeout <= 0 {
		o.KeepaliveTimeout = 10 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 5 * time.Minute
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = time.Second
	}
	u := &Upstream{addr: addr, scheme: "http", opts: o,
		set: settings{streamWindow: o.StreamWindow, connWindow: o.ConnWindow, maxHeaderList: 1 << 20}}
	if o.TLS != nil {
		u.scheme = "https"
	}
	return u
}

// Addr is the upstream's address.
func (u *Upstream) Addr() string { return u.addr }

func (u *Upstream) keepaliveTime() time.Duration    { return u.opts.KeepaliveTime }
func (u *Upstream) keepaliveTimeout() time.Duration { return u.opts.KeepaliveTimeout }
func (u *Upstream) idleTimeout() time.Duration      { return u.opts.IdleTimeout }

// Connect dials ahead of the first call, if no connection is open.
func (u *Upstream) Connect() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.conns) == 0 && !u.dialing && !u.closed {
		u.dialing = true
		go u.dial()
	}
}

// Connected reports whether a connection is open.
func (u *Upstream) Connected() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.conns) > 0
}

// Close ends every connection (calls on them fail) and refuses new calls.
func (u *Upstream) Close() {
	u.mu.Lock()
	u.closed = true
	conns := u.conns
	u.conns = nil
	waiters := u.waiters
	u.waiters = nil
	u.mu.Unlock()
	for _, c := range conns {
		c.fail(errors.New("upstream closed"))
	}
	for _, w := range waiters {
		w.upstreamUnreachable(u, errors.New("upstream closed"))
	}
}

// submit starts c on a connection with a free stream slot, dialing one
// if needed; meanwhile c waits.
func (u *Upstream) submit(c *Call) {
	for {
		u.mu.Lock()
		if u.closed {
			u.mu.Unlock()
			c.upstreamUnreachable(u, errors.New("upstream closed"))
			return
		}
		y := u.reserveLocked()
		if y == nil {
			if len(u.conns) == 0 && time.Now().Before(u.failUntil) {
				err := u.lastErr
				u.mu.Unlock()
				c.upstreamUnreachable(u, err)
				return
			}
			u.waiters = append(u.waiters, c)
			if !u.dialing && len(u.conns) < u.opts.MaxConns {
				u.dialing = true
				go u.dial()
			}
			u.mu.Unlock()
			return
		}
		u.mu.Unlock()
		if c.attach(y) {
			return
		}
	}
}

// reserveLocked takes a stream slot on a usable connection.
func (u *Upstream) reserveLocked() *conn {
	for _, y := range u.conns {
		limit := int32(min(y.peerStreamsLimit(), 1<<30))
		for {
			n := y.active.Load()
			if n >= limit {
				break
			}
			if y.active.CompareAndSwap(n, n+1) {
				return y
			}
		}
	}
	return nil
}

// slotFreed starts waiting calls after a stream ended, or when a
// connection's SETTINGS raised its stream limit: each gets the slot
// reserved for it here, as many as there are free slots.
func (u *Upstream) slotFreed() {
	type start struct {
		c *Call
		y *conn
	}
	u.mu.Lock()
	var ready []start
	for len(u.waiters) > 0 {
		y := u.reserveLocked()
		if y == nil {
			break
		}
		ready = append(ready, start{u.waiters[0], y})
		u.waiters[0] = nil
		u.waiters = u.waiters[1:]
	}
	u.mu.Unlock()
	for _, r := range ready {
		if !r.c.attach(r.y) { // the connection went away meanwhile
			u.submit(r.c)
		}
	}
}

// connReady: the connection's SETTINGS arrived (its stream limit may
// have grown): start waiting calls.
func (u *Upstream) connReady(*conn) { u.slotFreed() }

// connGone forgets a connection that takes no more streams.
func (u *Upstream) connGone(y *conn) {
	u.mu.Lock()
	for i, c := range u.conns {
		if c == y {
			u.conns = append(u.conns[:i], u.conns[i+1:]...)
			break
		}
	}
	redial := len(u.waiters) > 0 && !u.dialing && !u.closed
	if redial {
		u.dialing = true
	}
	u.mu.Unlock()
	if redial {
		go u.dial()
	}
}

func (u *Upstream) dial() {
	ctx, cancel := context.WithTimeout(context.Background(), u.opts.DialTimeout)
	defer cancel()
	nc, err := u.connect(ctx)
	u.mu.Lock()
	u.dialing = false
	if err == nil && u.closed {
		nc.Close()
		err = errors.New("upstream closed")
	}
	if err != nil {
		u.lastErr = err
		u.backoff = min(max(2*u.backoff, 100*time.Millisecond), u.opts.MaxBackoff)
		u.failUntil = time.Now().Add(u.backoff)
		var waiters []*Call
		if len(u.conns) == 0 {
			waiters, u.waiters = u.waiters, nil
		}
		u.mu.Unlock()
		for _, c := range waiters {
			c.upstreamUnreachable(u, err)
		}
		return
	}
	u.backoff, u.lastErr = 0, nil
	y := newConn(nc, true, u.set, Limits{})
	y.up = u
	// The preface and SETTINGS go first in its write buffer, before any
	// call can be attached to it.
	y.start()
	u.conns = append(u.conns, y)
	waiters := u.waiters
	u.waiters = nil
	u.mu.Unlock()
	go y.readLoop()
	for _, c := range waiters {
		u.submit(c)
	}
}

func (u *Upstream) connect(ctx context.Context) (net.Conn, error) {
	dial := u.opts.Dial
	if dial == nil {
		var d net.Dialer
		dial = func(ctx context.Context, addr string) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
	}
	nc, err := dial(ctx, u.addr)
	if err != nil {
		return nil, err
	}
	if tc, ok := nc.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}
	if u.opts.TLS == nil {
		return nc, nil
	}
	cfg := u.opts.TLS.Clone()
	cfg.NextProtos = []string{"h2"}
	if cfg.ServerName == "" {
		cfg.ServerName, _, _ = net.SplitHostPort(u.addr)
	}
	tc := tls.Client(nc, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		nc.Close()
		return nil, err
	}
	if p := tc.ConnectionState().NegotiatedProtocol; p != "h2" {
		tc.Close()
		return nil, fmt.Errorf("TLS ALPN chose %q, not h2", p)
	}
	return tc, nil
}

// upstreamUnreachable fails an attempt that never got a stream.
func (c *Call) upstreamUnreachable(u *Upstream, err error) {
	c.mu.Lock()
	if c.done || !c.queued {
		c.mu.Unlock()
		return
	}
	c.queued = false
	c.mu.Unlock()
	msg := "upstream " + u.addr + " unreachable"
	if err != nil {
		msg += ": " + err.Error()
	}
	c.attemptFailed(Failure{Code: codes.Unavailable, Message: msg, Reached: false})
}
