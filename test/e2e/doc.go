// Package e2e holds Meridian's multi-process end-to-end tests. They build
// the real meridian binary once and drive it as real OS processes over
// real sockets on 127.0.0.1: schedulers sharing SQLite and PostgreSQL
// stores, `meridian dev`, the CLI and its exit codes, crash recovery after
// SIGKILL and graceful drains after SIGTERM.
//
// Run them with the rest of the suite (`make test`), or alone:
//
//	MERIDIAN_TEST_POSTGRES=postgres://… go test -race -count=1 ./test/e2e/
//
// Under -race the binary is built with -race too, and a test fails if any
// of its processes reports a data race or panics.
package e2e
