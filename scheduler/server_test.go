package scheduler

import (
	"encoding/base64"
	"strings"
	"testing"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store/storetest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestCallerMustBeAssertedByATrustedPeer(t *testing.T) {
	st := storetest.Open(t, "sqlite")
	h := newHarness(t, st, testConfig(t, basicConfig))
	req := &schedulerv1.CreateSessionRequest{Pool: "cpu"}

	_, err := h.cl.CreateSession(h.ctx, req)
	wantCode(t, err, codes.Unauthenticated, "X-Endpoint-API-UserInfo header is missing")

	for name, v := range map[string]string{
		"not base64":   "!!!",
		"not json":     base64.RawURLEncoding.EncodeToString([]byte("nope")),
		"no sub/email": base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"x"}`)),
	} {
		ctx := metadata.AppendToOutgoingContext(h.ctx, UserInfoHeader, v)
		_, err := h.cl.CreateSession(ctx, req)
		if err == nil || status.Code(err) != codes.Unauthenticated {
			t.Errorf("%s: err = %v, want Unauthenticated", name, err)
		}
	}
	twice := metadata.AppendToOutgoingContext(h.as("alice"), UserInfoHeader, UserInfo("mallory"))
	_, err = h.cl.CreateSession(twice, req)
	wantCode(t, err, codes.Unauthenticated, "more than once")

	// The same header from a peer outside --trusted_peers is refused.
	untrusted := newHarness(t, st, testConfig(t, basicConfig))
	untrusted.serve(NewServer(untrusted.sched, mustPeers(t, []string{"10.0.0.0/8"})))
	_, err = untrusted.cl.CreateSession(untrusted.as("alice"), req)
	wantCode(t, err, codes.Unauthenticated, "untrusted peer 127.0.0.1")

	// email is used when there is no sub (ESPv2 forwards the raw payload).
	ctx := metadata.AppendToOutgoingContext(h.ctx, UserInfoHeader, base64.RawURLEncoding.EncodeToString([]byte(`{"email":"e@x.org"}`)))
	s, err := h.cl.CreateSession(ctx, req)
	if err != nil || s.Owner != "e@x.org" {
		t.Fatalf("email caller: owner %q, %v", s.GetOwner(), err)
	}
}

// The gateway names the owner in X-Endpoint-API-Owner (ISSUER#SUB when it
// trusts several issuers): the scheduler takes it over the sub in
// X-Endpoint-API-UserInfo, with the same trust rules, and falls back to
// UserInfo behind an ESP that does not send it.
func TestOwnerHeaderNamesTheCaller(t *testing.T) {
	st := storetest.Open(t, "sqlite")
	h := newHarness(t, st, testConfig(t, basicConfig))
	req := &schedulerv1.CreateSessionRequest{Pool: "cpu"}
	for _, c := range []struct {
		name  string
		md    []string
		owner string
	}{
		{"owner and userinfo", []string{OwnerHeader, "https://b.example#alice", UserInfoHeader, UserInfo("alice")}, "https://b.example#alice"},
		{"owner alone", []string{OwnerHeader, "https://a.example#alice"}, "https://a.example#alice"},
		{"userinfo alone (Google's ESP)", []string{UserInfoHeader, UserInfo("alice")}, "alice"},
	} {
		s, err := h.cl.CreateSession(metadata.AppendToOutgoingContext(h.ctx, c.md...), req)
		if err != nil || s.Owner != c.owner {
			t.Errorf("%s: owner %q, %v; want %q", c.name, s.GetOwner(), err, c.owner)
		}
	}
	// Two issuers' alice are two owners: one does not see the other's sessions.
	a := metadata.AppendToOutgoingContext(h.ctx, OwnerHeader, "https://a.example#alice")
	list, err := h.cl.ListSessions(a, &schedulerv1.ListSessionsRequest{})
	if err != nil || len(list.Sessions) != 1 || list.Sessions[0].Owner != "https://a.example#alice" {
		t.Fatalf("a.example's alice lists %v, %v; want her one session", list.GetSessions(), err)
	}
	for _, c := range []struct {
		name, want string
		code       codes.Code
		md         []string
	}{
		{"empty (no sub, no email)", "neither sub nor email", codes.Unauthenticated, []string{OwnerHeader, "", UserInfoHeader, UserInfo("alice")}},
		{"twice", "X-Endpoint-API-Owner appears more than once", codes.Unauthenticated, []string{OwnerHeader, "a", OwnerHeader, "b"}},
		{"too long", "want at most 256", codes.InvalidArgument, []string{OwnerHeader, strings.Repeat("x", 257)}},
		{"not visible ASCII", "want visible ASCII", codes.InvalidArgument, []string{OwnerHeader, "al ice"}},
	} {
		_, err := h.cl.CreateSession(metadata.AppendToOutgoingContext(h.ctx, c.md...), req)
		wantCode(t, err, c.code, c.want)
	}
	untrusted := newHarness(t, st, testConfig(t, basicConfig))
	untrusted.serve(NewServer(untrusted.sched, mustPeers(t, []string{"10.0.0.0/8"})))
	_, err = untrusted.cl.CreateSession(metadata.AppendToOutgoingContext(untrusted.ctx, OwnerHeader, "alice"), req)
	wantCode(t, err, codes.Unauthenticated, "X-Endpoint-API-Owner from untrusted peer 127.0.0.1")
}

func TestUsersSeeOnlyTheirOwnSessions(t *testing.T) {
	h := newHarness(t, storetest.Open(t, "sqlite"), testConfig(t, basicConfig))
	s := h.create("alice", "cpu", "")
	for name, call := range map[string]func() error{
		"get": func() error {
			_, err := h.cl.GetSession(h.as("mallory"), &schedulerv1.GetSessionRequest{Name: s.Name})
			return err
		},
		"stop": func() error {
			_, err := h.cl.StopSession(h.as("mallory"), &schedulerv1.StopSessionRequest{Name: s.Name})
			return err
		},
		"keepalive": func() error {
			_, err := h.cl.KeepAliveSession(h.as("mallory"), &schedulerv1.KeepAliveSessionRequest{Name: s.Name})
			return err
		},
		"watch": func() error {
			st, err := h.cl.WatchSession(h.as("mallory"), &schedulerv1.WatchSessionRequest{Name: s.Name})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		},
	} {
		if err := call(); status.Code(err) != codes.NotFound {
			t.Errorf("%s of another user's session: %v, want NotFound", name, err)
		}
	}
	list, _ := h.cl.ListSessions(h.as("mallory"), &schedulerv1.ListSessionsRequest{})
	if len(list.GetSessions()) != 0 {
		t.Fatalf("mallory lists %d sessions, want 0", len(list.Sessions))
	}
	if got := h.get("alice", s.Name); got.State != STARTING {
		t.Fatalf("alice's session was changed by mallory: %s", got.State)
	}
}

func TestBadInputIsInvalidArgumentNamingTheField(t *testing.T) {
	h := newHarness(t, storetest.Open(t, "sqlite"), testConfig(t, basicConfig))
	ctx := h.as("alice")
	_, err := h.cl.CreateSession(ctx, &schedulerv1.CreateSessionRequest{Pool: "tpu-v9"})
	wantCode(t, err, codes.InvalidArgument, `pool "tpu-v9"`, "cpu, gpu, broken, slow, flaky")
	_, err = h.cl.CreateSession(ctx, &schedulerv1.CreateSessionRequest{})
	wantCode(t, err, codes.InvalidArgument, "pool: required")
	_, err = h.cl.CreateSession(ctx, &schedulerv1.CreateSessionRequest{Pool: "cpu", RequestId: strings.Repeat("x", 129)})
	wantCode(t, err, codes.InvalidArgument, "request_id")
	_, err = h.cl.CreateSession(ctx, &schedulerv1.CreateSessionRequest{Pool: "cpu", RequestId: "has space"})
	wantCode(t, err, codes.InvalidArgument, "request_id")
	_, err = h.cl.CreateSession(ctx, &schedulerv1.CreateSessionRequest{Pool: strings.Repeat("p", 10000)})
	wantCode(t, err, codes.InvalidArgument, "pool")
	for _, name := range []string{"", "abc", "sessions/", "sessions/UPPER", "sessions/a/b", "projects/x/sessions/y", "sessions/" + strings.Repeat("a", 65)} {
		_, err = h.cl.GetSession(ctx, &schedulerv1.GetSessionRequest{Name: name})
		wantCode(t, err, codes.InvalidArgument, "name", "sessions/{session_id}")
	}
	_, err = h.cl.ListSessions(ctx, &schedulerv1.ListSessionsRequest{PageToken: "garbage"})
	wantCode(t, err, codes.InvalidArgument, "page_token")
	_, err = h.cl.ListSessions(ctx, &schedulerv1.ListSessionsRequest{PageSize: -1})
	wantCode(t, err, codes.InvalidArgument, "page_size")
	_, err = h.cl.ListSessions(ctx, &schedulerv1.ListSessionsRequest{Filter: "owner = bob"})
	wantCode(t, err, codes.InvalidArgument, "filter", `"owner"`)
	_, err = h.cl.ListSessions(ctx, &schedulerv1.ListSessionsRequest{Filter: "state = SLEEPING"})
	wantCode(t, err, codes.InvalidArgument, "SLEEPING", "QUEUED, STARTING")
	_, err = h.cl.ListSessions(ctx, &schedulerv1.ListSessionsRequest{Filter: strings.Repeat("x", 2000)})
	wantCode(t, err, codes.InvalidArgument, "filter")
}

func TestListPagesWithTokensBoundToTheFilter(t *testing.T) {
	h := newHarness(t, storetest.Open(t, "sqlite"), testConfig(t, `pools: [{name: cpu, capacity: 3, maxPerUser: 20}, {name: gpu, capacity: 1, maxPerUser: 20}]`))
	want := map[string]bool{}
	for i := range 7 {
		h.clk.Advance(1e9)
		pool := "cpu"
		if i%3 == 0 {
			pool = "gpu"
		}
		want[h.create("alice", pool, "").Name] = true
	}
	h.create("bob", "cpu", "")
	got := map[string]bool{}
	tok, pages := "", 0
	for {
		resp, err := h.cl.ListSessions(h.as("alice"), &schedulerv1.ListSessionsRequest{PageSize: 3, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		pages++
		for _, s := range resp.Sessions {
			if got[s.Name] {
				t.Fatalf("%s listed twice", s.Name)
			}
			got[s.Name] = true
		}
		if tok = resp.NextPageToken; tok == "" {
			break
		}
		if pages == 1 {
			_, err := h.cl.ListSessions(h.as("alice"), &schedulerv1.ListSessionsRequest{PageSize: 3, PageToken: tok, Filter: "pool = gpu"})
			wantCode(t, err, codes.InvalidArgument, "page_token")
		}
	}
	if pages != 3 || len(got) != 7 {
		t.Fatalf("%d pages, %d sessions; want 3 pages and alice's 7", pages, len(got))
	}
	for n := range want {
		if !got[n] {
			t.Fatalf("%s missing from the listing", n)
		}
	}
	resp, err := h.cl.ListSessions(h.as("alice"), &schedulerv1.ListSessionsRequest{Filter: `pool = "gpu" AND state = QUEUED OR state = STARTING`})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Sessions) != 3 {
		t.Fatalf("gpu sessions queued or starting: %d, want 3", len(resp.Sessions))
	}
}

func TestStoreFailureIsUnavailableAndWritesNothing(t *testing.T) {
	st := storetest.Open(t, "sqlite")
	h := newHarness(t, st, testConfig(t, basicConfig))
	h.create("alice", "cpu", "")
	st.Close()
	_, err := h.cl.CreateSession(h.as("alice"), &schedulerv1.CreateSessionRequest{Pool: "cpu"})
	wantCode(t, err, codes.Unavailable, "session store unavailable")
	_, err = h.cl.ListSessions(h.as("alice"), &schedulerv1.ListSessionsRequest{})
	wantCode(t, err, codes.Unavailable)
}

func TestParseUserInfoAcceptsESPFormats(t *testing.T) {
	for in, want := range map[string]string{
		base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"a/b+c","email":"x@y"}`)): "a/b+c",
		base64.URLEncoding.EncodeToString([]byte(`{"email":"x@y"}`)):                  "x@y",
		base64.StdEncoding.EncodeToString([]byte(`{"id":"v1-user","issuer":"i"}`)):    "v1-user",
	} {
		got, err := ParseUserInfo(in)
		if err != nil || got != want {
			t.Errorf("ParseUserInfo(%s) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestPoolNotOfferedInRegionIsFailedPrecondition(t *testing.T) {
	h := newHarness(t, storetest.Open(t, "sqlite"), testConfig(t, `pools: [{name: tpu, capacity: 1, capacityByRegion: {us-central1: 0}}]`))
	_, err := h.cl.CreateSession(h.as("alice"), &schedulerv1.CreateSessionRequest{Pool: "tpu"})
	wantCode(t, err, codes.FailedPrecondition, `pool "tpu" is not offered in region us-central1`)
}
