// Package h2mux serves native gRPC and REST/JSON alike on one port: it
// sends each HTTP/2 connection to one of two servers, decided by its
// first request: gRPC to the GRPC server (the gateway's and edge's frame
// relay, or grpc-go's, which batch writes across streams, several times
// cheaper per call than net/http's HTTP/2 server), everything else to
// net/http. HTTP/1.x goes to net/http directly.
//
// Until it has decided, the demultiplexer is the connection's HTTP/2
// server (prelude.go); then the chosen server reads the connection from
// the start again (replay.go).
package h2mux

import (
	"net"
	"sync"
)

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
