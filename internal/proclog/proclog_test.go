package proclog

import (
	"strings"
	"testing"
)

func TestBadLines(t *testing.T) {
	clean := "{\"level\":\"INFO\",\"msg\":\"serving\"}\nstopped\n"
	if got := BadLines([]byte(clean)); got != "" {
		t.Errorf("a clean log: %q; want none", got)
	}
	for _, first := range []string{"WARNING: DATA RACE", "panic: runtime error: index out of range", "fatal error: concurrent map writes"} {
		log := clean + first + "\n" + strings.Repeat("goroutine 1:\n", 100)
		got := BadLines([]byte(log))
		lines := strings.Split(got, "\n")
		if lines[0] != first || len(lines) != 60 {
			t.Errorf("log with %q: starts %q, %d lines; want it first and 60 lines", first, lines[0], len(lines))
		}
	}
}
