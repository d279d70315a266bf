package h2relay

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
)

func protoMarshal(m proto.Message) ([]byte, error) { return proto.Marshal(m) }

// waitUntil polls cond until it holds; past timeout the test fails with
// what went wrong. Tests wait for conditions, never for a fixed time: the
// machine that runs them may be slow and busy.
func waitUntil(t *testing.T, timeout time.Duration, cond func() bool, what func() string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", timeout, what())
		}
		time.Sleep(5 * time.Millisecond)
	}
}
