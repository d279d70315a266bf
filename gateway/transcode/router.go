package transcode

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Route is one HTTP binding of a gRPC method.
type Route struct {
	HTTPMethod   string // GET, POST, … ("*" for custom kinds that take any)
	Template     *Template
	Body         string // "", "*", or a field name
	ResponseBody string // "" or a field name
	Method       protoreflect.MethodDescriptor
	// Selector is the method's full name, e.g. "meridian.scheduler.v1.SessionScheduler.GetSession".
	Selector string
}

// Router finds the route for an HTTP request.
type Router struct {
	routes []*Route
}

// AddRule adds a rule and its additional_bindings (one level, as ESP).
func (r *Router) AddRule(rule *annotations.HttpRule, md protoreflect.MethodDescriptor) error {
	if err := r.add(rule, md); err != nil {
		return err
	}
	for i, b := range rule.GetAdditionalBindings() {
		if len(b.GetAdditionalBindings()) > 0 {
			return fmt.Errorf("%s: additional_bindings[%d] has additional_bindings of its own; only one level is allowed", rule.GetSelector(), i)
		}
		if err := r.add(b, md); err != nil {
			return fmt.Errorf("%s: additional_bindings[%d]: %w", rule.GetSelector(), i, err)
		}
	}
	return nil
}

func (r *Router) add(rule *annotations.HttpRule, md protoreflect.MethodDescriptor) error {
	var method, path string
	switch p := rule.GetPattern().(type) {
	case *annotations.HttpRule_Get:
		method, path = "GET", p.Get
	case *annotations.HttpRule_Put:
		method, path = "PUT", p.Put
	case *annotations.HttpRule_Post:
		method, path = "POST", p.Post
	case *annotations.HttpRule_Delete:
		method, path = "DELETE", p.Delete
	case *annotations.HttpRule_Patch:
		method, path = "PATCH", p.Patch
	case *annotations.HttpRule_Custom:
		method, path = p.Custom.GetKind(), p.Custom.GetPath()
	default:
		return fmt.Errorf("%s: no HTTP method and path (get, post, …)", rule.GetSelector())
	}
	t, err := ParseTemplate(path)
	if err != nil {
		return fmt.Errorf("%s: %w", rule.GetSelector(), err)
	}
	in, out := md.Input(), md.Output()
	for _, v := range t.variables {
		if _, err := resolveField(in, v.fieldPath); err != nil {
			return fmt.Errorf("%s: path variable %s: %w", rule.GetSelector(), strings.Join(v.fieldPath, "."), err)
		}
	}
	if b := rule.GetBody(); b != "" && b != "*" {
		if in.Fields().ByName(protoreflect.Name(b)) == nil {
			return fmt.Errorf("%s: body %q: no such field in %s", rule.GetSelector(), b, in.FullName())
		}
	}
	if b := rule.GetResponseBody(); b != "" {
		if out.Fields().ByName(protoreflect.Name(b)) == nil {
			return fmt.Errorf("%s: response_body %q: no such field in %s", rule.GetSelector(), b, out.FullName())
		}
	}
	if md.IsStreamingClient() && rule.GetBody() == "" {
		return fmt.Errorf("%s: a client-streaming method needs a body", rule.GetSelector())
	}
	r.routes = append(r.routes, &Route{HTTPMethod: method, Template: t, Body: rule.GetBody(), ResponseBody: rule.GetResponseBody(),
		Method: md, Selector: string(md.FullName())})
	return nil
}

// Routes lists every route.
func (r *Router) Routes() []*Route { return r.routes }

// Errors from Match.
var (
	ErrNotFound         = errors.New("no route")
	ErrMethodNotAllowed = errors.New("method not allowed")
)

// Match is a matched route with its path variables, decoded.
type Match struct {
	Route *Route
	// Vars maps field paths ("name", "parent.id") to values.
	Vars map[string]string
}

// Match finds the route for method and escapedPath (already normalized).
// Matching is on the escaped path, so "%2F" never splits a segment. The
// last ':' after the last '/' starts a custom verb.
func (r *Router) Match(method, escapedPath string) (*Match, error) {
	if !strings.HasPrefix(escapedPath, "/") {
		return nil, ErrNotFound
	}
	segs := strings.Split(escapedPath[1:], "/")
	last := segs[len(segs)-1]
	verb := ""
	if i := strings.LastIndexByte(last, ':'); i >= 0 {
		verb = last[i+1:]
		withVerb := append(append([]string(nil), segs[:len(segs)-1]...), last[:i])
		if m, err := r.match(method, withVerb, verb); !errors.Is(err, ErrNotFound) {
			return m, err
		}
	}
	return r.match(method, segs, "")
}

func (r *Router) match(method string, segs []string, verb string) (*Match, error) {
	var best *Route
	var bestBind [][]string
	var bestScore []segKind
	pathMatched := false
	for _, rt := range r.routes {
		if rt.Template.verb != verb {
			continue
		}
		bind, score, ok := rt.Template.match(segs)
		if !ok {
			continue
		}
		pathMatched = true
		if rt.HTTPMethod != method && rt.HTTPMethod != "*" {
			continue
		}
		if best == nil || moreSpecific(score, bestScore) {
			best, bestBind, bestScore = rt, bind, score
		}
	}
	if best == nil {
		if pathMatched {
			return nil, ErrMethodNotAllowed
		}
		return nil, ErrNotFound
	}
	m := &Match{Route: best, Vars: map[string]string{}}
	for i, v := range best.Template.variables {
		val, err := decodeBinding(bestBind[i], len(bestBind[i]) != 1 || v.end < 0 || v.end-v.start > 1)
		if err != nil {
			return nil, err
		}
		m.Vars[strings.Join(v.fieldPath, ".")] = val
	}
	return m, nil
}

// moreSpecific prefers literal over "*" over "**", segment by segment.
func moreSpecific(a, b []segKind) bool {
	for i := 0; i < len(a) && i < len(b); i++ {
		if a[i] != b[i] {
			return a[i] > b[i]
		}
	}
	return len(a) > len(b)
}

// decodeBinding joins a variable's segments. A single-segment variable is
// fully percent-decoded; a multi-segment one keeps %2F encoded, as ESP does.
func decodeBinding(segs []string, multi bool) (string, error) {
	out := make([]string, len(segs))
	for i, s := range segs {
		if multi {
			s = strings.NewReplacer("%2F", "%252F", "%2f", "%252f").Replace(s)
		}
		d, err := url.PathUnescape(s)
		if err != nil {
			return "", fmt.Errorf("bad percent-encoding in %q", s)
		}
		out[i] = d
	}
	return strings.Join(out, "/"), nil
}

// resolveField walks a dotted field path from md.
func resolveField(md protoreflect.MessageDescriptor, path []string) (protoreflect.FieldDescriptor, error) {
	var fd protoreflect.FieldDescriptor
	for i, name := range path {
		if md == nil {
			return nil, fmt.Errorf("%s is not a message", strings.Join(path[:i], "."))
		}
		fd = md.Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			fd = md.Fields().ByJSONName(name)
		}
		if fd == nil {
			return nil, fmt.Errorf("no field %q in %s", name, md.FullName())
		}
		if fd.IsList() && i < len(path)-1 || fd.IsMap() {
			return nil, fmt.Errorf("field %q cannot be traversed", name)
		}
		md = fd.Message()
	}
	return fd, nil
}
