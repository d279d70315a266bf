// Command proxybench measures what `meridian gateway` adds to a unary gRPC
// call (1 KiB request and response) over calling the backend directly, and
// compares it, in the same run and on the same cores, with Debian's nginx
// (`grpc_pass`, the data plane of ESP v1) and HAProxy: TLS in front, h2c
// behind.
//
// Everything runs on 127.0.0.1. The load generator (this program) is pinned
// to core 0; the backend, the gateway, nginx and HAProxy to core 1. A
// server's CPU per call is the growth of the on-CPU time of all its threads
// (/proc/PID/task/*/schedstat, first field) over the measured window,
// divided by the calls completed in it.
//
// Run it with `make bench-gateway` (or test/proxybench/run.sh), which
// builds bin/meridian and this program, installs nginx and HAProxy from
// Debian if they are missing, runs every configuration, prints a table and
// writes a CPU profile of the gateway. Subcommands:
//
//	proxybench run [flags]      orchestrate the whole benchmark (pin it to core 0)
//	proxybench backend -addr A  the echo backend (h2c gRPC)
//	proxybench gateway [flags]  the gateway in-process, with a CPU profile
//	                            taken between SIGUSR1 and SIGUSR2
//
// docs/benchmarks.md ("Gateway vs nginx and HAProxy") has results and how to
// read them. The program asserts no timing thresholds.
package main
