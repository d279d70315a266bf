package h2mux

import (
	"context"
	"crypto/tls"
	"io"
	"log"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/testcert"
)

// TestServeContextEndDoesNotCancelRequests: the gateway and the edge end
// the context they serve with on SIGTERM and keep their listeners open
// while they drain. Requests over HTTP/2 (REST, gRPC-Web) in flight then,
// and new ones on open or new connections, are served to the end, not
// cancelled (they were: a REST call through the edge to a draining gateway
// failed with 499 CANCELLED, and TLS handshakes during the drain failed).
func TestServeContextEndDoesNotCancelRequests(t *testing.T) {
	cert, roots := testcert.Server(t)
	arrived, release := make(chan struct{}, 1), make(chan struct{})
	mux := http.NewServeMux()
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		arrived <- struct{}{}
		<-release
		if err := r.Context().Err(); err != nil {
			http.Error(w, "request context: "+err.Error(), 499)
			return
		}
		_, _ = io.WriteString(w, "done")
	})
	mux.HandleFunc("/fast", func(w http.ResponseWriter, r *http.Request) {
		if err := r.Context().Err(); err != nil {
			http.Error(w, "request context: "+err.Error(), 499)
			return
		}
		_, _ = io.WriteString(w, "done")
	})
	srv := &Server{GRPC: newGRPCServer(t), HTTP: &http.Server{Handler: mux, ErrorLog: log.New(io.Discard, "", 0)},
		TLS: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan struct{})
	go func() { srv.ServeTLS(ctx, ln); close(served) }()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		<-served
		srv.Shutdown(5 * time.Second)
	})

	newClient := func() *http.Client {
		return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
	}
	get := func(c *http.Client, path string) error {
		resp, err := c.Get("https://" + ln.Addr().String() + path)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || resp.ProtoMajor != 2 {
			return &statusError{resp.Proto + " " + resp.Status + ": " + string(b)}
		}
		return nil
	}
	open := newClient()
	defer open.CloseIdleConnections()
	if err := get(open, "/fast"); err != nil {
		t.Fatal(err)
	}
	inFlight := make(chan error, 1)
	go func() { inFlight <- get(open, "/slow") }()
	select { // the request is at the handler before the drain begins
	case <-arrived:
	case err := <-inFlight:
		t.Fatalf("GET /slow: %v", err)
	}

	cancel() // SIGTERM: the drain begins; the listener stays open

	if err := get(open, "/fast"); err != nil {
		t.Errorf("a new request on an open connection during the drain: %v", err)
	}
	fresh := newClient()
	defer fresh.CloseIdleConnections()
	if err := get(fresh, "/fast"); err != nil {
		t.Errorf("a new connection during the drain: %v", err)
	}
	close(release)
	if err := <-inFlight; err != nil {
		t.Errorf("the request in flight when the drain began: %v", err)
	}
}

type statusError struct{ s string }

func (e *statusError) Error() string { return e.s }
