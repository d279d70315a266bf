// Package testws dials WebSockets for tests the way browsers do: over
// HTTP/1.1 with an Upgrade, or over HTTP/2 with extended CONNECT (RFC
// 8441), as Chromium does when a server announces it. The framing is
// github.com/coder/websocket's, a complete client; it speaks only
// HTTP/1.1, so for HTTP/2 a RoundTripper turns its handshake into an
// extended CONNECT on an HTTP/2 connection and the 200 answer into the 101
// it expects (after the handshake the bytes are the same in both).
package testws

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"

	"github.com/coder/websocket"
	"golang.org/x/net/http2"
)

// Dial opens a WebSocket to url (ws://, wss://, http:// or https://) with
// the extra headers hdr, over HTTP/1.1 (tlsCfg for wss and https).
func Dial(ctx context.Context, url string, hdr http.Header, tlsCfg *tls.Config) (*websocket.Conn, *http.Response, error) {
	return DialVia(ctx, nil, url, hdr, tlsCfg)
}

// DialFunc connects to a server's address (host:port of the URL); nil
// resolves and dials it.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// DialVia is Dial with the connection made by dial: a test can reach a
// loopback server under any host name (Host and SNI are the URL's).
func DialVia(ctx context.Context, dial DialFunc, url string, hdr http.Header, tlsCfg *tls.Config) (*websocket.Conn, *http.Response, error) {
	t := &http.Transport{TLSClientConfig: tlsCfg, DialContext: dial}
	return websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr, HTTPClient: &http.Client{Transport: t},
		CompressionMode: websocket.CompressionDisabled})
}

// DialH2 opens a WebSocket to url (wss:// or https://) as an extended
// CONNECT on an HTTP/2 connection (tlsCfg's NextProtos are set to h2).
// A refusal comes back as coder/websocket's error with the response.
func DialH2(ctx context.Context, url string, hdr http.Header, tlsCfg *tls.Config) (*websocket.Conn, *http.Response, error) {
	return DialH2Via(ctx, nil, url, hdr, tlsCfg)
}

// DialH2Via is DialH2 with the connection made by dial (see DialVia).
func DialH2Via(ctx context.Context, dial DialFunc, url string, hdr http.Header, tlsCfg *tls.Config) (*websocket.Conn, *http.Response, error) {
	cfg := tlsCfg.Clone()
	if cfg == nil {
		cfg = &tls.Config{}
	}
	cfg.NextProtos = []string{"h2"}
	t := &http2.Transport{TLSClientConfig: cfg} //lint:ignore SA1019 net/http's Transport refuses the :protocol header
	if dial != nil {
		//lint:ignore SA1019 the x/net Transport above is the one that sends :protocol
		t.DialTLSContext = func(ctx context.Context, network, addr string, cfg *tls.Config) (net.Conn, error) {
			c, err := dial(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			tc := tls.Client(c, cfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				c.Close()
				return nil, err
			}
			return tc, nil
		}
	}
	rt := &h2Connect{t: t}
	return websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr, HTTPClient: &http.Client{Transport: rt},
		CompressionMode: websocket.CompressionDisabled})
}

// h2Connect sends coder/websocket's HTTP/1.1 handshake as an RFC 8441
// extended CONNECT.
type h2Connect struct {
	t *http2.Transport //lint:ignore SA1019 net/http's Transport refuses the :protocol header
}

func (h *h2Connect) RoundTrip(req *http.Request) (*http.Response, error) {
	key := req.Header.Get("Sec-WebSocket-Key")
	out := req.Clone(req.Context())
	out.Method = http.MethodConnect
	for _, k := range []string{"Connection", "Upgrade", "Sec-WebSocket-Key"} {
		out.Header.Del(k)
	}
	out.Header.Set(":protocol", "websocket")
	pr, pw := io.Pipe()
	out.Body = pr
	out.ContentLength = -1
	resp, err := h.t.RoundTrip(out) //lint:ignore SA1019 net/http's Transport refuses the :protocol header
	if err != nil {
		pw.Close()
		return nil, fmt.Errorf("extended CONNECT: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		pw.Close()
		return resp, nil
	}
	resp.StatusCode, resp.Status = http.StatusSwitchingProtocols, "101 Switching Protocols"
	resp.Header.Set("Connection", "Upgrade")
	resp.Header.Set("Upgrade", "websocket")
	resp.Header.Set("Sec-WebSocket-Accept", accept(key))
	resp.Body = stream{ReadCloser: resp.Body, w: pw}
	return resp, nil
}

// stream is an HTTP/2 stream as one read-write connection.
type stream struct {
	io.ReadCloser
	w *io.PipeWriter
}

func (s stream) Write(p []byte) (int, error) { return s.w.Write(p) }
func (s stream) Close() error {
	s.w.Close()
	return s.ReadCloser.Close()
}

func accept(key string) string {
	h := sha1.New()
	h.Write([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}
