package main

import (
	"fmt"
	"os"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: proxybench run|backend|gateway [flags]  (see the package doc)")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = runCmd(os.Args[2:])
	case "backend":
		err = backendCmd(os.Args[2:])
	case "gateway":
		err = gatewayCmd(os.Args[2:])
	default:
		err = fmt.Errorf("unknown subcommand %q: want run, backend or gateway", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "proxybench:", err)
		os.Exit(1)
	}
}
