package transcode

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"google.golang.org/genproto/googleapis/api/annotations"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

var update = flag.Bool("update", false, "rewrite golden files")

func method(t testing.TB, sd protoreflect.ServiceDescriptor, name string) protoreflect.MethodDescriptor {
	md := sd.Methods().ByName(protoreflect.Name(name))
	if md == nil {
		t.Fatalf("no method %s", name)
	}
	return md
}

// schedulerRouter has deploy/service.yaml's rules plus a few that exercise
// the grammar (custom verbs, **, additional bindings, body field).
func schedulerRouter(t testing.TB) *Router {
	sd := schedulerv1.File_meridian_scheduler_v1_scheduler_proto.Services().Get(0)
	hd := healthpb.File_grpc_health_v1_health_proto.Services().Get(0)
	r := &Router{}
	add := func(md protoreflect.MethodDescriptor, rule *annotations.HttpRule) {
		t.Helper()
		rule.Selector = string(md.FullName())
		if err := r.AddRule(rule, md); err != nil {
			t.Fatal(err)
		}
	}
	get := func(p string) *annotations.HttpRule {
		return &annotations.HttpRule{Pattern: &annotations.HttpRule_Get{Get: p}}
	}
	post := func(p, body string) *annotations.HttpRule {
		return &annotations.HttpRule{Pattern: &annotations.HttpRule_Post{Post: p}, Body: body}
	}
	add(method(t, hd, "Check"), get("/v1/health"))
	add(method(t, sd, "CreateSession"), post("/v1/sessions", "*"))
	getRule := get("/v1/{name=sessions/*}")
	getRule.AdditionalBindings = []*annotations.HttpRule{get("/v1/by-path/{name=**}")}
	add(method(t, sd, "GetSession"), getRule)
	add(method(t, sd, "ListSessions"), get("/v1/sessions"))
	add(method(t, sd, "StopSession"), post("/v1/{name=sessions/*}:stop", ""))
	add(method(t, sd, "KeepAliveSession"), post("/v1/{name=sessions/*}:keepAlive", ""))
	add(method(t, sd, "WatchSession"), get("/v1/{name=sessions/*}:watch"))
	add(method(t, sd, "GetQuota"), get("/v1/quota"))
	add(method(t, sd, "GetSession"), get("/v1/sessions/latest")) // literal beats {name=sessions/*}
	add(method(t, sd, "ListSessions"), post("/v1/sessions:search", "*"))
	add(method(t, sd, "CreateSession"), post("/v1/pools/{pool}/sessions", "request_id"))
	return r
}

func TestTemplateGrammarErrors(t *testing.T) {
	for _, bad := range []string{"", "v1/x", "/v1/{name", "/v1/{}", "/v1/{a.}", "/v1/**/x", "/v1/{a={b}}", "/v1/x:", "/v1//x", "/v1/{a}/{a}"} {
		if _, err := ParseTemplate(bad); err == nil {
			t.Errorf("ParseTemplate(%q) succeeded, want an error", bad)
		}
	}
	for _, good := range []string{"/", "/v1/*", "/v1/**", "/v1/{name=projects/*/sessions/**}:get", "/v1/{a.b.c}", "/v1/x:verb"} {
		if _, err := ParseTemplate(good); err != nil {
			t.Errorf("ParseTemplate(%q): %v", good, err)
		}
	}
}

// TestTranscodingGolden records, for each request, the method it routes to
// and the request message it becomes (or the error). Run with -update to
// rewrite testdata/requests.golden after an intended change.
func TestTranscodingGolden(t *testing.T) {
	r := schedulerRouter(t)
	cases := []struct{ method, target, body string }{
		{"GET", "/v1/health", ""},
		{"GET", "/v1/health?service=meridian.scheduler.v1.SessionScheduler", ""},
		{"POST", "/v1/sessions", `{"pool":"cpu","requestId":"r-1"}`},
		{"POST", "/v1/sessions", `{"pool":"cpu","request_id":"r-1"}`},
		{"POST", "/v1/sessions", ``},
		{"POST", "/v1/sessions", `{"pool":`},
		{"POST", "/v1/sessions", `{"pool":"cpu","gpus":2}`},
		{"GET", "/v1/sessions/abc", ""},
		{"GET", "/v1/sessions/a%20b", ""},
		{"GET", "/v1/sessions/a%2Fb", ""},
		{"GET", "/v1/sessions/latest", ""},
		{"GET", "/v1/by-path/x/y%2Fz", ""},
		{"GET", "/v1/sessions?pageSize=5&filter=state%20%3D%20RUNNING&page_token=t", ""},
		{"GET", "/v1/sessions?pageSize=five", ""},
		{"GET", "/v1/sessions?color=red", ""},
		{"GET", "/v1/sessions?key=secret&access_token=tok", ""},
		{"POST", "/v1/sessions/abc:stop", ""},
		{"POST", "/v1/sessions/abc:keepAlive", ""},
		{"GET", "/v1/sessions/abc:watch", ""},
		{"POST", "/v1/sessions/abc:explode", ""},
		{"DELETE", "/v1/sessions/abc", ""},
		{"POST", "/v1/sessions:search", `{"filter":"state = QUEUED"}`},
		{"POST", "/v1/pools/gpu-t4x2/sessions", `"req-9"`},
		{"POST", "/v1/pools/gpu-t4x2/sessions?requestId=q", `"req-9"`},
		{"GET", "/v1/quota", ""},
		{"GET", "/v2/anything", ""},
	}
	var out strings.Builder
	for _, c := range cases {
		u, _ := url.Parse(c.target)
		fmt.Fprintf(&out, "%s %s %s\n", c.method, c.target, c.body)
		m, err := r.Match(c.method, u.EscapedPath())
		if err != nil {
			fmt.Fprintf(&out, "  -> %v\n", err)
			continue
		}
		msg, err := BuildRequest(m, u.Query(), []byte(c.body), RequestOptions{})
		if err != nil {
			// Only our own words go into the golden file: a decoder's
			// error text is protobuf-go's, which varies it per binary.
			var bad *BadRequestError
			if !errors.As(err, &bad) {
				t.Fatalf("%s %s: error %v (%T) is not a *BadRequestError", c.method, c.target, err, err)
			}
			fmt.Fprintf(&out, "  -> %s: %s: %s\n", m.Route.Selector, bad.Where, bad.Problem)
			continue
		}
		js, _ := protojson.MarshalOptions{}.Marshal(msg)
		var compact bytes.Buffer
		_ = json.Compact(&compact, js) // protojson varies its spacing on purpose
		fmt.Fprintf(&out, "  -> %s %s\n", m.Route.Selector, compact.String())
	}
	golden := "testdata/requests.golden"
	if *update {
		if err := os.WriteFile(golden, []byte(out.String()), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update once)", err)
	}
	if out.String() != string(want) {
		t.Errorf("transcoding changed; got:\n%s\nwant:\n%s\n(run with -update if intended)", out.String(), want)
	}
}

func TestNormalizePathDefeatsTricks(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/health":                 "/v1/health",
		"//v1//health":               "/v1/health",
		"/v1/health/../sessions":     "/v1/sessions",
		"/v1/health/%2e%2e/sessions": "/v1/sessions",
		"/v1/health/%2E%2e/sessions": "/v1/sessions",
		"/v1/./health":               "/v1/health",
		"/v1/sessions/a%2Fb":         "/v1/sessions/a%2Fb",
		"/v1/sessions/":              "/v1/sessions/",
	} {
		got, err := NormalizePath(in, PathOptions{})
		if err != nil || got != want {
			t.Errorf("NormalizePath(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"/..", "/v1/../..", "/%2e%2e/etc", "/v1\\..\\x", "/v1/%00"} {
		if _, err := NormalizePath(bad, PathOptions{}); !errors.Is(err, ErrBadPath) {
			t.Errorf("NormalizePath(%q): err = %v, want ErrBadPath", bad, err)
		}
	}
	if _, err := NormalizePath("/v1/sessions/a%2fb", PathOptions{DisallowEscapedSlashes: true}); err == nil {
		t.Error("escaped slash allowed with DisallowEscapedSlashes")
	}
}

func TestResponseBodyAndOptions(t *testing.T) {
	sd := schedulerv1.File_meridian_scheduler_v1_scheduler_proto.Services().Get(0)
	list := method(t, sd, "ListSessions")
	rt := &Route{Method: list, ResponseBody: "sessions"}
	resp := dynamicpb.NewMessage(list.Output())
	if err := protojson.Unmarshal([]byte(`{"sessions":[{"name":"sessions/a","state":"RUNNING"}],"nextPageToken":"n"}`), resp); err != nil {
		t.Fatal(err)
	}
	b, err := MarshalResponse(rt, resp, ResponseOptions{})
	if err != nil || !strings.HasPrefix(string(b), "[") || !strings.Contains(string(b), `"sessions/a"`) {
		t.Fatalf("response_body sessions = %s, %v; want the list alone", b, err)
	}
	b, _ = MarshalResponse(&Route{Method: list}, resp, ResponseOptions{EnumsAsInts: true, PreserveProtoFieldNames: true})
	if !strings.Contains(string(b), `"state":3`) || !strings.Contains(string(b), `"next_page_token"`) {
		t.Fatalf("options not applied: %s", b)
	}
	b, _ = MarshalResponse(&Route{Method: list}, resp, ResponseOptions{AlwaysPrintPrimitiveFields: true})
	if !strings.Contains(string(b), `"queuePosition"`) {
		t.Fatalf("always_print_primitive_fields not applied: %s", b)
	}
}

func FuzzParseTemplate(f *testing.F) {
	for _, s := range []string{"/v1/{name=sessions/*}:stop", "/v1/**", "/{a.b=x/**}"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tpl, err := ParseTemplate(s)
		if err != nil {
			return
		}
		segs := strings.Split(strings.TrimPrefix(s, "/"), "/")
		_, _, _ = tpl.match(segs) // must not panic
	})
}

func FuzzNormalizePath(f *testing.F) {
	f.Add("/v1/health/../sessions")
	f.Fuzz(func(t *testing.T, s string) {
		out, err := NormalizePath(s, PathOptions{})
		if err != nil {
			return
		}
		for _, seg := range strings.Split(out, "/") {
			if l := strings.ToLower(seg); l == ".." || l == "%2e%2e" || l == "." {
				t.Fatalf("NormalizePath(%q) = %q keeps a dot-segment", s, out)
			}
		}
	})
}
