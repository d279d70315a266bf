package scheduler

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/scheduler/store/storetest"
)

// cuttable is a real TCP path to PostgreSQL that the test can cut, the way
// a network partition would.
type cuttable struct {
	target string
	ln     net.Listener
	mu     sync.Mutex
	conns  []net.Conn
	down   bool
}

func (c *cuttable) serve() {
	for {
		in, err := c.ln.Accept()
		if err != nil {
			return
		}
		c.mu.Lock()
		if c.down {
			c.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", c.target)
		if err != nil {
			c.mu.Unlock()
			in.Close()
			continue
		}
		c.conns = append(c.conns, in, out)
		c.mu.Unlock()
		go func() { _, _ = io.Copy(out, in); out.Close() }()
		go func() { _, _ = io.Copy(in, out); in.Close() }()
	}
}

func (c *cuttable) set(down bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.down = down
	if down {
		for _, conn := range c.conns {
			conn.Close()
		}
		c.conns = nil
	}
}

func TestHealthFollowsStoreReachability(t *testing.T) {
	u, err := url.Parse(storetest.URL(t, "postgres"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c := &cuttable{target: u.Host, ln: ln}
	go c.serve()
	u.Host = ln.Addr().String()
	st := storetest.OpenURL(t, u.String())

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	states := make(chan bool, 16)
	go WatchStore(ctx, st, 100*time.Millisecond, func(ok bool, _ error) { states <- ok })
	expect := func(want bool, what string) {
		t.Helper()
		select {
		case got := <-states:
			if got != want {
				t.Fatalf("%s: serving = %v, want %v", what, got, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no health change within 10s", what)
		}
	}
	expect(true, "store reachable at start")
	c.set(true)
	expect(false, "store cut off")
	c.set(false)
	expect(true, "store back")
}
