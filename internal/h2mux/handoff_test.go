package h2mux

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

// The server that takes a connection over must see the client's settings
// and window, must not answer again what was answered, and the client
// must get exactly one ACK per SETTINGS frame it sent.

type handoffCase struct {
	name string
	dial func(t *testing.T) *rawConn
	grpc bool
}

func handoffCases(t *testing.T) []handoffCase {
	var cases []handoffCase
	for _, g := range []struct {
		name string
		srv  func(t *testing.T) GRPCServer
	}{
		{"grpc-go", func(t *testing.T) GRPCServer { return newGRPCServer(t) }},
		{"relay", func(t *testing.T) GRPCServer { return relayTo(t) }},
	} {
		m := startMux(t, withGRPC(g.srv(t)))
		cases = append(cases,
			handoffCase{"REST h2c " + g.name, func(t *testing.T) *rawConn { return dialRaw(t, m.h2c, nil) }, false},
			handoffCase{"REST TLS " + g.name, func(t *testing.T) *rawConn { return dialRaw(t, m.tls, m.roots) }, false},
			handoffCase{"gRPC h2c " + g.name, func(t *testing.T) *rawConn { return dialRaw(t, m.h2c, nil) }, true},
			handoffCase{"gRPC TLS " + g.name, func(t *testing.T) *rawConn { return dialRaw(t, m.tls, m.roots) }, true})
	}
	return cases
}

// TestOneAckPerSettings: a client that waits for each ACK, as h2spec does,
// and changes a setting before and right after its first request, gets one
// ACK per SETTINGS frame, and the server applies each.
func TestOneAckPerSettings(t *testing.T) {
	isPingAck := func(f http2.Frame) bool {
		return f.Header().Type == http2.FramePing && f.Header().Flags.Has(http2.FlagPingAck)
	}
	for _, tc := range handoffCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.dial(t).start()
			r.readUntil("the ACK of SETTINGS 1", isSettingsAck)
			r.check(r.fr.WriteSettingsAck())
			// Stream windows of 0: the server may send no DATA yet.
			r.check(r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0}))
			r.readUntil("the ACK of SETTINGS 2", isSettingsAck)
			r.check(r.fr.WritePing(false, [8]byte{1}))
			r.readUntil("the PING ACK", isPingAck)
			path := "/size/300"
			if tc.grpc {
				path = "/grpc.health.v1.Health/Check"
			}
			r.request(1, path, tc.grpc)
			// Now 1 byte, right after the request (x/net's server may
			// answer two SETTINGS with one ACK; each must have its own).
			r.check(r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1}))
			fs := r.readUntil("DATA", func(f http2.Frame) bool { return f.Header().Type == http2.FrameData })
			first := fs[len(fs)-1].(*dataCopy).data
			if len(first) != 1 {
				t.Errorf("first DATA of %d bytes, want 1 (the server did not see the window go to 0, then 1): %s", len(first), summary(fs))
			}
			r.check(r.fr.WriteWindowUpdate(1, 1<<20))
			body, rest := r.response(1)
			body = append(first, body...)
			fs = append(fs, rest...)
			if !tc.grpc && string(body) != strings.Repeat("x", 300) {
				t.Fatalf("body %q, want 300 x", body)
			}
			if tc.grpc && !bytes.Equal(body, []byte{0, 0, 0, 0, 2, 8, 1}) { // HealthCheckResponse{SERVING}
				t.Fatalf("body %x, want a SERVING health check response", body)
			}
			if acks := count(fs, isSettingsAck); acks != 1 {
				t.Errorf("%d SETTINGS ACKs after the request, want 1 (for SETTINGS 3): %s", acks, summary(fs))
			}
			if n := count(fs, isPingAck); n != 0 {
				t.Errorf("the PING answered again after the handoff: %s", summary(fs))
			}
			// net/http's SETTINGS are the ones the connection started with:
			// a client that waits for its ACK sees no other SETTINGS.
			if n := count(fs, func(f http2.Frame) bool { _, ok := f.(*settingsCopy); return ok && !isSettingsAck(f) }); !tc.grpc && n != 0 {
				t.Errorf("%d SETTINGS frames from net/http after the request, want none: %s", n, summary(fs))
			}
			// The connection is still good for another request.
			r.check(r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20}))
			r.request(3, path, tc.grpc)
			r.response(3)
		})
	}
}

// TestClientAckBeforeOrAfterHandoff: the client's ACK of the
// demultiplexer's SETTINGS may come before its first request or after;
// either way the server that took over sees no ACK it cannot place (x/net's
// ends the connection on one).
func TestClientAckBeforeOrAfterHandoff(t *testing.T) {
	m := startMux(t)
	for _, before := range []bool{true, false} {
		t.Run(fmt.Sprintf("before=%v", before), func(t *testing.T) {
			r := dialRaw(t, m.h2c, nil).start()
			if before {
				r.readUntil("SETTINGS ACK", isSettingsAck)
				r.check(r.fr.WriteSettingsAck())
			}
			r.request(1, "/size/5", false)
			if !before {
				r.check(r.fr.WriteSettingsAck())
			}
			r.response(1)
			r.check(r.fr.WritePing(false, [8]byte{5}))
			r.request(3, "/size/5", false)
			fs := r.readUntil("PING ACK", func(f http2.Frame) bool { return f.Header().Type == http2.FramePing })
			if n := count(fs, func(f http2.Frame) bool { return f.Header().Type == http2.FrameGoAway }); n != 0 {
				t.Fatalf("GOAWAY: %s", summary(fs))
			}
			if body, _ := r.response(3); string(body) != "xxxxx" {
				t.Fatalf("second response %q", body)
			}
		})
	}
}

// TestConnectionWindowReachesTheServer: the client's WINDOW_UPDATE before
// its first request lets the server send more than 64 KiB at once.
func TestConnectionWindowReachesTheServer(t *testing.T) {
	m := startMux(t)
	r := dialRaw(t, m.h2c, nil).start(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	r.check(r.fr.WriteWindowUpdate(0, 1<<20))
	r.request(1, "/size/300000", false) // never a WINDOW_UPDATE after
	if body, _ := r.response(1); len(body) != 300000 {
		t.Fatalf("%d bytes, want 300000", len(body))
	}
}

// TestGoClientsOverMux: Go's HTTP/2 clients (x/net's Transport, net/http's)
// and grpc-go, over TLS and h2c, to net/http and to both GRPC servers,
// many calls on one connection: no duplicate ACK (Go's clients end a
// connection that gets one), messages larger than the first windows.
func TestGoClientsOverMux(t *testing.T) {
	for _, g := range []struct {
		name string
		srv  func(t *testing.T) GRPCServer
	}{
		{"grpc-go", func(t *testing.T) GRPCServer { return newGRPCServer(t) }},
		{"relay", func(t *testing.T) GRPCServer { return relayTo(t) }},
	} {
		m := startMux(t, withGRPC(g.srv(t)))
		for _, tc := range []struct {
			name   string
			client func() *http.Client
			url    string
			tls    bool
		}{
			// x/net's Transport is deprecated for net/http's, but many
			// clients still use it; its checks are net/http's.
			{"x/net Transport TLS", func() *http.Client {
				//lint:ignore SA1019 see above
				return &http.Client{Transport: &http2.Transport{TLSClientConfig: &tls.Config{RootCAs: m.roots}}}
			}, "https://" + m.tls, true},
			{"x/net Transport h2c", func() *http.Client {
				dial := func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
					return (&net.Dialer{}).DialContext(ctx, network, addr)
				}
				//lint:ignore SA1019 see above
				return &http.Client{Transport: &http2.Transport{AllowHTTP: true, DialTLSContext: dial}}
			}, "http://" + m.h2c, false},
			{"net/http TLS", func() *http.Client {
				return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: m.roots}, ForceAttemptHTTP2: true}}
			}, "https://" + m.tls, true},
			{"net/http h2c", func() *http.Client {
				p := new(http.Protocols)
				p.SetUnencryptedHTTP2(true)
				return &http.Client{Transport: &http.Transport{Protocols: p}}
			}, "http://" + m.h2c, false},
		} {
			t.Run("REST "+tc.name+" "+g.name, func(t *testing.T) {
				c := tc.client()
				c.Timeout = 10 * time.Second
				defer c.CloseIdleConnections()
				before := m.accepted.Load()
				get := func(path string) string {
					resp, err := c.Get(tc.url + path)
					if err != nil {
						t.Fatalf("GET %s: %v", path, err)
					}
					defer resp.Body.Close()
					b, err := io.ReadAll(resp.Body)
					if err != nil || resp.ProtoMajor != 2 {
						t.Fatalf("GET %s: %v, %s", path, err, resp.Proto)
					}
					return string(b)
				}
				want := map[bool]string{true: "tls", false: "clear"}[tc.tls]
				if got := get("/tls"); got != want {
					t.Errorf("/tls: %q, want %q (net/http's view of the connection)", got, want)
				}
				var wg sync.WaitGroup
				for range 8 {
					wg.Go(func() {
						resp, err := c.Post(tc.url+"/echo", "application/octet-stream", bytes.NewReader(make([]byte, 200<<10)))
						if err != nil {
							t.Errorf("POST /echo: %v", err)
							return
						}
						defer resp.Body.Close()
						if n, _ := io.Copy(io.Discard, resp.Body); n != 200<<10 {
							t.Errorf("POST /echo: %d bytes back, want %d", n, 200<<10)
						}
					})
				}
				wg.Wait()
				for range 3 {
					if got := len(get("/size/100000")); got != 100000 {
						t.Errorf("GET /size/100000: %d bytes", got)
					}
				}
				if n := m.accepted.Load() - before; n != 1 {
					t.Errorf("%d connections for all the requests, want 1 (a connection error makes the client redial)", n)
				}
			})
			// Go's client on the GRPC server's path: a connection whose
			// first request is gRPC.
			t.Run("gRPC "+tc.name+" "+g.name, func(t *testing.T) {
				c := tc.client()
				c.Timeout = 10 * time.Second
				defer c.CloseIdleConnections()
				before := m.accepted.Load()
				for range 3 {
					grpcOverHTTP(t, c, tc.url, 100<<10)
				}
				if n := m.accepted.Load() - before; n != 1 {
					t.Errorf("%d connections for all the calls, want 1 (a connection error makes the client redial)", n)
				}
			})
		}
		for _, tc := range []struct {
			name  string
			addr  string
			creds credentials.TransportCredentials
		}{
			{"TLS", m.tls, credentials.NewTLS(&tls.Config{RootCAs: m.roots})},
			{"h2c", m.h2c, insecure.NewCredentials()},
		} {
			t.Run("grpc-go "+tc.name+" "+g.name, func(t *testing.T) {
				before := m.accepted.Load()
				testGRPCClient(t, tc.addr, tc.creds)
				if n := m.accepted.Load() - before; n != 1 {
					t.Errorf("%d connections for all the calls, want 1", n)
				}
			})
		}
	}
}

// grpcOverHTTP makes a unary gRPC call (TestService.UnaryCall, n bytes
// each way) with an HTTP client.
func grpcOverHTTP(t *testing.T, c *http.Client, url string, n int) {
	t.Helper()
	msg, err := proto.Marshal(&testpb.SimpleRequest{Payload: &testpb.Payload{Body: make([]byte, n)}})
	if err != nil {
		t.Fatal(err)
	}
	body := append(binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg))), msg...)
	req, _ := http.NewRequest("POST", url+"/grpc.testing.TestService/UnaryCall", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("UnaryCall: %v", err)
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil || resp.Trailer.Get("Grpc-Status") != "0" || len(got) < n {
		t.Fatalf("UnaryCall: %v, grpc-status %q (%s), %d bytes", err, resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message"), len(got))
	}
}

func testGRPCClient(t *testing.T, addr string, creds credentials.TransportCredentials) {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health check: %v", err)
	}
	tc := testpb.NewTestServiceClient(cc)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			body := make([]byte, 300<<10) // beyond the 64 KiB windows a stream starts with
			resp, err := tc.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: body}})
			if err != nil {
				t.Errorf("UnaryCall: %v", err)
				return
			}
			if len(resp.GetPayload().GetBody()) != len(body) {
				t.Errorf("UnaryCall: %d bytes back, want %d", len(resp.GetPayload().GetBody()), len(body))
			}
		})
	}
	wg.Wait()
}
