// Command meridian runs a gRPC API across clusters and regions: the session
// scheduler, the ESP-compatible gateway, the multi-cluster edge, and the
// tools to drive them. See `meridian --help`.
package main

import (
	"os"

	"github.com/meridian-gw/meridian/cmd/meridian/cli"
	// WebSockets over HTTP/2 (RFC 8441) for notebooks through the edge and
	// the gateway: GODEBUG=http2xconnect=1, set before net/http reads it.
	_ "github.com/meridian-gw/meridian/internal/xconnect"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
