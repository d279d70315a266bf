package gateway

import (
	"bytes"
	"crypto/tls"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/h2relay"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The HTTP/2 limits reach the native gRPC front from Options.H2 (the
// --h2_* flags), and a connection cut off for a flood shows in /metrics
// by kind: here a ping flood over the TLS port with a limit of 5 a second.
func TestH2LimitsReachTheRelayAndFloodsAreMetrics(t *testing.T) {
	h := newGW(t, func(o *Options) { o.H2.MaxPingsPerSecond = 5 })
	nc, err := tls.Dial("tcp", h.ssl, &tls.Config{RootCAs: h.roots, ServerName: "localhost", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	fr := http2.NewFramer(nc, nc)
	if _, err := nc.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	_ = fr.WriteSettings()
	// A native gRPC request first: it sends the connection to the relay.
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "https"}, {":path", "/grpc.health.v1.Health/Check"},
		{":authority", "localhost"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteData(1, true, []byte{0, 0, 0, 0, 0}); err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if fr.WritePing(false, [8]byte{}) != nil {
			break
		}
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("no GOAWAY after 20 pings with --h2_max_pings_per_second=5: %v", err)
		}
		if ga, ok := f.(*http2.GoAwayFrame); ok {
			if ga.ErrCode != http2.ErrCodeEnhanceYourCalm {
				t.Fatalf("GOAWAY %v, want ENHANCE_YOUR_CALM", ga.ErrCode)
			}
			break
		}
	}
	waitFor(t, func() bool {
		resp, err := http.Get("http://" + h.g.Addr("status") + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(b), `meridian_gateway_h2_floods_total{kind="ping"} 1`)
	}, `meridian_gateway_h2_floods_total{kind="ping"} 1 in /metrics`)
}

func TestH2LimitsAreValidated(t *testing.T) {
	o := Options{ServiceConfig: "unused.yaml", H2: h2relay.Limits{MaxQueuedBytes: 1000}}
	err := o.defaults()
	if err == nil || !strings.Contains(err.Error(), "--h2_max_queued_bytes") {
		t.Fatalf("MaxQueuedBytes 1000: %v, want an error naming --h2_max_queued_bytes", err)
	}
}
