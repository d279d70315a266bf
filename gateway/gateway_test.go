package gateway

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

type resp struct {
	code   int
	body   string
	header http.Header
	proto  string
}

func (h *gw) do(c *http.Client, method, url, token, body string, hdr ...string) resp {
	h.t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	r, err := c.Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, url, err)
	}
	defer r.Body.Close()
	b, _ := io.ReadAll(r.Body)
	return resp{code: r.StatusCode, body: string(b), header: r.Header, proto: r.Proto}
}

func (h *gw) tls(path string) string   { return "https://" + h.ssl + path }
func (h *gw) plain(path string) string { return "http://" + h.http + path }

func (h *gw) grpcClient() schedulerv1.SessionSchedulerClient {
	h.t.Helper()
	conn, err := grpc.NewClient(h.ssl, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: h.roots})))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	return schedulerv1.NewSessionSchedulerClient(conn)
}

// bearer is a call context carrying a token; calls carry their own
// deadlines through the clients' timeouts.
func bearer(tok string) context.Context {
	ctx := context.Background()
	if tok == "" {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok)
}

func TestSeedFlowOverTLS(t *testing.T) {
	h := newGW(t)
	tok := h.is.token(t, "alice")
	// Native gRPC over TLS with a JWT: the scheduler sees the verified caller.
	s, err := h.grpcClient().CreateSession(bearer(tok), &schedulerv1.CreateSessionRequest{Pool: "cpu", RequestId: "g-1"})
	if err != nil {
		t.Fatalf("gRPC CreateSession through the gateway: %v", err)
	}
	if s.Owner != "alice" {
		t.Fatalf("owner %q, want alice (from the verified token)", s.Owner)
	}
	// REST over HTTP/1.1 and HTTP/2.
	for _, c := range []*http.Client{h.h1, h.h2} {
		r := h.do(c, "GET", h.tls("/v1/"+s.Name), tok, "")
		if r.code != 200 || !strings.Contains(r.body, `"owner":"alice"`) {
			t.Fatalf("%s GET session: %d %s", r.proto, r.code, r.body)
		}
	}
	if r := h.do(h.h2, "GET", h.tls("/v1/sessions"), tok, ""); r.proto != "HTTP/2.0" || r.code != 200 {
		t.Fatalf("REST over h2: %s %d", r.proto, r.code)
	}
	r := h.do(h.h1, "POST", h.tls("/v1/sessions"), tok, `{"pool":"cpu","requestId":"r-1"}`)
	if r.code != 200 || !strings.Contains(r.body, `"state":"STARTING"`) {
		t.Fatalf("REST create: %d %s", r.code, r.body)
	}
	// The seed's probe: /v1/health on the http port, no credentials.
	if r := h.do(http.DefaultClient, "GET", h.plain("/v1/health"), "", ""); r.code != 200 || !strings.Contains(r.body, "SERVING") {
		t.Fatalf("/v1/health: %d %s", r.code, r.body)
	}
	// Anonymous callers are refused with ESP's words.
	r = h.do(h.h1, "GET", h.tls("/v1/sessions"), "", "")
	if r.code != 401 || !strings.Contains(r.body, "Jwt is missing") || r.header.Get("WWW-Authenticate") == "" {
		t.Fatalf("anonymous REST: %d %s %v", r.code, r.body, r.header)
	}
	_, err = h.grpcClient().ListSessions(bearer(""), &schedulerv1.ListSessionsRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("anonymous gRPC: %v", err)
	}
}

func hs256WithPublicKey(t *testing.T, is *issuer) string {
	pub, _ := x509.MarshalPKIXPublicKey(&is.rsa.PublicKey)
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT","kid":"rsa1"}`))
	body := base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"` + is.url() + `","sub":"mallory","aud":"https://test.example.com","exp":` + itoa(int(time.Now().Add(time.Hour).Unix())) + `}`))
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(head + "." + body))
	return head + "." + body + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))
}

func algNone(is *issuer) string {
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
	body := base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"` + is.url() + `","sub":"mallory","aud":"https://test.example.com","exp":9999999999}`))
	return head + "." + body + "."
}

func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	payload = []byte(strings.Replace(string(payload), `"sub":"alice"`, `"sub":"admin"`, 1))
	return parts[0] + "." + base64.RawURLEncoding.EncodeToString(payload) + "." + parts[2]
}

func TestAuthMatrixRefusesEveryAttack(t *testing.T) {
	h := newGW(t)
	is := h.is
	now := time.Now()
	good := is.token(t, "alice")
	cases := []struct {
		name   string
		token  string
		code   int
		reason string
	}{
		{"alg none", algNone(is), 401, "signature algorithm is not allowed"},
		{"HS256 signed with the public key", hs256WithPublicKey(t, is), 401, "signature algorithm is not allowed"},
		{"expired", is.token(t, "alice", withTimes(now.Add(-2*time.Hour), now.Add(-3*time.Hour))), 401, "Jwt is expired"},
		{"not yet valid", is.token(t, "alice", withTimes(now.Add(2*time.Hour), now.Add(time.Hour))), 401, "Jwt not yet valid"},
		{"wrong issuer", is.token(t, "alice", withIssuer("https://evil.example.com")), 401, "Jwt issuer is not configured"},
		{"wrong audience", is.token(t, "alice", withAud("https://other.example.com")), 403, "Audiences in Jwt are not allowed"},
		{"unknown kid", is.token(t, "alice", withKid("nope")), 401, "no key with kid"},
		{"tampered signature", tamper(good), 401, "signature does not match"},
		{"garbage", "not.a.jwt", 401, "Jwt is not in the form"},
	}
	gc := h.grpcClient()
	for _, c := range cases {
		for _, cl := range []*http.Client{h.h1, h.h2} {
			r := h.do(cl, "GET", h.tls("/v1/sessions"), c.token, "")
			if r.code != c.code || !strings.Contains(r.body, c.reason) {
				t.Errorf("%s over %s: %d %s; want %d with %q", c.name, r.proto, r.code, r.body, c.code, c.reason)
			}
		}
		_, err := gc.ListSessions(bearer(c.token), &schedulerv1.ListSessionsRequest{})
		wantCode := codes.Unauthenticated
		if c.code == 403 {
			wantCode = codes.PermissionDenied
		}
		if status.Code(err) != wantCode || !strings.Contains(status.Convert(err).Message(), c.reason) {
			t.Errorf("%s over gRPC: %v; want %s", c.name, err, wantCode)
		}
	}
	// Right token, wrong place: not where ESP looks, so it is missing.
	for _, hdr := range [][]string{{"Authorization", "Token " + good}, {"X-Token", good}} {
		r := h.do(h.h1, "GET", h.tls("/v1/sessions"), "", "", hdr...)
		if r.code != 401 {
			t.Errorf("token in %s: %d, want 401", hdr[0], r.code)
		}
	}
	if r := h.do(h.h1, "GET", h.tls("/v1/sessions?token="+good), "", ""); r.code != 401 {
		t.Errorf("token in ?token=: %d, want 401", r.code)
	}
	// ESP's other places work: access_token and X-Goog-Iap-Jwt-Assertion.
	if r := h.do(h.h1, "GET", h.tls("/v1/sessions?access_token="+good), "", ""); r.code != 200 {
		t.Errorf("?access_token=: %d %s", r.code, r.body)
	}
	if r := h.do(h.h1, "GET", h.tls("/v1/sessions"), "", "", "X-Goog-Iap-Jwt-Assertion", good); r.code != 200 {
		t.Errorf("X-Goog-Iap-Jwt-Assertion: %d %s", r.code, r.body)
	}
	// ES256 keys work too.
	if r := h.do(h.h2, "GET", h.tls("/v1/sessions"), is.token(t, "alice", withEC(is)), ""); r.code != 200 {
		t.Errorf("ES256 token: %d %s", r.code, r.body)
	}
}

func TestSpoofedUserInfoIsReplaced(t *testing.T) {
	h := newGW(t)
	spoof := base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"admin"}`))
	// Anonymous with a spoofed identity: refused, never reaches the backend.
	r := h.do(h.h1, "GET", h.tls("/v1/sessions"), "", "", "X-Endpoint-API-UserInfo", spoof)
	if r.code != 401 {
		t.Fatalf("spoofed identity alone: %d", r.code)
	}
	// With a real token, the backend sees the verified caller, not the spoof.
	tok := h.is.token(t, "alice")
	r = h.do(h.h2, "POST", h.tls("/v1/sessions"), tok, `{"pool":"cpu"}`, "X-Endpoint-API-UserInfo", spoof, "X-Endpoint-Other", "x")
	if r.code != 200 || !strings.Contains(r.body, `"owner":"alice"`) {
		t.Fatalf("spoof + token over REST: %d %s", r.code, r.body)
	}
	ctx := metadata.AppendToOutgoingContext(bearer(tok), "x-endpoint-api-userinfo", spoof)
	s, err := h.grpcClient().CreateSession(ctx, &schedulerv1.CreateSessionRequest{Pool: "cpu"})
	if err != nil || s.Owner != "alice" {
		t.Fatalf("spoof + token over gRPC: owner %q, %v", s.GetOwner(), err)
	}
}

func TestPathTricksCannotReachProtectedMethods(t *testing.T) {
	h := newGW(t)
	for _, p := range []string{"/v1/health/../sessions", "/v1/health/%2e%2e/sessions", "//v1//sessions", "/v1/./sessions",
		"/v1/health/%2E%2E/quota", "/v1/health/..%2Fsessions"} {
		for _, c := range []*http.Client{h.h1, h.h2} {
			req, _ := http.NewRequest("GET", h.tls(p), nil)
			r, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode == 200 {
				t.Errorf("%s over %s reached a method without credentials: %s", p, r.Proto, b)
			}
		}
	}
	// And the open rule still works on its own path only.
	if r := h.do(h.h1, "GET", h.tls("/v1/health"), "", ""); r.code != 200 {
		t.Fatalf("/v1/health: %d", r.code)
	}
	if r := h.do(h.h1, "GET", h.tls("/v1/nothing"), "", ""); r.code != 404 || !strings.Contains(r.body, msgNotDefined) {
		t.Fatalf("unknown path: %d %s", r.code, r.body)
	}
	if r := h.do(h.h1, "DELETE", h.tls("/v1/quota"), h.is.token(t, "a"), ""); r.code != 405 {
		t.Fatalf("wrong method: %d %s", r.code, r.body)
	}
}

func TestHealthTellsTheTruth(t *testing.T) {
	h := newGW(t)
	probe := func() int { return h.do(http.DefaultClient, "GET", h.plain("/v1/health"), "", "").code }
	if c := probe(); c != 200 {
		t.Fatalf("serving: %d", c)
	}
	h.be.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if c := probe(); c != 503 {
		t.Fatalf("backend NOT_SERVING: /v1/health %d, want 503", c)
	}
	h.be.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	h.be.srv.Stop()
	if c := probe(); c != 503 {
		t.Fatalf("backend down: /v1/health %d, want 503", c)
	}
	conn, _ := grpc.NewClient(h.ssl, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: h.roots})))
	defer conn.Close()
	start := time.Now()
	_, err := healthpb.NewHealthClient(conn).Check(bearer(""), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unavailable || time.Since(start) > 5*time.Second {
		t.Fatalf("gRPC health with the backend down: %v after %s; want UNAVAILABLE, fast", err, time.Since(start))
	}
}

func TestWatchStreamsAsJSONArray(t *testing.T) {
	h := newGW(t)
	tok := h.is.token(t, "alice")
	s, err := h.grpcClient().CreateSession(bearer(tok), &schedulerv1.CreateSessionRequest{Pool: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("GET", h.tls("/v1/"+s.Name+":watch"), nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	res, err := h.h2.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var body bytes.Buffer // what was read, for the failure messages
	dec := json.NewDecoder(io.TeeReader(res.Body, &body))
	if tk, err := dec.Token(); err != nil || tk != json.Delim('[') || res.StatusCode != 200 {
		rest, _ := io.ReadAll(res.Body)
		t.Fatalf("watch: %d %s%s, want a JSON array (%v)", res.StatusCode, body.Bytes(), rest, err)
	}
	// Each event is read as it streams, and the session changes only once
	// the watch has shown the state before: STARTING → STOPPING, then (no
	// reconciler runs) STOPPED via the store.
	var states []string // each state once, in the order shown
	await := func(state string) {
		t.Helper()
		for len(states) == 0 || states[len(states)-1] != state {
			var ev struct{ State string }
			if err := dec.Decode(&ev); err != nil {
				t.Fatalf("watch: waiting for %s after %v: %v (read: %s)", state, states, err, body.Bytes())
			}
			if len(states) == 0 || states[len(states)-1] != ev.State {
				states = append(states, ev.State)
			}
		}
	}
	await("STARTING")
	if _, err := h.grpcClient().StopSession(bearer(tok), &schedulerv1.StopSessionRequest{Name: s.Name}); err != nil {
		t.Fatal(err)
	}
	await("STOPPING")
	finishSession(t, h.be, s.Name)
	await("STOPPED")
	if tk, err := dec.Token(); err != nil || tk != json.Delim(']') {
		t.Fatalf("watch body does not end the JSON array after STOPPED: %v %v (read: %s)", tk, err, body.Bytes())
	}
	if want := []string{"STARTING", "STOPPING", "STOPPED"}; !slices.Equal(states, want) {
		t.Fatalf("watch events %v; want %v", states, want)
	}
}

func TestGRPCWebUnary(t *testing.T) {
	h := newGW(t)
	req := []byte{} // empty GetQuotaRequest
	body := append([]byte{0, 0, 0, 0, byte(len(req))}, req...)
	r := h.do(h.h1, "POST", h.tls("/meridian.scheduler.v1.SessionScheduler/GetQuota"), h.is.token(t, "alice"), string(body),
		"Content-Type", "application/grpc-web+proto", "X-Grpc-Web", "1")
	if r.code != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "application/grpc-web") {
		t.Fatalf("grpc-web: %d %v", r.code, r.header)
	}
	msgs, err := parseFramesWithTrailer([]byte(r.body))
	if err != nil || !strings.Contains(msgs.trailer, "grpc-status: 0") || len(msgs.data) != 1 {
		t.Fatalf("grpc-web response frames: %+v %v", msgs, err)
	}
	r = h.do(h.h1, "POST", h.tls("/meridian.scheduler.v1.SessionScheduler/GetQuota"), "", string(body),
		"Content-Type", "application/grpc-web+proto")
	if r.header.Get("Grpc-Status") != "16" {
		t.Fatalf("anonymous grpc-web: grpc-status %q, want 16 (UNAUTHENTICATED)", r.header.Get("Grpc-Status"))
	}
}

type webFrames struct {
	data    [][]byte
	trailer string
}

func parseFramesWithTrailer(b []byte) (webFrames, error) {
	var out webFrames
	for len(b) >= 5 {
		n := int(b[1])<<24 | int(b[2])<<16 | int(b[3])<<8 | int(b[4])
		if len(b) < 5+n {
			return out, io.ErrUnexpectedEOF
		}
		if b[0]&0x80 != 0 {
			out.trailer = string(b[5 : 5+n])
		} else {
			out.data = append(out.data, b[5:5+n])
		}
		b = b[5+n:]
	}
	return out, nil
}

// Regression: curl (nghttp2) closed every HTTP/2 connection with "SETTINGS:
// SETTINGS_NO_RFC7540_PRIORITIES cannot be changed", because the
// demultiplexer's SETTINGS frame and net/http's disagreed on it.
func TestCurlHTTP2RegressionSettingsMismatch(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Fatal("curl is needed (scripts/ensure-tools.sh installs it)")
	}
	h := newGW(t)
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	pemBytes, _ := os.ReadFile(filepath.Join(h.g.opts.CertDir, "server.crt"))
	_ = os.WriteFile(ca, pemBytes, 0o644)
	tok := h.is.token(t, "alice")
	for _, proto := range []string{"--http2", "--http1.1"} {
		out, err := exec.Command("curl", "-sS", proto, "--cacert", ca, "-w", "\n%{http_version} %{http_code}",
			"-H", "Authorization: Bearer "+tok, h.tls("/v1/quota")).CombinedOutput()
		if err != nil || !strings.Contains(string(out), " 200") || !strings.Contains(string(out), `"owner":"alice"`) {
			t.Fatalf("curl %s: %v\n%s", proto, err, out)
		}
	}
	// Native gRPC from another HTTP/2 implementation (curl's nghttp2)
	// through the relay: a health check, the status in the trailers.
	req, body, hdrs := filepath.Join(dir, "req"), filepath.Join(dir, "body"), filepath.Join(dir, "headers")
	_ = os.WriteFile(req, []byte{0, 0, 0, 0, 0}, 0o644)
	out, err := exec.Command("curl", "-sS", "--http2", "--cacert", ca, "-H", "Content-Type: application/grpc", "-H", "TE: trailers",
		"--data-binary", "@"+req, "-o", body, "-D", hdrs, h.tls("/grpc.health.v1.Health/Check")).CombinedOutput()
	if err != nil {
		t.Fatalf("curl gRPC: %v\n%s", err, out)
	}
	got, _ := os.ReadFile(body)
	head, _ := os.ReadFile(hdrs)
	if !bytes.Equal(got, []byte{0, 0, 0, 0, 2, 8, 1}) || !strings.Contains(strings.ToLower(string(head)), "grpc-status: 0") {
		t.Fatalf("curl gRPC health check: body %x, headers and trailers:\n%s", got, head)
	}
}
