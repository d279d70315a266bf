package transcode

import (
	"errors"
	"strings"
)

// PathOptions are ESP's path-normalization switches; the zero value is the
// safe default: merge slashes, resolve dot-segments, keep %2F encoded.
type PathOptions struct {
	// DisableNormalize keeps dot-segments as they are (--disable_normalize_path).
	DisableNormalize bool
	// DisableMergeSlashes keeps "//" (--disable_merge_slashes_in_path).
	DisableMergeSlashes bool
	// DisallowEscapedSlashes refuses %2F and %5C in paths
	// (--disallow_escaped_slashes_in_path).
	DisallowEscapedSlashes bool
}

// ErrBadPath is a path that cannot be made safe to route.
var ErrBadPath = errors.New("bad path")

// NormalizePath makes an escaped request path canonical before any rule
// sees it, so that no trick reaches a method its rule does not allow:
// "//" becomes "/", "." and ".." (also as %2e) are resolved, and a path
// that climbs above the root is refused. %2F stays encoded (or is refused),
// so it can never split a segment.
func NormalizePath(escaped string, o PathOptions) (string, error) {
	if !strings.HasPrefix(escaped, "/") {
		return "", ErrBadPath
	}
	lower := strings.ToLower(escaped)
	if o.DisallowEscapedSlashes && (strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c")) {
		return "", ErrBadPath
	}
	if strings.Contains(escaped, "\\") || strings.ContainsAny(escaped, "\x00\r\n") || strings.Contains(lower, "%00") {
		return "", ErrBadPath
	}
	segs := strings.Split(escaped[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		if s == "" && !o.DisableMergeSlashes && i < len(segs)-1 {
			continue
		}
		if !o.DisableNormalize {
			switch strings.ToLower(s) {
			case ".", "%2e":
				continue
			case "..", "%2e%2e", ".%2e", "%2e.":
				if len(out) == 0 {
					return "", ErrBadPath
				}
				out = out[:len(out)-1]
				continue
			}
		}
		out = append(out, s)
	}
	return "/" + strings.Join(out, "/"), nil
}
