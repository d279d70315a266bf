package gateway

import (
	"net"
	"testing"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"google.golang.org/grpc"
)

// A backend without server reflection (and no --descriptor) makes the
// reload loop call loadAll every ReloadInterval. Each reload must keep the
// Verifier of an unchanged authentication section, with its JWKS keys and
// token cache: it used to build a new one, refetching every issuer's keys
// each time and refusing every token while an issuer was down.
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
	// The reload loop rebuilds the state every ReloadInterval (it retries
	// reflection); a call after each rebuild.
	reloads := func(n int) {
		t.Helper()
		for range n {
			h.g.mu.Lock()
			at := h.g.loadedAt
			h.g.mu.Unlock()
			waitFor(t, func() bool {
				h.g.mu.Lock()
				defer h.g.mu.Unlock()
				return h.g.loadedAt.After(at)
			}, "the reload loop to retry reflection")
			if _, err := gc.ListSessions(bearer(tok), &schedulerv1.ListSessionsRequest{}); err != nil {
				t.Fatalf("a call after a reload: %v", err)
			}
		}
	}
	reloads(5)
	if n := h.is.fetches.Load() - f0; n != 0 {
		t.Fatalf("the issuer's keys were fetched %d times in 5 reloads with one token, want 0: each reload dropped them", n)
	}
	h.is.down.Store(true)
	reloads(2) // fails if the token's keys are gone
}
