package edge

import (
	"net"
	"time"

	"github.com/meridian-gw/meridian/internal/h2relay"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
)

// fastReconnect: a gateway that comes back is reconnected within about a
// second, and a dead one fails fast instead of hanging on connect (the
// health checks' connections).
var fastReconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
	MinConnectTimeout: time.Second,
}

// upstream is one gateway address's connections: the relay's pool for
// calls, and a grpc-go connection for the health checks.
type upstream struct {
	relay *h2relay.Upstream
	check *grpc.ClientConn
}

func (u *upstream) close() {
	u.relay.Close()
	u.check.Close()
}

// dial returns the shared connections to a gateway address.
func (ed *Edge) dial(addr string) (*upstream, error) {
	ed.mu.Lock()
	defer ed.mu.Unlock()
	if u, ok := ed.conns[addr]; ok {
		return u, nil
	}
	t := ed.upstreamTLS.Clone()
	if t.ServerName == "" {
		t.ServerName, _, _ = net.SplitHostPort(addr)
	}
	c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(t)),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 5 * time.Second}),
		grpc.WithConnectParams(fastReconnect))
	if err != nil {
		return nil, err
	}
	c.Connect()
	u := &upstream{check: c, relay: h2relay.NewUpstream(addr, h2relay.UpstreamOptions{TLS: t,
		// Gateways allow frequent pings: find a dead one in 35 s, not 5 min.
		KeepaliveTime: 30 * time.Second, KeepaliveTimeout: 5 * time.Second})}
	ed.conns[addr] = u
	return u, nil
}
