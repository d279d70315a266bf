package edge

import (
	"net"
	"strings"
)

// route finds the pool for a request: the MCI's rules (host, then the
// longest matching path; "/x/*" matches /x/ and below, as on GKE), else
// its default backend.
func (g *generation) route(host, path string) *pool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	spec := g.mci.Spec.Template.Spec
	var best *IngressBackend
	bestLen := -1
	for _, r := range spec.Rules {
		if r.HTTP == nil || !hostMatches(r.Host, host) {
			continue
		}
		for i := range r.HTTP.Paths {
			p := r.HTTP.Paths[i]
			if n, ok := pathMatches(p.Path, path); ok && n > bestLen {
				best, bestLen = &r.HTTP.Paths[i].Backend, n
			}
		}
	}
	if best == nil {
		best = spec.Backend
	}
	if best == nil {
		return nil
	}
	return g.pools[best.ServiceName+"/"+best.ServicePort.String()]
}

func hostMatches(rule, host string) bool {
	switch {
	case rule == "":
		return true
	case strings.HasPrefix(rule, "*."):
		return strings.HasSuffix(host, rule[1:]) && strings.Count(host, ".") == strings.Count(rule, ".")
	}
	return strings.EqualFold(rule, host)
}

func pathMatches(rule, path string) (int, bool) {
	switch {
	case rule == "" || rule == "/*":
		return 0, true
	case strings.HasSuffix(rule, "/*"):
		prefix := strings.TrimSuffix(rule, "*")
		if strings.HasPrefix(path, prefix) || path == strings.TrimSuffix(prefix, "/") {
			return len(prefix), true
		}
		return 0, false
	}
	return len(rule), rule == path
}
