package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// echoServer is a placeholder workload under /notebooks/s1/ with token
// s3cret on a real loopback server; it returns the workload's base URL
// and its api/echo URL.
func echoServer(t *testing.T, maxMessage int64) (p *placeholder, base, echo string) {
	t.Helper()
	p = newPlaceholder("s1", "s3cret", maxMessage)
	srv := httptest.NewServer(p.handler("/notebooks/s1/"))
	t.Cleanup(srv.Close)
	base = srv.URL + "/notebooks/s1/"
	return p, base, strings.Replace(base, "http://", "ws://", 1) + "api/echo"
}

func dialEcho(t *testing.T, ctx context.Context, url string, hdr http.Header) *websocket.Conn {
	t.Helper()
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: hdr})
	if err != nil {
		t.Fatalf("dialing %s: %v %v", url, err, resp)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

// The placeholder's api/echo sends each message back as it came, text or
// binary, with the token as a header or in the query.
func TestWorkloadEchoesMessages(t *testing.T) {
	_, _, url := echoServer(t, defaultEchoMaxMessage)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for name, c := range map[string]*websocket.Conn{
		"header": dialEcho(t, ctx, url, http.Header{"Authorization": {"token s3cret"}}),
		"query":  dialEcho(t, ctx, url+"?token=s3cret", nil),
	} {
		for _, m := range []struct {
			typ websocket.MessageType
			b   []byte
		}{{websocket.MessageText, []byte("hello")}, {websocket.MessageBinary, []byte{0, 1, 2, 0xff}}, {websocket.MessageText, []byte{}}} {
			if err := c.Write(ctx, m.typ, m.b); err != nil {
				t.Fatalf("%s: write: %v", name, err)
			}
			typ, got, err := c.Read(ctx)
			if err != nil || typ != m.typ || !bytes.Equal(got, m.b) {
				t.Errorf("%s: echo of %s %q: %s %q, %v; want the same message", name, m.typ, m.b, typ, got, err)
			}
		}
		if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
			t.Errorf("%s: closing: %v", name, err)
		}
	}
}

// Without the session's token there is no WebSocket: 403, as for the
// rest of the workload.
func TestWorkloadEchoNeedsTheToken(t *testing.T) {
	_, _, url := echoServer(t, defaultEchoMaxMessage)
	for name, hdr := range map[string]http.Header{
		"none":       nil,
		"wrong":      {"Authorization": {"token nope"}},
		"the bearer": {"Authorization": {"Bearer s3cret"}},
	} {
		_, resp, err := websocket.Dial(t.Context(), url, &websocket.DialOptions{HTTPHeader: hdr})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("%s: %v %v; want 403", name, resp, err)
		}
	}
}

// An attacker's message over --max_message_bytes closes the WebSocket
// with 1009 (message too big), as soon as its header announces it; one
// of exactly the limit is echoed.
func TestWorkloadEchoBoundsMessages(t *testing.T) {
	const limit = 1 << 10
	_, _, url := echoServer(t, limit)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c := dialEcho(t, ctx, url, http.Header{"Authorization": {"token s3cret"}})
	c.SetReadLimit(1 << 20)
	at := bytes.Repeat([]byte("a"), limit)
	if err := c.Write(ctx, websocket.MessageBinary, at); err != nil {
		t.Fatal(err)
	}
	if _, got, err := c.Read(ctx); err != nil || !bytes.Equal(got, at) {
		t.Fatalf("a message of exactly %d bytes: %d bytes back, %v; want it echoed", limit, len(got), err)
	}
	// One byte over: small enough that the write completes before the
	// workload, refusing it, closes the connection.
	if err := c.Write(ctx, websocket.MessageBinary, append(at, 'a')); err != nil {
		t.Fatal(err)
	}
	_, got, err := c.Read(ctx)
	if status := websocket.CloseStatus(err); status != websocket.StatusMessageTooBig {
		t.Errorf("a message of %d bytes over a %d limit: read %d bytes, %v (status %d); want closed with %d",
			limit+1, limit, len(got), err, status, websocket.StatusMessageTooBig)
	}
}

// Messages on api/echo are activity: /api/status's last_activity moves.
func TestWorkloadEchoIsActivity(t *testing.T) {
	p, base, url := echoServer(t, defaultEchoMaxMessage)
	var mu sync.Mutex
	now := p.started.Add(time.Hour)
	p.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c := dialEcho(t, ctx, url, http.Header{"Authorization": {"token s3cret"}})
	if err := c.Write(ctx, websocket.MessageText, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Read(ctx); err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"api/status", nil)
	req.Header.Set("Authorization", "token s3cret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct {
		LastActivity time.Time `json:"last_activity"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	if want := now.UTC().Truncate(time.Second); !st.LastActivity.Equal(want) {
		t.Errorf("last_activity after an echo: %s; want %s", st.LastActivity, want)
	}
}
