package main

import "github.com/meridian-gw/meridian/test/benchkit"

func main() {
	benchkit.Main("proxybench",
		benchkit.Command{Name: "run", Run: runCmd},
		benchkit.Command{Name: "backend", Run: backendCmd},
		benchkit.Command{Name: "gateway", Run: gatewayCmd})
}
