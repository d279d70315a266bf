// Package xconnect turns on RFC 8441 extended CONNECT (WebSockets over
// HTTP/2) in Go's HTTP/2 servers, net/http's bundled one and x/net's,
// which h2mux serves HTTP/2 connections with. Both read
// GODEBUG=http2xconnect=1 from the environment in their init functions,
// and the go command refuses `//go:debug http2xconnect=1` (it accepts only
// the settings the runtime knows), so this package sets the variable in
// its own init: Go initializes packages in import-path order among those
// whose imports are initialized (the spec, since Go 1.21), and this
// package imports only os and strings, which net/http and x/net import
// too, while its path sorts before "golang.org/x/net/http2" and
// "net/http". Import it for its effect, from main and from the tests of
// packages that serve WebSockets over HTTP/2;
// h2mux.ExtendedConnect says whether it worked. GODEBUG=http2xconnect=0 in the environment keeps it off.
//
// What it changes: the servers announce SETTINGS_ENABLE_CONNECT_PROTOCOL
// (so browsers open WebSockets over HTTP/2) and accept requests with a
// :protocol pseudo-header, which handlers see as method CONNECT with the
// header ":protocol". Clients are unchanged (they use extended CONNECT
// only when asked to, and only where a server announces it).
package xconnect

import (
	"os"
	"strings"
)

func init() {
	v := os.Getenv("GODEBUG")
	if strings.Contains(v, "http2xconnect=") {
		return
	}
	if v != "" {
		v += ","
	}
	_ = os.Setenv("GODEBUG", v+"http2xconnect=1")
}
