package edge

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"github.com/meridian-gw/meridian/internal/testcert"
	"github.com/meridian-gw/meridian/internal/testws"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
)

// The host form: {session_id}.notebooks.example.com. These tests reach
// the edge on loopback under such names: a dialer connects to the edge
// whatever the name, which goes in the Host (or :authority) and the TLS
// SNI, as a browser sends them after a wildcard DNS record.

// wildcardName is the wildcard certificate's name for nbSuffix.
const wildcardName = "*" + nbSuffix

// newHostRig is a notebook rig whose edge has the host form on, with two
// front certificates in its MCI's tls[]: the API's (loopback names only)
// first, then one for *.notebooks.example.com, which SNI picks.
func newHostRig(t *testing.T, opts ...func(*Options)) *rig {
	ca := testcert.NewCA(t)
	return newNotebookRigCA(t, ca, append([]func(*Options){func(o *Options) {
		o.Notebooks.HostSuffix = nbSuffix
		cfg := filepath.Join(o.Config, "edge.yaml")
		y, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		y = []byte(strings.Replace(string(y), "- secretName: session-scheduler-tls", "- secretName: session-scheduler-tls\n      - secretName: notebooks-tls", 1))
		if err := os.WriteFile(cfg, y, 0o644); err != nil {
			t.Fatal(err)
		}
		ca.Leaf(t, wildcardName).Write(t, filepath.Join(o.Config, "notebooks-tls"), "tls.crt", "tls.key")
	}}, opts...)...)
}

// hostURL is the host-form URL of id's notebook, path p.
func hostURL(id, p string) string { return "https://" + id + nbSuffix + p }

// edgeDialer connects to the edge for any host name.
func (r *rig) edgeDialer() testws.DialFunc {
	addr, _ := r.ed.Addr()
	return func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, addr)
	}
}

// hostClients are HTTP/1.1 and HTTP/2 clients that reach the edge under
// any name.
func (r *rig) hostClients(t *testing.T) map[string]*http.Client {
	out := map[string]*http.Client{}
	for name, h2 := range map[string]bool{"HTTP/1.1": false, "HTTP/2": true} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: r.ca.Pool}, DialContext: r.edgeDialer(), ForceAttemptHTTP2: h2}
		if !h2 {
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		t.Cleanup(tr.CloseIdleConnections)
		out[name] = &http.Client{Timeout: time.Minute, Transport: tr}
	}
	return out
}

func (r *rig) notebookCalls() map[string]int64 {
	out := map[string]int64{}
	for reg, g := range r.gws {
		out[reg] = g.nb.calls.Load()
	}
	return out
}

// Each id goes to its own region's gateway, and only there, with its
// Host and path as they came: on a notebook's host every path is its
// workload's, /notebooks/{another id}/ included.
func TestNotebookHostFormGoesToItsRegionOnly(t *testing.T) {
	r := newHostRig(t)
	for name, c := range r.hostClients(t) {
		for _, region := range []string{"us-central1", "europe-west1", "asia-east1"} {
			for _, p := range []string{"/region", "/notebooks/" + nbID("asia-east1") + "/region"} {
				before := r.notebookCalls()
				a := get(t, c, hostURL(nbID(region), p))
				var seen map[string]string
				if a.code != 200 || json.Unmarshal([]byte(a.body), &seen) != nil || seen["region"] != region {
					t.Fatalf("%s: %s: %d %s; want %s's gateway", name, hostURL(nbID(region), p), a.code, a.body, region)
				}
				if seen["host"] != nbID(region)+nbSuffix || seen["path"] != p || !strings.HasPrefix(a.proto, name) {
					t.Errorf("%s: the gateway saw %v over %s; want the Host %s and the path %s as they came", name, seen, a.proto, nbID(region)+nbSuffix, p)
				}
				after := r.notebookCalls()
				for reg := range after {
					if want := before[reg] + map[bool]int64{true: 1}[reg == region]; after[reg] != want {
						t.Errorf("%s: a notebook of %s: %s's gateway got %d requests; want %d", name, region, reg, after[reg]-before[reg], want-before[reg])
					}
				}
			}
		}
		// The API's own host is not a notebook's, the path form still works.
		if a := get(t, c, r.url+"/notebooks/"+nbID("europe-west1")+"/region"); a.code != 200 || !strings.Contains(a.body, `"region":"europe-west1"`) {
			t.Errorf("%s: the path form beside the host form: %d %s", name, a.code, a.body)
		}
	}
}

// Region down or unknown: answered at once by the edge, naming it; a name
// on the suffix that is not a session id: 404, and no gateway hears of it.
func TestNotebookHostFormRefusals(t *testing.T) {
	r := newHostRig(t)
	r.gws["europe-west1"].kill()
	waitUntil(t, 5*time.Second, "europe-west1 unhealthy", func() bool {
		for _, rs := range r.ed.Status().Pools[0].Routing {
			if rs.Region == "europe-west1" {
				return !rs.Endpoints[0].Healthy
			}
		}
		return false
	})
	before := r.notebookCalls()
	for name, c := range r.hostClients(t) {
		start := time.Now()
		a := get(t, c, hostURL(nbID("europe-west1"), "/api/status"))
		if a.code != http.StatusServiceUnavailable || !strings.Contains(a.body, `"code":503`) || !strings.Contains(a.body, "europe-west1") {
			t.Errorf("%s: region down: %d %q; want 503 JSON naming europe-west1", name, a.code, a.body)
		}
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("%s: region down answered after %s; want at once", name, d)
		}
		if a := get(t, c, hostURL(nbID("mars-north1"), "/"), "Accept", "text/html"); a.code != http.StatusServiceUnavailable ||
			!strings.Contains(a.body, "<h1>Region unavailable</h1>") || !strings.Contains(a.body, "mars-north1") {
			t.Errorf("%s: unknown region: %d %q; want a 503 page naming mars-north1", name, a.code, a.body)
		}
		for _, host := range []string{"foo", "x7k2m3ab", "x." + nbID("us-central1"), "us-central1-abcdefghijklmnopqrs1", "-abcdefghijklmnopqrst"} {
			// In the Host only: the wildcard covers one label, and TLS
			// is not what this is about.
			req, _ := http.NewRequest("GET", hostURL(nbID("us-central1"), "/region"), nil)
			req.Host = host + nbSuffix
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(b), "not a notebook's host") {
				t.Errorf("%s: %s%s: %d %q; want 404 saying it is not a notebook's host", name, host, nbSuffix, resp.StatusCode, b)
			}
		}
	}
	if after := r.notebookCalls(); !maps(after, before) {
		t.Errorf("gateways got notebook requests %v (before %v); want none", after, before)
	}
}

func maps(a, b map[string]int64) bool {
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return len(a) == len(b)
}

// A request that reached its region's gateway and failed there is not
// sent again, in that region or another.
func TestNotebookHostFormIsNotRetriedOnceItReachedAGateway(t *testing.T) {
	r := newHostRig(t)
	for name, c := range r.hostClients(t) {
		before := r.notebookCalls()
		var a answer
		// A region-down answer reaches no gateway; on a loaded machine the
		// health checks may flap: ask again until a gateway had it.
		waitUntil(t, 20*time.Second, "asia-east1 to take the request", func() bool {
			a = get(t, c, hostURL(nbID("asia-east1"), "/reset"))
			return !strings.Contains(a.body, "no healthy gateway")
		})
		if a.code != http.StatusBadGateway || !strings.Contains(a.body, "asia-east1") {
			t.Errorf("%s: a reset by the gateway: %d %q; want 502 naming the region", name, a.code, a.body)
		}
		after := r.notebookCalls()
		for reg := range after {
			if want := before[reg] + map[bool]int64{true: 1}[reg == "asia-east1"]; after[reg] != want {
				t.Errorf("%s: %s's gateway got %d requests; want %d (one attempt, in its region)", name, reg, after[reg]-before[reg], want-before[reg])
			}
		}
	}
}

func TestNotebookHostFormWebSockets(t *testing.T) {
	r := newHostRig(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for name, dial := range map[string]func(context.Context, testws.DialFunc, string, http.Header, *tls.Config) (*websocket.Conn, *http.Response, error){
		"HTTP/1.1 Upgrade": testws.DialVia, "HTTP/2 extended CONNECT": testws.DialH2Via} {
		for _, region := range []string{"europe-west1", "asia-east1"} {
			c, resp, err := dial(ctx, r.edgeDialer(), hostURL(nbID(region), "/ws"), nil, &tls.Config{RootCAs: r.ca.Pool})
			if err != nil {
				t.Fatalf("%s: dial: %v %v", name, err, resp)
			}
			if got, err := echoOnce(ctx, c, "1+1"); err != nil || got != region+":1+1" {
				t.Errorf("%s: echo %q, %v; want it from %s", name, got, err, region)
			}
			c.CloseNow()
		}
	}
}

// The front certificate is chosen by SNI: the wildcard for a notebook's
// host, the first (the API's) for anything else. Real handshakes that
// verify the chain and the name.
func TestNotebookHostFormCertificateBySNI(t *testing.T) {
	r := newHostRig(t)
	addr, _ := r.ed.Addr()
	for _, tc := range []struct {
		sni      string
		wildcard bool
	}{{nbID("us-central1") + nbSuffix, true}, {"localhost", false}, {"", false}} {
		cfg := &tls.Config{RootCAs: r.ca.Pool, ServerName: tc.sni}
		if tc.sni == "" {
			cfg.ServerName = "127.0.0.1" // an IP address: no SNI is sent
		}
		conn, err := tls.Dial("tcp", addr, cfg)
		if err != nil {
			t.Errorf("SNI %q: handshake: %v; want a certificate that covers it", tc.sni, err)
			continue
		}
		names := conn.ConnectionState().PeerCertificates[0].DNSNames
		conn.Close()
		if got := slices.Contains(names, wildcardName); got != tc.wildcard {
			t.Errorf("SNI %q: the certificate for %v; want the wildcard: %v", tc.sni, names, tc.wildcard)
		}
	}
}

// A notebook's host serves its notebook over HTTP only: native gRPC
// calls to it are refused by the edge, not sent to the API.
func TestNotebookHostFormRefusesGRPC(t *testing.T) {
	r := newHostRig(t)
	addr, _ := r.ed.Addr()
	host := nbID("us-central1") + nbSuffix
	conn, err := grpc.NewClient(addr, grpc.WithAuthority(host), grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: r.ca.Pool, ServerName: host})))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = conn.Invoke(ctx, "/test.Echo/GetRegion", rawgrpc.FrameOf([]byte("x")), &rawgrpc.Frame{}, grpc.ForceCodecV2(rawgrpc.Codec{}))
	if status.Code(err) != codes.Unimplemented || !strings.Contains(err.Error(), "notebook") {
		t.Errorf("a gRPC call to a notebook's host: %v; want UNIMPLEMENTED saying so", err)
	}
	if _, err := r.call("/test.Echo/GetRegion"); err != nil {
		t.Errorf("the same call to the edge's own name: %v", err)
	}
}

func TestNotebookHostSuffixIsValidated(t *testing.T) {
	for _, bad := range []string{"notebooks.example.com", ".com", ".Notebooks.example.com", ".notebooks..example.com", ".notebooks.example.com:443", ".*.example.com"} {
		_, err := New(Options{Config: "testdata/seed.yaml", Region: "us-central1", Notebooks: NotebookOptions{HostSuffix: bad}})
		if err == nil || !strings.Contains(err.Error(), "--notebook_host_suffix") || !strings.Contains(err.Error(), bad) {
			t.Errorf("--notebook_host_suffix=%s: %v; want an error naming the flag and the value", bad, err)
		}
	}
}
