// Package h2spec runs h2spec, the public HTTP/2 conformance suite
// (github.com/summerwind/h2spec), against the gateway's TLS port and the
// edge's listener, each for a REST path and a gRPC path, and against a
// plain net/http server in the same run: every case net/http passes must
// pass on ours. It also reports (without asserting) how a bare frame relay
// does. `make test` installs h2spec (scripts/ensure-tools.sh); alone:
//
//	scripts/ensure-tools.sh && go test -count=1 -v ./test/h2spec/
package h2spec
