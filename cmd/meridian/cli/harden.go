package cli

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// undumpable makes this process non-dumpable (PR_SET_DUMPABLE 0): other
// processes of the same account — a workload of a scheduler that cannot
// drop privileges, for one — can then neither ptrace it nor read its
// /proc/PID/environ, mem or fd, where its secrets are (store password,
// TLS and signing keys). It also disables core dumps, which would hold
// the same secrets.
func undumpable() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl(PR_SET_DUMPABLE, 0): %w", err)
	}
	return nil
}
