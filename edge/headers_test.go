package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

func TestForwardsHeadersGRPCWebAndDeadlines(t *testing.T) {
	r := newRig(t, "HTTPS")
	req, _ := http.NewRequest("GET", r.url+"/v1/headers", nil)
	req.Header.Set("Authorization", "Bearer abc")
	// Two header lines: both reach the gateway, in order. (Regression:
	// the HTTP path kept only the first line.)
	req.Header.Add("X-Forwarded-For", "203.0.113.9")
	req.Header.Add("X-Forwarded-For", "198.51.100.2")
	resp, err := r.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var seen http.Header
	_ = json.NewDecoder(resp.Body).Decode(&seen)
	resp.Body.Close()
	if seen.Get("Authorization") != "Bearer abc" || seen.Get("X-Forwarded-Proto") != "https" ||
		!strings.HasPrefix(seen.Get("X-Forwarded-For"), "203.0.113.9, 198.51.100.2, 127.0.0.1") {
		t.Fatalf("headers at the gateway: %v", seen)
	}
	// gRPC: the same forwarding headers; a client's X-Forwarded-Proto is
	// replaced.
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer abc",
		"x-forwarded-for", "203.0.113.9", "x-forwarded-proto", "http")
	md := &rawgrpc.Frame{}
	if err := r.conn.Invoke(ctx, "/test.Echo/Metadata", rawgrpc.FrameOf([]byte("x")), md, grpc.ForceCodecV2(rawgrpc.Codec{})); err != nil {
		t.Fatal(err)
	}
	if got := string(md.Data.Materialize()); got != "authorization=Bearer abc;x-forwarded-for=203.0.113.9, 127.0.0.1;x-forwarded-proto=https;x-custom=" {
		t.Fatalf("gRPC metadata at the gateway: %s", got)
	}
	// gRPC-Web passes through as HTTP.
	body := append([]byte{0, 0, 0, 0, 1}, 'x')
	req, _ = http.NewRequest("POST", r.url+"/test.Echo/GetRegion", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", "application/grpc-web+proto")
	resp, err = r.https.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), "us-central1") || !strings.Contains(string(b), "grpc-status: 0") {
		t.Fatalf("gRPC-Web via the edge: %d %q", resp.StatusCode, b)
	}
	// Large messages (pooled buffers in grpc-go) pass both ways intact.
	// Regression: the raw codec freed received buffers one time too many,
	// which panicked ("Cannot read freed buffer") from 1 KiB up.
	for _, size := range []int{1 << 10, 64 << 10, 1 << 20} {
		msg := bytes.Repeat([]byte{'m'}, size)
		echo := &rawgrpc.Frame{}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := r.conn.Invoke(ctx, "/test.Echo/Echo", rawgrpc.FrameOf(msg), echo, grpc.ForceCodecV2(rawgrpc.Codec{}))
		cancel()
		if err != nil || !bytes.Equal(echo.Data.Materialize(), msg) {
			t.Fatalf("echo of %d bytes through the edge: %v", size, err)
		}
	}
	// The client's deadline reaches the backend.
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	out := &rawgrpc.Frame{}
	if err := r.conn.Invoke(ctx, "/test.Echo/Deadline", rawgrpc.FrameOf([]byte("x")), out, grpc.ForceCodecV2(rawgrpc.Codec{})); err != nil {
		t.Fatal(err)
	}
	if ms, err := strconv.Atoi(string(out.Data.Materialize())); err != nil || ms <= 0 || ms > 1000 {
		t.Fatalf("the backend saw a deadline of %q ms; want the client's 1 s, less transit", out.Data.Materialize())
	}
}
