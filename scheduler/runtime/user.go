package runtime

import (
	"errors"
	"fmt"
	"os/user"
	"strconv"
)

// lookupUser finds an account by name, or takes a numeric uid as it is
// (with the group of the same number when it has no entry: an account
// need not exist to run a process).
func lookupUser(name string) (uid, gid int, err error) {
	u, err := user.Lookup(name)
	var unknown user.UnknownUserError
	if errors.As(err, &unknown) {
		if n, perr := strconv.Atoi(name); perr == nil && n >= 0 {
			u, err = user.LookupId(name)
			if errors.As(err, new(user.UnknownUserIdError)) {
				return n, n, nil
			}
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("local runtime: workload user %q: %w; name an account of this host (e.g. nobody) or a numeric uid", name, err)
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("local runtime: workload user %q has uid %q: %w", name, u.Uid, err)
	}
	if gid, err = strconv.Atoi(u.Gid); err != nil {
		return 0, 0, fmt.Errorf("local runtime: workload user %q has gid %q: %w", name, u.Gid, err)
	}
	return uid, gid, nil
}
