// Command edgebench measures what `meridian edge` adds to a unary gRPC call
// over calling a cluster gateway directly, next to HAProxy in the same run
// on the same cores, and how fast the edge takes a killed region out of
// rotation and puts it back.
//
// Overhead. A backend stands in for a cluster gateway: grpc-go behind the
// same TLS demultiplexer as the gateway (internal/h2mux), echoing a
// protobuf message of about 1 KiB as raw bytes, and answering GET
// /v1/health over HTTPS for the edge's health checks. Three
// configurations, each at concurrency 1 and 50, TLS with ALPN h2 on every
// hop: direct (client → backend), edge (client → bin/meridian edge →
// backend; config = deploy/edge/session-scheduler.yaml unchanged plus one
// Cluster, --cert_dir, --upstream_ca), floor (the least a pass-through on
// the edge's stack does: the same h2mux TLS front and grpc-go server, one
// grpc-go TLS connection to the backend, no routing, health, retries or
// metrics; `edgebench floor`) and haproxy (Debian's HAProxy, nbthread 1,
// `ssl alpn h2` both sides, backend verified with the CA). The
// load generator (this program, grpc-go, one TLS connection, closed loop)
// is pinned to core 0 by run.sh; the backend and the proxy to core 1. A
// process's CPU per call is the growth of the on-CPU time of all its
// threads (/proc/PID/task/*/schedstat, first field) over the measured
// window, divided by the calls completed in it. Before the measured runs,
// a two-second probe checks that the edge survives 1 KiB responses (they
// are above grpc-go's buffer-pooling threshold); if it does not, the
// report says so and every configuration is measured at 1000 bytes.
// Finally the edge runs in-process (edge.New with the options `meridian
// edge` builds) under runtime/pprof, and the report groups the profile.
// Configurations are interleaved within each of 3 rounds; the tables show
// medians and, for ratios, also the median of per-round ratios (this VM's
// speed drifts between rounds by up to 30% for every process alike).
// -variants adds other edge builds or environments to the same run, e.g.
// -variants "fixed=/tmp/meridian-fixed gc400=bin/meridian@GOGC=400".
//
// Failover. `meridian dev` on all cores, a port base below 32768 with the
// whole layout free; steady open-loop traffic (200 req/s of GetQuota and
// ListSessions with a `meridian dev token`) through the edge; then, ten
// times, SIGKILL us-central1 through the supervisor's control endpoint
// (what `meridian dev stop-region` calls), wait until the edge has marked
// it unhealthy and two seconds more, and start it again. For each kill:
// the time to the edge's "ejected" and "unhealthy" events (/api/events),
// failed requests and the worst latency around the kill, and the time from
// the gateway's own /v1/health (its http port) answering until the edge's
// served counter for the region grows (/api/status).
//
// Run it with `make bench-edge` (or test/edgebench/run.sh, flags passed
// on). Subcommands:
//
//	edgebench run [flags]       everything (pin it to core 0)
//	edgebench backend [flags]   the echo backend
//	edgebench edge [flags]      the edge in-process, CPU profile between SIGUSR1 and SIGUSR2
//	edgebench floor [flags]     the minimal grpc-go pass-through
//
// `go test ./test/edgebench/` checks the harness quickly; results and how
// to read them are in docs/benchmarks.md ("Edge vs HAProxy, and failover
// times"). The program asserts no timing thresholds.
package main
