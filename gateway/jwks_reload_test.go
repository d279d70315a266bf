package gateway

import (
	"net"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"google.golang.org/grpc"
)

// A backend without server reflection (and no --descriptor) makes the
// reload loop call loadAll every ReloadInterval; each builds a new
// Verifier, dropping the JWKS keys and the token cache.
func TestReflectionRetryDropsJWKS(t *testing.T) {
	be := newBackend(t)
	// A second listener on the same scheduler, but a server without reflection.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	proxy := grpc.NewServer(grpc.UnknownServiceHandler(func(_ any, ss grpc.ServerStream) error {
		// Answer ListSessions directly with an empty message.
		m := &schedulerv1.ListSessionsRequest{}
		if err := ss.RecvMsg(m); err != nil {
			return err
		}
		return ss.SendMsg(&schedulerv1.ListSessionsResponse{})
	}))
	go func() { _ = proxy.Serve(ln) }()
	t.Cleanup(proxy.Stop)
	_ = be
	h := newGW(t, func(o *Options) { o.Backend = "grpc://" + ln.Addr().String() })
	gc := h.grpcClient()
	tok := h.is.token(t, "alice")
	if _, err := gc.ListSessions(bearer(tok), &schedulerv1.ListSessionsRequest{}); err != nil {
		t.Fatalf("first call: %v", err)
	}
	f0 := h.is.fetches.Load()
	for range 10 {
		time.Sleep(100 * time.Millisecond)
		_, _ = gc.ListSessions(bearer(tok), &schedulerv1.ListSessionsRequest{})
	}
	t.Logf("JWKS fetches during 1s of calls with one token: %d", h.is.fetches.Load()-f0)
	h.is.down.Store(true)
	time.Sleep(200 * time.Millisecond) // a few reloads
	if _, err := gc.ListSessions(bearer(tok), &schedulerv1.ListSessionsRequest{}); err != nil {
		t.Fatalf("issuer down: a token verified 200ms ago with keys fetched seconds ago is refused: %v", err)
	}
}
