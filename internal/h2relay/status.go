package h2relay

import (
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"
)

// maxStatusMessage caps the grpc-message the relay writes, in bytes as
// sent (percent-encoded). Messages may echo what a client sent (a key id,
// a content-type): uncapped, a client that sends the same cheap
// (HPACK-indexed) request again and again makes each answer cost
// kilobytes of memory until it reads them.
const maxStatusMessage = 512

// statusFields appends grpc-status and grpc-message.
func statusFields(f []hpack.HeaderField, code codes.Code, msg string) []hpack.HeaderField {
	f = append(f, hpack.HeaderField{Name: "grpc-status", Value: itoa(int(code))})
	if msg != "" {
		f = append(f, hpack.HeaderField{Name: "grpc-message", Value: encodeGrpcMessage(capMessage(msg))})
	}
	return f
}

// capMessage cuts msg, at a character boundary and marked with "...", so
// that it takes at most maxStatusMessage bytes percent-encoded.
func capMessage(msg string) string {
	if encodedLen(msg) <= maxStatusMessage {
		return msg
	}
	n, i := 0, 0
	for i < len(msg) {
		_, size := utf8.DecodeRuneInString(msg[i:])
		w := encodedLen(msg[i : i+size])
		if n+w > maxStatusMessage-len("...") {
			break
		}
		n, i = n+w, i+size
	}
	return msg[:i] + "..."
}

// encodedLen is the length of encodeGrpcMessage(msg).
func encodedLen(msg string) int {
	n := len(msg)
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < ' ' || c > '~' || c == '%' {
			n += 2
		}
	}
	return n
}

// validResponse checks the pseudo-headers of an upstream's header block
// (RFC 9113 §8.3.2): a response's headers start with exactly one
// :status and have no other pseudo-header; trailers have none.
// (A missing :status is the caller's: it answers as grpc-go does.)
func validResponse(fields []hpack.HeaderField, first bool) bool {
	for i, f := range fields {
		if strings.HasPrefix(f.Name, ":") && (!first || f.Name != ":status" || i > 0) {
			return false
		}
	}
	return true
}

// grpcStatus reads the status of a response's trailers (or of a
// trailers-only response); without grpc-status, the HTTP status decides
// as in grpc-go's client.
func grpcStatus(fields []hpack.HeaderField) (codes.Code, string) {
	var st, msg, httpStatus string
	found := false
	for _, f := range fields {
		switch f.Name {
		case "grpc-status":
			st, found = f.Value, true
		case "grpc-message":
			msg = decodeGrpcMessage(f.Value)
		case ":status":
			httpStatus = f.Value
		}
	}
	if found {
		n, err := strconv.Atoi(st)
		if err != nil || n < 0 || n > 16 {
			return codes.Unknown, "malformed grpc-status " + quote(st)
		}
		return codes.Code(n), msg
	}
	if httpStatus != "" && httpStatus != "200" {
		code, _ := httpStatusCode(fields)
		return code, "upstream answered HTTP " + httpStatus + " without a gRPC status"
	}
	return codes.Internal, "upstream trailers carry no grpc-status"
}

// httpStatusCode maps a response's :status the way grpc-go's client does
// when there is no gRPC status; ok reports a 200.
func httpStatusCode(fields []hpack.HeaderField) (codes.Code, bool) {
	switch statusOf(fields) {
	case "200":
		return codes.OK, true
	case "400":
		return codes.Internal, false
	case "401":
		return codes.Unauthenticated, false
	case "403":
		return codes.PermissionDenied, false
	case "404":
		return codes.Unimplemented, false
	case "429", "502", "503", "504":
		return codes.Unavailable, false
	}
	return codes.Unknown, false
}

func statusOf(fields []hpack.HeaderField) string {
	for _, f := range fields {
		if f.Name == ":status" {
			return f.Value
		}
	}
	return ""
}

// Small integers are formatted without allocating.
var smallInts = func() (s [600]string) {
	for i := range s {
		s[i] = strconv.Itoa(i)
	}
	return s
}()

func itoa(n int) string {
	if n >= 0 && n < len(smallInts) {
		return smallInts[n]
	}
	return strconv.Itoa(n)
}

// encodeGrpcMessage percent-encodes a status message as the gRPC HTTP/2
// protocol asks: bytes outside printable ASCII, and '%'.
func encodeGrpcMessage(msg string) string {
	clean := true
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < ' ' || c > '~' || c == '%' {
			clean = false
			break
		}
	}
	if clean {
		return msg
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(msg)+16)
	for i := 0; i < len(msg); i++ {
		if c := msg[i]; c < ' ' || c > '~' || c == '%' {
			b = append(b, '%', hex[c>>4], hex[c&15])
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func decodeGrpcMessage(msg string) string {
	i := 0
	for i < len(msg) && msg[i] != '%' {
		i++
	}
	if i == len(msg) {
		return msg
	}
	b := []byte(msg[:i])
	for ; i < len(msg); i++ {
		if msg[i] == '%' && i+2 < len(msg) {
			if v, err := strconv.ParseUint(msg[i+1:i+3], 16, 8); err == nil {
				b = append(b, byte(v))
				i += 2
				continue
			}
		}
		b = append(b, msg[i])
	}
	return string(b)
}
