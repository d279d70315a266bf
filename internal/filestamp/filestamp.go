// Package filestamp tells cheaply whether files changed, for the hot
// reloads of the gateway (service config, descriptors, certificates, API
// keys) and the edge (its config directory): a stamp of the files' sizes
// and modification times, compared with the last one. Polling stamps works
// on every filesystem and with Kubernetes' ConfigMap and Secret volumes,
// which swap a symlink rather than write files in place.
package filestamp

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// maxEntries bounds the directory entries one stamp looks at.
const maxEntries = 1000

// Of returns the stamp of paths: for each, its size and modification time
// (or that it is missing), and for a directory the same of its entries and
// of their entries one level further down (a certificate directory beside
// a config file). Equal stamps mean nothing seen changed.
func Of(paths ...string) string {
	var b strings.Builder
	seen := 0
	var add func(p string, depth int)
	add = func(p string, depth int) {
		if seen++; seen > maxEntries {
			return
		}
		fi, err := os.Stat(p) // follows symlinks: a swapped ..data link shows
		if err != nil {
			fmt.Fprintf(&b, "%s:missing;", p)
			return
		}
		fmt.Fprintf(&b, "%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
		if !fi.IsDir() || depth == 0 {
			return
		}
		entries, err := os.ReadDir(p)
		if err != nil {
			return
		}
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			names = append(names, e.Name())
		}
		sort.Strings(names)
		for _, n := range names {
			add(filepath.Join(p, n), depth-1)
		}
	}
	for _, p := range paths {
		add(p, 2)
	}
	return b.String()
}
