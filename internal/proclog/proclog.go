// Package proclog reads the logs of the processes that system tests run
// (test/e2e, test/kube): what a race detector or a crash left there.
package proclog

import (
	"bufio"
	"bytes"
	"strings"
)

// BadLines returns the part of a log from its first data race report,
// panic or fatal runtime error (up to 60 lines), or "" if there is none.
func BadLines(b []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var out []string
	for sc.Scan() {
		line := sc.Text()
		if len(out) == 0 && (strings.Contains(line, "WARNING: DATA RACE") ||
			strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ")) {
			out = append(out, line)
			continue
		}
		if len(out) > 0 && len(out) < 60 {
			out = append(out, line)
		}
	}
	return strings.Join(out, "\n")
}
