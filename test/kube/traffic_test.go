package kube

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
)

// serviceName is the gateways' --service (the seed's esp argument): the
// audience of the callers' tokens.
const serviceName = "SERVICE_NAME.endpoints.PROJECT_ID.cloud.goog"

// issuer is the callers' identity provider: a key published as a JWK
// Set on loopback, where the gateways fetch it (the service config's
// jwks_uri).
type issuer struct {
	url string
	key *rsa.PrivateKey
}

func startIssuer(t *testing.T) *issuer {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	is := &issuer{url: "http://" + ln.Addr().String(), key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return is
}

// serviceConfig is deploy/service.yaml (the members' ConfigMap) with its
// placeholders filled in for this issuer, as docs/gateway.md says to.
func (is *issuer) serviceConfig(template string) string {
	return strings.NewReplacer(
		"https://www.googleapis.com/robot/v1/metadata/x509/SERVICE_ACCOUNT", is.url+"/jwks",
		"SERVICE_ACCOUNT", is.url,
		"IP_ADDRESS", "127.0.0.1",
	).Replace(template)
}

// token signs a token for user, valid for an hour.
func (is *issuer) token(t *testing.T, user string) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: is.key, KeyID: "k1"}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tok, err := jwt.Signed(signer).Claims(jwt.Claims{
		Issuer: is.url, Subject: user, Audience: jwt.Audience{"https://" + serviceName},
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now.Add(-time.Minute)), Expiry: jwt.NewNumericDate(now.Add(time.Hour)),
	}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// errNotServing: a gRPC health check through the edge answered, but not
// SERVING.
var errNotServing = errors.New("health check answered")

// client calls the edge as users do: native gRPC, and REST/JSON that the
// gateways transcode.
type client struct {
	conn   *grpc.ClientConn
	health healthpb.HealthClient
	sched  schedulerv1.SessionSchedulerClient
	http   *http.Client
	base   string // https://edge
	token  string
}

func newClient(t *testing.T, e *env) *client {
	t.Helper()
	conn, err := grpc.NewClient(e.edgeAddr, grpc.WithTransportCredentials(credentials.NewTLS(e.clientTLS.Clone())))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	tr := &http.Transport{TLSClientConfig: e.clientTLS.Clone(), ForceAttemptHTTP2: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &client{conn: conn, health: healthpb.NewHealthClient(conn), sched: schedulerv1.NewSessionSchedulerClient(conn),
		http: &http.Client{Transport: tr}, base: "https://" + e.edgeAddr, token: e.issuer.token(t, "alice@example.com")}
}

// callKinds are the calls of the stream, in turn.
var callKinds = []string{"grpc health", "grpc ListSessions", "REST GET /v1/health", "REST GET /v1/sessions"}

// call makes one call of a kind and says what went wrong, if anything.
func (c *client) call(ctx context.Context, kind string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+c.token)
	switch kind {
	case "grpc health":
		r, err := c.health.Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return err
		}
		if r.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("%w: %v", errNotServing, r.Status)
		}
		return nil
	case "grpc ListSessions":
		_, err := c.sched.ListSessions(authed, &schedulerv1.ListSessionsRequest{})
		return err
	case "REST GET /v1/health":
		return c.rest(ctx, "/v1/health", `"status":"SERVING"`)
	case "REST GET /v1/sessions":
		return c.rest(ctx, "/v1/sessions", "")
	}
	return fmt.Errorf("unknown call kind %q", kind)
}

// rest GETs path with the token and wants 200 and want in the body.
func (c *client) rest(ctx context.Context, path, want string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
		return fmt.Errorf("GET %s: %s %s", path, resp.Status, body)
	}
	return nil
}

// traffic is a stream of calls through the edge, each kind in turn, from
// a few callers, kept running while the clusters change.
type traffic struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	phase    string
	calls    map[string]int // by kind
	failures []string
	// notServing counts gRPC health checks answered NOT_SERVING: the edge
	// relays a client's check to one gateway, and one that drains answers
	// so (its REST /v1/health answers 503, which the edge retries
	// elsewhere).
	notServing []string
}

func startTraffic(t *testing.T, c *client, callers int) *traffic {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	tr := &traffic{cancel: cancel, phase: "start", calls: map[string]int{}}
	for i := range callers {
		tr.wg.Go(func() {
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for n := i; ; n++ {
				kind := callKinds[n%len(callKinds)]
				start := time.Now()
				err := c.call(ctx, kind)
				if ctx.Err() != nil {
					return
				}
				tr.record(kind, start, err)
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		})
	}
	t.Cleanup(tr.stop)
	return tr
}

func (tr *traffic) record(kind string, start time.Time, err error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.calls[kind]++
	if errors.Is(err, errNotServing) {
		tr.notServing = append(tr.notServing, fmt.Sprintf("during %q at %s", tr.phase, start.Format("15:04:05.000")))
		return
	}
	if err != nil && len(tr.failures) < 50 {
		tr.failures = append(tr.failures, fmt.Sprintf("%s during %q at %s: %v", kind, tr.phase, start.Format("15:04:05.000"), err))
	}
}

// enter names what happens now, for failures' messages.
func (tr *traffic) enter(phase string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.phase = phase
}

func (tr *traffic) stop() {
	tr.cancel()
	tr.wg.Wait()
}

// result is the number of calls, the failures and the health checks
// answered NOT_SERVING so far.
func (tr *traffic) result() (calls map[string]int, failures, notServing []string) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return maps.Clone(tr.calls), slices.Clone(tr.failures), slices.Clone(tr.notServing)
}
