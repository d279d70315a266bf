// Package bench measures the scheduler's admission path end to end: a real
// gRPC server on a 127.0.0.1 TCP listener in front of scheduler.New and
// scheduler.NewServer, real gRPC clients over TCP, and a real store
// (SQLite file or PostgreSQL) pre-populated with sessions.
//
// The benchmarks live in the package's tests; run them with `make bench`
// or, for one store and one load,
//
//	MERIDIAN_TEST_POSTGRES=$(scripts/ensure-postgres.sh) \
//	  go test -run '^$' -bench 'CreateSession/postgres/c50' -benchtime 3000x ./test/bench/
//
// They print numbers and assert no timing thresholds. docs/benchmarks.md
// has the results and how to read them.
package bench
