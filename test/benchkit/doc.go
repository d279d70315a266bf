// Package benchkit holds what the proxy benchmarks (test/proxybench,
// test/edgebench) share: the bench.Echo service, its backend and its gRPC
// client; the closed-loop load generator; reading processes' and cores' CPU
// use from /proc and metering a window with it; starting, stopping and
// pinning the servers under test; CPU profiles taken between SIGUSR1 and
// SIGUSR2 and their summary; and the certificates and HAProxy configuration
// both write. What differs between the benchmarks (configurations, proxies,
// report tables) stays in each.
package benchkit
