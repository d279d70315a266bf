package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/meridian-gw/meridian/gateway/auth"
	"github.com/meridian-gw/meridian/gateway/transcode"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
)

// serveREST transcodes a REST/JSON call: the path is matched to a method
// by http.rules, the call decided like any other, then sent to the
// backend as gRPC and its answer rendered as JSON.
func (g *Gateway) serveREST(w http.ResponseWriter, r *http.Request) {
	rec := &callRecord{protocol: "rest", method: r.Method + " " + r.URL.Path, start: time.Now()}
	defer func() { g.finish(rec, r.Header.Get("Traceparent")) }()
	st := g.state.Load()
	path, err := transcode.NormalizePath(r.URL.EscapedPath(), g.opts.Path)
	if err != nil {
		g.restError(w, rec, http.StatusBadRequest, status.New(codes.InvalidArgument, "The request path is not valid."))
		return
	}
	m, err := st.router.Match(r.Method, path)
	switch {
	case errors.Is(err, transcode.ErrNotFound):
		if st.routerErr != nil {
			g.restError(w, rec, http.StatusServiceUnavailable, status.Newf(codes.Unavailable, "REST transcoding is not ready: %v", st.routerErr))
			return
		}
		g.restError(w, rec, http.StatusNotFound, status.New(codes.NotFound, msgNotDefined))
		return
	case errors.Is(err, transcode.ErrMethodNotAllowed):
		g.restError(w, rec, http.StatusMethodNotAllowed, status.Newf(codes.Unimplemented, "The current request is matched to the defined url template %q but its http method is not allowed", auth.Clip(path)))
		return
	case err != nil:
		g.restError(w, rec, http.StatusBadRequest, status.New(codes.InvalidArgument, err.Error()))
		return
	}
	query := r.URL.Query()
	d, ref := g.decide(r.Context(), st, m.Route.Selector, httpSource{r, query}, rec)
	if ref != nil {
		g.restRefuse(w, rec, ref)
		return
	}
	if d.notServing {
		g.restError(w, rec, http.StatusServiceUnavailable, status.New(codes.Unavailable, "draining: NOT_SERVING"))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			g.restError(w, rec, http.StatusRequestEntityTooLarge, status.Newf(codes.InvalidArgument, "request body larger than %d bytes (--client_max_body_size)", tooBig.Limit))
			return
		}
		g.restError(w, rec, http.StatusBadRequest, status.Newf(codes.InvalidArgument, "reading the request body: %v", err))
		return
	}
	rec.bytesIn.Add(int64(len(body)))
	req, err := transcode.BuildRequest(m, query, body, transcode.RequestOptions{
		IgnoreUnknownQueryParameters: g.opts.Transcoding.IgnoreUnknownQueryParameters, Resolver: st.types})
	if err != nil {
		g.restError(w, rec, http.StatusBadRequest, status.New(codes.InvalidArgument, err.Error()))
		return
	}
	md := httpMetadata(r, d.id)
	ctx := metadata.NewOutgoingContext(r.Context(), md)
	fullMethod := "/" + string(m.Route.Method.Parent().FullName()) + "/" + string(m.Route.Method.Name())
	if m.Route.Method.IsStreamingServer() {
		g.restStream(ctx, w, rec, st, m, fullMethod, req)
		return
	}
	ctx, cancel := context.WithTimeout(ctx, g.opts.BackendDeadline)
	defer cancel()
	resp := dynamicpb.NewMessage(m.Route.Method.Output())
	var hdr metadata.MD
	if err := g.backend.Invoke(ctx, fullMethod, req, resp, grpc.Header(&hdr)); err != nil {
		st := status.Convert(backendErr(err))
		if st.Code() == codes.Unavailable {
			g.metrics.backendError(rec.selector)
		}
		g.restError(w, rec, transcode.HTTPStatus(st.Code()), st)
		return
	}
	out, err := transcode.MarshalResponse(m.Route, resp, g.responseOptions(st))
	if err != nil {
		g.restError(w, rec, http.StatusInternalServerError, status.Newf(codes.Internal, "rendering the response: %v", err))
		return
	}
	code := http.StatusOK
	if rec.selector == healthCheck && !reportsServing(resp) {
		code = http.StatusServiceUnavailable
	}
	copyResponseHeaders(w.Header(), hdr)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	n, _ := w.Write(out)
	rec.bytesOut.Add(int64(n))
	rec.httpStatus = code
}

// restStream relays a server stream as a JSON array ("[m1,m2]") or, with
// --transcoding_stream_newline_delimited, one message per line; each
// message is flushed as it arrives. An error after the first message ends
// the array with {"error": {...}}.
func (g *Gateway) restStream(ctx context.Context, w http.ResponseWriter, rec *callRecord, st *state, m *transcode.Match, fullMethod string, req proto.Message) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := g.backend.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, fullMethod)
	if err == nil {
		err = cs.SendMsg(req)
	}
	if err == nil {
		err = cs.CloseSend()
	}
	if err != nil {
		s := status.Convert(backendErr(err))
		g.restError(w, rec, transcode.HTTPStatus(s.Code()), s)
		return
	}
	opts := g.responseOptions(st)
	flusher, _ := w.(http.Flusher)
	nd := g.opts.Transcoding.StreamNewlineDelimited
	sent := 0
	for {
		resp := dynamicpb.NewMessage(m.Route.Method.Output())
		err := cs.RecvMsg(resp)
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = nil
			}
			if sent == 0 {
				if err != nil {
					s := status.Convert(err)
					g.restError(w, rec, transcode.HTTPStatus(s.Code()), s)
					return
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusOK)
				rec.httpStatus = http.StatusOK
				if !nd {
					_, _ = io.WriteString(w, "[]")
				}
				return
			}
			if err != nil {
				s := status.Convert(err)
				rec.code = s.Code()
				sep := ","
				if nd {
					sep = ""
				}
				fmt.Fprintf(w, `%s{"error":%s}`, sep, transcode.ErrorBody(transcode.HTTPStatus(s.Code()), s, opts))
				if nd {
					_, _ = io.WriteString(w, "\n")
				}
			}
			if !nd {
				_, _ = io.WriteString(w, "]")
			}
			return
		}
		b, err := transcode.MarshalResponse(m.Route, resp, opts)
		if err != nil {
			return
		}
		if sent == 0 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusOK)
			rec.httpStatus = http.StatusOK
			if !nd {
				_, _ = io.WriteString(w, "[")
			}
		} else if !nd {
			_, _ = io.WriteString(w, ",")
		}
		n, _ := w.Write(b)
		rec.bytesOut.Add(int64(n))
		if nd {
			_, _ = io.WriteString(w, "\n")
		}
		sent++
		if flusher != nil {
			flusher.Flush()
		}
	}
}

func (g *Gateway) responseOptions(st *state) transcode.ResponseOptions {
	o := g.opts.Transcoding.ResponseOptions
	o.Resolver = st.types
	return o
}

// restError writes ESPv2's JSON error body.
func (g *Gateway) restError(w http.ResponseWriter, rec *callRecord, code int, st *status.Status) {
	rec.httpStatus, rec.code = code, st.Code()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(transcode.ErrorBody(code, st, g.opts.Transcoding.ResponseOptions))
}

// restRefuse answers a refused call: ESPv2's JSON error, with
// WWW-Authenticate for credentials refused and Retry-After for quota.
func (g *Gateway) restRefuse(w http.ResponseWriter, rec *callRecord, ref *refusal) {
	switch ref.httpStatus {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+g.opts.ServiceName+`", error="invalid_token"`)
	case http.StatusForbidden:
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+g.opts.ServiceName+`", error="insufficient_scope"`)
	}
	if ref.retryAfter != "" {
		w.Header().Set("Retry-After", ref.retryAfter)
	}
	g.restError(w, rec, ref.httpStatus, ref.status)
}
