package gateway

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/internal/grpcframe"
	"github.com/meridian-gw/meridian/internal/rawgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

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
	d, ref := g.decidePath(r.Context(), st, r.URL.Path, httpSource{r, r.URL.Query()}, rec)
	if ref != nil {
		if ref.retryAfter != "" {
			w.Header().Set("Retry-After", ref.retryAfter)
		}
		fail(ref.status.Err())
		return
	}
	if d.notServing {
		w.Header().Set("Content-Type", respCT)
		w.WriteHeader(http.StatusOK)
		rec.httpStatus = http.StatusOK
		out, enc := webWriter(w, text)
		writeFrame(out, 0, notServing)
		writeFrame(out, grpcframe.FlagTrailers, []byte("grpc-status: 0\r\ngrpc-message: \r\n"))
		if enc != nil {
			_ = enc.Close()
		}
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
	conn, md := g.backend, httpMetadata(r, d.id)
	if d.local {
		conn, md[localKeyHeader] = g.local.conn, []string{g.local.key}
	}
	ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(r.Context(), md))
	defer cancel()
	cs, err := conn.NewStream(ctx, rawgrpc.StreamDesc, r.URL.Path, grpc.ForceCodecV2(rawgrpc.Codec{}))
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
	out, enc := webWriter(w, text)
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
	writeFrame(out, grpcframe.FlagTrailers, []byte(tr.String()))
	if enc != nil {
		_ = enc.Close()
	}
}

// webWriter is where response frames go: w itself, or a base64 encoder
// (returned too, to be closed) for grpc-web-text.
func webWriter(w io.Writer, text bool) (io.Writer, io.WriteCloser) {
	if !text {
		return w, nil
	}
	enc := base64.NewEncoder(base64.StdEncoding, w)
	return enc, enc
}

// parseFrames splits a gRPC-Web request body into its messages.
func parseFrames(b []byte) ([][]byte, error) {
	var out [][]byte
	for len(b) > 0 {
		flag, msg, rest, err := grpcframe.Next(b)
		if err != nil {
			return nil, errors.New("truncated gRPC-Web frame")
		}
		if flag&grpcframe.FlagCompressed != 0 {
			return nil, errors.New("compressed gRPC-Web frames are not supported")
		}
		out, b = append(out, msg), rest
	}
	return out, nil
}

// writeFrame writes one gRPC-Web frame; a failed write shows as the
// client's disconnect, which ends the call.
func writeFrame(w io.Writer, flag byte, b []byte) { _ = grpcframe.Write(w, flag, b) }

func itoa(n int) string { return strconv.Itoa(n) }
