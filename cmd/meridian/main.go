// Command meridian runs a gRPC API across clusters and regions: the session
// scheduler, the ESP-compatible gateway, the multi-cluster edge, and the
// tools to drive them. See `meridian --help`.
package main

import (
	"os"

	"github.com/meridian-gw/meridian/cmd/meridian/cli"
)

func main() { os.Exit(cli.Main(os.Args[1:])) }
