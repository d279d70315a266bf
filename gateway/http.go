package gateway

import (
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/meridian-gw/meridian/internal/sessionid"
	"google.golang.org/grpc/metadata"
)

// ServeHTTP serves everything that is not native gRPC on grpc-go's own
// transport: REST/JSON (transcoded), gRPC-Web, CORS preflights, --healthz,
// and native gRPC that arrived on an HTTP/2 connection the demultiplexer
// handed to net/http.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ct := r.Header.Get("Content-Type")
	// A notebook's host is its workload's alone: every path, any type.
	nbID, nbHost := sessionid.FromHost(r.Host, g.opts.Notebooks.HostSuffix)
	if !nbHost && r.ProtoMajor == 2 && strings.HasPrefix(ct, "application/grpc") && !strings.HasPrefix(ct, "application/grpc-web") {
		g.grpc.ServeHTTP(w, r)
		return
	}
	if g.opts.HSTS && r.TLS != nil {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
	}
	if nbHost || strings.HasPrefix(r.URL.Path, "/notebooks/") {
		// Not CORS (a notebook is same-origin), not --client_max_body_size
		// (uploads stream to the workload; nothing is buffered).
		g.serveNotebook(w, r, nbHost, nbID)
		return
	}
	if g.cors(w, r) {
		return
	}
	if g.opts.Healthz != "" && r.URL.Path == g.opts.Healthz {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, "{}\n")
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, g.opts.ClientMaxBodySize)
	if strings.HasPrefix(ct, "application/grpc-web") {
		g.serveGRPCWeb(w, r, ct)
		return
	}
	g.serveREST(w, r)
}

// httpSource reads credentials from an HTTP request.
type httpSource struct {
	r *http.Request
	q url.Values
}

func (h httpSource) header(name string) string { return h.r.Header.Get(name) }
func (h httpSource) query(name string) string  { return h.q.Get(name) }

// copyResponseHeaders forwards the backend's response metadata as headers.
func copyResponseHeaders(h http.Header, md metadata.MD) {
	for k, vs := range md {
		if strings.HasPrefix(k, "grpc-") || strings.HasPrefix(k, ":") || hopHeaders[k] || strings.HasSuffix(k, "-bin") {
			continue
		}
		for _, v := range vs {
			h.Add(k, v)
		}
	}
}
