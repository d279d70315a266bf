package h2mux

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// A port that serves native gRPC and REST/JSON alike sends each HTTP/2
// connection to one of two servers, decided by its first request: gRPC to
// grpc-go's own transport (which batches writes across streams, several
// times cheaper per call than net/http's HTTP/2 server), everything else
// to net/http. HTTP/1.x goes to net/http directly.
//
// grpc-go clients wait for the server's SETTINGS before their first
// request, so the demultiplexer sends an empty SETTINGS frame as soon as
// it has read the client preface. grpc-go's server ignores the extra
// SETTINGS ACK that this earns; net/http's would call it a protocol error,
// so on that path the first ACK is filtered out.

const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// settingNoRFC7540Priorities is SETTINGS_NO_RFC7540_PRIORITIES (RFC 9218).
const settingNoRFC7540Priorities http2.SettingID = 0x9

// peekLimit bounds what the demultiplexer reads before deciding.
const peekLimit = 256 << 10

// classify reads an HTTP/2 connection up to its first request's headers
// and reports whether it is gRPC. It returns everything it read.
func classify(c net.Conn, timeout time.Duration) (isGRPC bool, read []byte, err error) {
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	defer c.SetReadDeadline(time.Time{})
	var buf bytes.Buffer
	r := io.TeeReader(io.LimitReader(c, peekLimit), &buf)
	pre := make([]byte, len(clientPreface))
	if _, err := io.ReadFull(r, pre); err != nil {
		return false, buf.Bytes(), err
	}
	if string(pre) != clientPreface {
		return false, buf.Bytes(), errors.New("not an HTTP/2 client preface")
	}
	fr := http2.NewFramer(c, r) // writes go straight to the client
	// Advertise what net/http's server will advertise, since a client may
	// refuse a later change of it (nghttp2 does, for this setting).
	if err := fr.WriteSettings(http2.Setting{ID: settingNoRFC7540Priorities, Val: 1}); err != nil {
		return false, buf.Bytes(), err
	}
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	fr.SetMaxReadFrameSize(1 << 20)
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return false, buf.Bytes(), err
		}
		if mh, ok := f.(*http2.MetaHeadersFrame); ok {
			ct := mh.PseudoValue("content-type")
			for _, hf := range mh.Fields {
				if hf.Name == "content-type" {
					ct = hf.Value
				}
			}
			g := strings.HasPrefix(ct, "application/grpc") && !strings.HasPrefix(ct, "application/grpc-web")
			return g, buf.Bytes(), nil
		}
	}
}

// replayConn serves bytes already read before the rest of the connection.
type replayConn struct {
	net.Conn
	r io.Reader
}

func (c *replayConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// ConnectionState lets net/http see the TLS state through the wrapper.
func (c *replayConn) ConnectionState() tls.ConnectionState {
	if tc, ok := c.Conn.(*tls.Conn); ok {
		return tc.ConnectionState()
	}
	return tls.ConnectionState{}
}

func newReplayConn(c net.Conn, read []byte, dropFirstSettingsAck bool) net.Conn {
	var r io.Reader = io.MultiReader(bytes.NewReader(read), c)
	if dropFirstSettingsAck {
		r = &ackFilter{r: bufio.NewReader(r), skip: len(clientPreface)}
	}
	return &replayConn{Conn: c, r: r}
}

// ackFilter passes an HTTP/2 byte stream through, except the first empty
// SETTINGS ACK frame, which answers the demultiplexer's SETTINGS, not the
// server's.
type ackFilter struct {
	r       *bufio.Reader
	skip    int // preface bytes still to pass
	inFrame int // payload bytes of the current frame still to pass
	done    bool
	pending []byte // a frame header being passed on
}

func (a *ackFilter) Read(p []byte) (int, error) {
	if len(a.pending) > 0 {
		n := copy(p, a.pending)
		a.pending = a.pending[n:]
		return n, nil
	}
	switch {
	case a.done:
		return a.r.Read(p)
	case a.skip > 0:
		n, err := a.r.Read(p[:min(len(p), a.skip)])
		a.skip -= n
		return n, err
	case a.inFrame > 0:
		n, err := a.r.Read(p[:min(len(p), a.inFrame)])
		a.inFrame -= n
		return n, err
	}
	hdr := make([]byte, 9)
	if _, err := io.ReadFull(a.r, hdr); err != nil {
		return 0, err
	}
	length := int(hdr[0])<<16 | int(hdr[1])<<8 | int(hdr[2])
	if hdr[3] == byte(http2.FrameSettings) && hdr[4]&byte(http2.FlagSettingsAck) != 0 && length == 0 {
		a.done = true // dropped; everything else passes through
		return a.Read(p)
	}
	a.inFrame, a.pending = length, hdr
	return a.Read(p)
}

// chanListener hands accepted, already-classified connections to a server.
type chanListener struct {
	addr   net.Addr
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) put(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.closed:
		c.Close()
	}
}

func (l *chanListener) Close() error   { l.once.Do(func() { close(l.closed) }); return nil }
func (l *chanListener) Addr() net.Addr { return l.addr }
