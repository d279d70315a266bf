package edge

import (
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// idempotency decides which requests may be sent again after they may have
// reached a backend. (A request that provably never reached one is always
// retried.)
type idempotency struct {
	grpc []methodRule
	http []httpRule
}

type methodRule struct {
	svc, method string // path.Match patterns
	field       int    // > 0: only when this field is set in the request
}

type httpRule struct {
	verb, path string // path may end in "*"; matches by path.Match segments
	jsonField  string // only when the JSON body has this field non-empty
}

// DefaultIdempotentHTTP: safe methods, and the scheduler's REST calls that
// are safe to repeat (a create with a requestId, stop, keep-alive).
var DefaultIdempotentHTTP = []string{
	"GET *", "HEAD *", "OPTIONS *",
	"POST /v1/sessions=requestId", "POST /v1/sessions=request_id",
	"POST /v1/sessions/*:stop", "POST /v1/sessions/*:keepAlive",
}

func parseIdempotent(grpcRules []string) (*idempotency, error) {
	id := &idempotency{}
	for _, r := range grpcRules {
		spec, field := r, 0
		if i := strings.LastIndexByte(r, '='); i >= 0 {
			n, err := strconv.Atoi(r[i+1:])
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("idempotent method %q: after = give a field number", r)
			}
			spec, field = r[:i], n
		}
		spec = strings.TrimPrefix(spec, "/")
		i := strings.LastIndexByte(spec, '/')
		if i < 0 {
			return nil, fmt.Errorf("idempotent method %q: want /package.Service/Method (globs allowed)", r)
		}
		id.grpc = append(id.grpc, methodRule{svc: spec[:i], method: spec[i+1:], field: field})
	}
	for _, r := range DefaultIdempotentHTTP {
		verb, rest, _ := strings.Cut(r, " ")
		p, field, _ := strings.Cut(rest, "=")
		id.http = append(id.http, httpRule{verb: verb, path: p, jsonField: field})
	}
	return id, nil
}

// grpcOK reports whether a gRPC call may be repeated; first is its first
// request message (nil if none yet).
func (id *idempotency) grpcOK(fullMethod string, first []byte) bool {
	m := strings.TrimPrefix(fullMethod, "/")
	i := strings.LastIndexByte(m, '/')
	if i < 0 {
		return false
	}
	svc, meth := m[:i], m[i+1:]
	for _, r := range id.grpc {
		okS, _ := path.Match(r.svc, svc)
		okM, _ := path.Match(r.method, meth)
		if okS && okM && (r.field == 0 || hasField(first, r.field)) {
			return true
		}
	}
	return false
}

// hasField reports whether a serialized message sets field n (non-empty).
func hasField(msg []byte, n int) bool {
	for len(msg) > 0 {
		num, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return false
		}
		msg = msg[l:]
		vl := protowire.ConsumeFieldValue(num, typ, msg)
		if vl < 0 {
			return false
		}
		if int(num) == n {
			if typ == protowire.BytesType {
				v, _ := protowire.ConsumeBytes(msg)
				return len(v) > 0
			}
			return true
		}
		msg = msg[vl:]
	}
	return false
}

// httpOK reports whether a REST request may be repeated.
func (id *idempotency) httpOK(verb, p string, body []byte) bool {
	for _, r := range id.http {
		if r.verb != verb {
			continue
		}
		if r.path != "*" {
			if ok, _ := path.Match(r.path, p); !ok {
				continue
			}
		}
		if r.jsonField == "" {
			return true
		}
		var obj map[string]any
		if json.Unmarshal(body, &obj) == nil {
			if v, ok := obj[r.jsonField].(string); ok && v != "" {
				return true
			}
		}
	}
	return false
}
