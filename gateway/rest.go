package gateway

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/gateway/auth"
	"github.com/meridian-gw/meridian/gateway/transcode"
	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/dynamicpb"
)

// ServeHTTP serves everything that is not native gRPC on grpc-go's own
// transport: REST/JSON (transcoded), gRPC-Web, CORS preflights, --healthz,
// and native gRPC that arrived on an HTTP/2 connection the demultiplexer
// handed to net/http.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ct := r.Header.Get("Content-Type")
	if r.ProtoMajor == 2 && strings.HasPrefix(ct, "application/grpc") && !strings.HasPrefix(ct, "application/grpc-web") {
		g.grpc.ServeHTTP(w, r)
		return
	}
	if g.opts.HSTS && r.TLS != nil {
		w.Header().Set("Strict-Transport-Security", "max-age=31536000; includeSubDomains")
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
	rec.selector = m.Route.Selector
	if rec.selector == healthCheck && g.draining.Load() {
		g.restError(w, rec, http.StatusServiceUnavailable, status.New(codes.Unavailable, "draining: NOT_SERVING"))
		return
	}
	pol := st.policy(m.Route.Selector)
	query := r.URL.Query()
	id, err := st.authenticate(r.Context(), pol, httpSource{r, query})
	if err != nil {
		g.restAuthError(w, rec, err)
		return
	}
	rec.consumer = id.quotaKey()
	if ok, wait, limit := st.quotas.take(id.quotaKey(), pol.costs); !ok {
		w.Header().Set("Retry-After", retryAfter(wait))
		g.restError(w, rec, http.StatusTooManyRequests, status.Newf(codes.ResourceExhausted, "Quota exceeded for quota metric %q: retry in %ss", limit, retryAfter(wait)))
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
	md := httpMetadata(r, id)
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
	if rec.selector == healthCheck && !serving(resp) {
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

func (g *Gateway) restAuthError(w http.ResponseWriter, rec *callRecord, err error) {
	var ae *auth.Error
	if !errors.As(err, &ae) {
		g.restError(w, rec, http.StatusInternalServerError, status.Newf(codes.Internal, "authentication: %v", err))
		return
	}
	rec.authReason = ae.Reason
	g.metrics.authFailure(ae.Reason)
	switch ae.HTTPStatus {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+g.opts.ServiceName+`", error="invalid_token"`)
	case http.StatusForbidden:
		w.Header().Set("WWW-Authenticate", `Bearer realm="`+g.opts.ServiceName+`", error="insufficient_scope"`)
	}
	g.restError(w, rec, ae.HTTPStatus, status.New(ae.Code, ae.Message))
}

// httpSource reads credentials from an HTTP request.
type httpSource struct {
	r *http.Request
	q url.Values
}

func (h httpSource) header(name string) string { return h.r.Header.Get(name) }
func (h httpSource) query(name string) string  { return h.q.Get(name) }

// httpMetadata turns request headers into backend metadata, dropping
// transport headers and every client-sent X-Endpoint-* header, and adding
// the verified identity and X-Forwarded-For/-Proto.
func httpMetadata(r *http.Request, id *identity) metadata.MD {
	md := metadata.MD{}
	for k, vs := range r.Header {
		lk := strings.ToLower(k)
		if hopHeaders[lk] || strings.HasPrefix(lk, "x-endpoint-") || strings.HasPrefix(lk, "grpc-") || strings.HasSuffix(lk, "-bin") {
			continue
		}
		for _, v := range vs {
			if printableASCII(v) {
				md.Append(lk, v)
			}
		}
	}
	if id.claims != nil {
		md.Set(userInfoKey, id.claims.UserInfo)
		md.Set(ownerKey, id.claims.Owner)
	}
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		if prior := r.Header.Get("X-Forwarded-For"); prior != "" {
			host = prior + ", " + host
		}
		md.Set("x-forwarded-for", host)
	}
	proto := "http"
	if r.TLS != nil {
		proto = "https"
	}
	md.Set("x-forwarded-proto", proto)
	return md
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

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

// serveGRPCWeb bridges gRPC-Web (binary or base64 text) to the backend,
// passing message bytes through: unary and server-streaming calls.
func (g *Gateway) serveGRPCWeb(w http.ResponseWriter, r *http.Request, ct string) {
	rec := &callRecord{protocol: "grpc-web", method: r.URL.Path, start: time.Now()}
	defer func() { g.finish(rec, r.Header.Get("Traceparent")) }()
	text := strings.HasPrefix(ct, "application/grpc-web-text")
	respCT := "application/grpc-web+proto"
	if text {
		respCT = "application/grpc-web-text+proto"
	}
	fail := func(err error) {
		s := status.Convert(err)
		rec.code = s.Code()
		w.Header().Set("Content-Type", respCT)
		w.Header().Set("Grpc-Status", strconv.Itoa(int(s.Code())))
		w.Header().Set("Grpc-Message", url.PathEscape(s.Message()))
		w.WriteHeader(http.StatusOK)
		rec.httpStatus = http.StatusOK
	}
	st := g.state.Load()
	if r.Method != http.MethodPost {
		fail(status.Error(codes.InvalidArgument, "gRPC-Web requests must be POST"))
		return
	}
	selector, ok := st.selectorForPath(r.URL.Path)
	if !ok {
		fail(status.Error(codes.Unimplemented, msgNotDefined))
		return
	}
	rec.selector = selector
	pol := st.policy(selector)
	id, err := st.authenticate(r.Context(), pol, httpSource{r, r.URL.Query()})
	if _, err := g.admit(st, pol, rec, id, err); err != nil {
		fail(err)
		return
	}
	var body io.Reader = r.Body
	if text {
		body = base64.NewDecoder(base64.StdEncoding, r.Body)
	}
	raw, err := io.ReadAll(body)
	if err != nil {
		fail(status.Errorf(codes.InvalidArgument, "reading the request: %v", err))
		return
	}
	msgs, err := parseFrames(raw)
	if err != nil {
		fail(status.Error(codes.InvalidArgument, err.Error()))
		return
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(r.Context(), httpMetadata(r, id)))
	defer cancel()
	cs, err := g.backend.NewStream(ctx, rawgrpc.StreamDesc, r.URL.Path, grpc.ForceCodecV2(rawgrpc.Codec{}))
	if err != nil {
		fail(backendErr(err))
		return
	}
	for _, m := range msgs {
		if err := cs.SendMsg(rawgrpc.FrameOf(m)); err != nil {
			break
		}
	}
	_ = cs.CloseSend()
	hdr, _ := cs.Header()
	w.Header().Set("Content-Type", respCT)
	copyResponseHeaders(w.Header(), hdr)
	w.WriteHeader(http.StatusOK)
	rec.httpStatus = http.StatusOK
	out := io.Writer(w)
	var enc io.WriteCloser
	if text {
		enc = base64.NewEncoder(base64.StdEncoding, w)
		out = enc
	}
	flusher, _ := w.(http.Flusher)
	for {
		f := &rawgrpc.Frame{}
		err = cs.RecvMsg(f)
		if err != nil {
			break
		}
		b := f.Data.Materialize()
		f.Data.Free()
		writeFrame(out, 0, b)
		rec.bytesOut.Add(int64(len(b)))
		if flusher != nil && !text {
			flusher.Flush()
		}
	}
	s := status.Convert(err)
	if errors.Is(err, io.EOF) {
		s = status.New(codes.OK, "")
	}
	rec.code = s.Code()
	var tr strings.Builder
	fmt.Fprintf(&tr, "grpc-status: %d\r\ngrpc-message: %s\r\n", s.Code(), url.PathEscape(s.Message()))
	for k, vs := range cs.Trailer() {
		for _, v := range vs {
			fmt.Fprintf(&tr, "%s: %s\r\n", k, v)
		}
	}
	writeFrame(out, 0x80, []byte(tr.String()))
	if enc != nil {
		_ = enc.Close()
	}
}

func parseFrames(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		if len(b) < 5 {
			return nil, errors.New("truncated gRPC-Web frame")
		}
		if b[0]&0x01 != 0 {
			return nil, errors.New("compressed gRPC-Web frames are not supported")
		}
		n := binary.BigEndian.Uint32(b[1:5])
		if uint64(len(b)-5) < uint64(n) {
			return nil, errors.New("truncated gRPC-Web frame")
		}
		out = append(out, b[5:5+n])
		b = b[5+n:]
	}
	return out, nil
}

func writeFrame(w io.Writer, flag byte, b []byte) {
	var hdr [5]byte
	hdr[0] = flag
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(b)))
	_, _ = w.Write(hdr[:])
	_, _ = w.Write(b)
}

func itoa(n int) string { return strconv.Itoa(n) }
