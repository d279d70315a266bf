package h2mux

import (
	"bytes"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
)

// frames writes HTTP/2 frames as a server would, and returns them.
func frames(t *testing.T, write ...func(*http2.Framer) error) [][]byte {
	t.Helper()
	var out [][]byte
	for _, w := range write {
		var b bytes.Buffer
		if err := w(http2.NewFramer(&b, nil)); err != nil {
			t.Fatal(err)
		}
		out = append(out, b.Bytes())
	}
	return out
}

func settingsOf(s ...http2.Setting) func(*http2.Framer) error {
	return func(fr *http2.Framer) error { return fr.WriteSettings(s...) }
}

func ack(fr *http2.Framer) error { return fr.WriteSettingsAck() }

// TestFrameDropperAnySplit: the write filter drops exactly its frames
// however the server's writes split the stream.
func TestFrameDropperAnySplit(t *testing.T) {
	ours := settingsOf(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1000}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
	other := settingsOf(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 1000}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
	rest := []func(*http2.Framer) error{
		func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, 1<<20) },
		func(fr *http2.Framer) error {
			return fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: []byte{0x88}, EndHeaders: true})
		},
		func(fr *http2.Framer) error { return fr.WriteData(1, true, bytes.Repeat([]byte{9}, 40)) },
		ack, // a later ACK: never dropped
		func(fr *http2.Framer) error { return fr.WritePing(true, [8]byte{4}) },
	}
	oursBytes := frames(t, ours)[0]
	for _, tc := range []struct {
		name    string
		d       frameDropper
		stream  [][]byte
		dropped []int // indexes in stream
	}{
		{"net/http: its first SETTINGS, which are ours", frameDropper{settings: oursBytes},
			frames(t, append([]func(*http2.Framer) error{ours, ack}, rest...)...), []int{0}},
		{"net/http: other SETTINGS pass", frameDropper{settings: oursBytes},
			frames(t, append([]func(*http2.Framer) error{other, ours}, rest...)...), nil},
		{"GRPC server: its first ACK", frameDropper{acks: 1},
			frames(t, append([]func(*http2.Framer) error{other, rest[0], ack}, rest...)...), []int{2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var all, want []byte
			for i, f := range tc.stream {
				all = append(all, f...)
				if !containsInt(tc.dropped, i) {
					want = append(want, f...)
				}
			}
			for i := 0; i <= len(all); i++ {
				for j := i; j <= len(all); j += 1 + j/7 {
					d := tc.d
					var got []byte
					for _, piece := range [][]byte{all[:i], all[i:j], all[j:]} {
						got = d.filter(got, piece)
					}
					if !bytes.Equal(got, want) {
						t.Fatalf("split at %d, %d: got\n%x\nwant\n%x", i, j, got, want)
					}
					if !d.done() {
						t.Fatalf("split at %d, %d: not done after the stream", i, j)
					}
				}
			}
		})
	}
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// TestReadFilterAnySplit: the client's first empty SETTINGS ACK is dropped
// from what it sends after the handoff, whatever the reads return, and
// nothing else.
func TestReadFilterAnySplit(t *testing.T) {
	fs := frames(t,
		func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, 5) },
		func(fr *http2.Framer) error { return fr.WriteData(1, false, []byte("body")) },
		ack,
		func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{1}) },
		ack, // a later one passes
	)
	var all []byte
	for _, f := range fs {
		all = append(all, f...)
	}
	want := append(append(append([]byte{}, fs[0]...), fs[1]...), append(append([]byte{}, fs[3]...), fs[4]...)...)
	replay := []byte("replayed first")
	for ahead := 0; ahead <= len(all); ahead++ {
		for _, chunk := range []int{1, 2, 5, 9, 64} {
			client, server := net.Pipe()
			go func() {
				defer client.Close()
				for b := all[ahead:]; len(b) > 0; b = b[min(chunk, len(b)):] {
					if _, err := client.Write(b[:min(chunk, len(b))]); err != nil {
						return
					}
				}
			}()
			rc := &replayConn{Conn: server, replay: bytes.Clone(replay), ahead: all[:ahead], in: &readFilter{}}
			got, err := io.ReadAll(readerFunc(func(p []byte) (int, error) { return rc.Read(p[:min(len(p), 3)]) }))
			server.Close()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, append(bytes.Clone(replay), want...)) {
				t.Fatalf("%d bytes ahead, written %d at a time: got\n%x\nwant\n%x", ahead, chunk, got, append(replay, want...))
			}
			if rc.in != nil {
				t.Fatalf("%d bytes ahead: the read filter is still on after dropping the ACK", ahead)
			}
		}
	}
}

// TestFiltersGetOutOfTheWay: once their frames are dropped, reads and
// writes go straight to the connection, at no cost.
func TestFiltersGetOutOfTheWay(t *testing.T) {
	conn := &sinkConn{}
	rc := &replayConn{Conn: conn}
	rc.out.acks = 1
	rc.filtering.Store(true)
	fs := frames(t, settingsOf(), ack, func(fr *http2.Framer) error { return fr.WriteData(1, true, []byte("x")) })
	for _, f := range fs {
		if n, err := rc.Write(f); n != len(f) || err != nil {
			t.Fatalf("Write: %d, %v; want %d, nil", n, err, len(f))
		}
	}
	if want := append(bytes.Clone(fs[0]), fs[2]...); !bytes.Equal(conn.Bytes(), want) {
		t.Fatalf("wrote %x, want %x", conn.Bytes(), want)
	}
	if rc.filtering.Load() {
		t.Fatal("the write filter is still on after its ACK")
	}
	p := make([]byte, 16<<10)
	if a := testing.AllocsPerRun(100, func() { conn.Reset(); _, _ = rc.Write(p) }); a != 0 {
		t.Errorf("%v allocations per write after the filter, want 0", a)
	}
	if a := testing.AllocsPerRun(100, func() { _, _ = rc.Read(p) }); a != 0 {
		t.Errorf("%v allocations per read, want 0", a)
	}
}

// sinkConn keeps what is written; reads return zeros.
type sinkConn struct {
	net.Conn
	bytes.Buffer
}

func (c *sinkConn) Write(p []byte) (int, error) { return c.Buffer.Write(p) }
func (c *sinkConn) Read(p []byte) (int, error)  { return len(p), nil }
