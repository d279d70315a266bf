package scheduler

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"regexp"
	"strings"
	"time"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"github.com/meridian-gw/meridian/scheduler/store"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// Server is the gRPC face of a Scheduler: it authenticates the caller,
// validates requests and maps errors to gRPC codes.
type Server struct {
	schedulerv1.UnimplementedSessionSchedulerServer
	sched *Scheduler
	peers *TrustedPeers
}

var _ schedulerv1.SessionSchedulerServer = (*Server)(nil)

// NewServer serves sched, trusting identities asserted by peers.
func NewServer(sched *Scheduler, peers *TrustedPeers) *Server {
	return &Server{sched: sched, peers: peers}
}

// Register adds the service to a gRPC server.
func (s *Server) Register(g *grpc.Server) { schedulerv1.RegisterSessionSchedulerServer(g, s) }

const (
	maxRequestID  = 128
	maxFilter     = 1024
	maxPageSize   = 1000
	defaultPageSz = 50
)

var (
	requestIDRe = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
	sessionIDRe = regexp.MustCompile(`^[a-z0-9-]{1,64}$`)
)

// CreateSession admits a session.
func (s *Server) CreateSession(ctx context.Context, req *schedulerv1.CreateSessionRequest) (*schedulerv1.Session, error) {
	owner, err := s.peers.Caller(ctx)
	if err != nil {
		return nil, err
	}
	if len(req.GetPool()) > 63 {
		return nil, status.Errorf(codes.InvalidArgument, "pool: %d characters; pool names have at most 63", len(req.GetPool()))
	}
	if id := req.GetRequestId(); id != "" && !requestIDRe.MatchString(id) {
		return nil, status.Errorf(codes.InvalidArgument, "request_id = %.40q: want 1–%d characters of A-Z a-z 0-9 . _ : -", id, maxRequestID)
	}
	v, err := s.sched.Create(ctx, owner, req.GetPool(), req.GetRequestId())
	if err != nil {
		return nil, toStatus(err)
	}
	return s.sched.toProto(v), nil
}

// GetSession returns one of the caller's sessions.
func (s *Server) GetSession(ctx context.Context, req *schedulerv1.GetSessionRequest) (*schedulerv1.Session, error) {
	owner, id, err := s.target(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	v, err := s.sched.Get(ctx, owner, id)
	if err != nil {
		return nil, toStatus(err)
	}
	return s.sched.toProto(v), nil
}

// ListSessions pages through the caller's sessions, newest first.
func (s *Server) ListSessions(ctx context.Context, req *schedulerv1.ListSessionsRequest) (*schedulerv1.ListSessionsResponse, error) {
	owner, err := s.peers.Caller(ctx)
	if err != nil {
		return nil, err
	}
	size := int(req.GetPageSize())
	switch {
	case size < 0:
		return nil, status.Errorf(codes.InvalidArgument, "page_size = %d: must be >= 0", size)
	case size == 0:
		size = defaultPageSz
	case size > maxPageSize:
		size = maxPageSize
	}
	if len(req.GetFilter()) > maxFilter {
		return nil, status.Errorf(codes.InvalidArgument, "filter: %d characters; at most %d", len(req.GetFilter()), maxFilter)
	}
	f, err := ParseFilter(req.GetFilter())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "filter = %q: %v", req.GetFilter(), err)
	}
	after, err := decodePageToken(req.GetPageToken(), req.GetFilter())
	if err != nil {
		return nil, err
	}
	views, err := s.sched.List(ctx, owner, f, after, size+1)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &schedulerv1.ListSessionsResponse{}
	if len(views) > size {
		views = views[:size]
		last := views[size-1]
		resp.NextPageToken = encodePageToken(store.Cursor{CreateTime: last.CreateTime, ID: last.ID}, req.GetFilter())
	}
	for _, v := range views {
		resp.Sessions = append(resp.Sessions, s.sched.toProto(v))
	}
	return resp, nil
}

// StopSession stops one of the caller's sessions.
func (s *Server) StopSession(ctx context.Context, req *schedulerv1.StopSessionRequest) (*schedulerv1.Session, error) {
	owner, id, err := s.target(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	v, err := s.sched.Stop(ctx, owner, id)
	if err != nil {
		return nil, toStatus(err)
	}
	return s.sched.toProto(v), nil
}

// KeepAliveSession resets a session's idle timer.
func (s *Server) KeepAliveSession(ctx context.Context, req *schedulerv1.KeepAliveSessionRequest) (*schedulerv1.Session, error) {
	owner, id, err := s.target(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	v, err := s.sched.KeepAlive(ctx, owner, id)
	if err != nil {
		return nil, toStatus(err)
	}
	return s.sched.toProto(v), nil
}

// WatchSession streams the session after every change until it ends.
func (s *Server) WatchSession(req *schedulerv1.WatchSessionRequest, stream grpc.ServerStreamingServer[schedulerv1.Session]) error {
	ctx := stream.Context()
	owner, id, err := s.target(ctx, req.GetName())
	if err != nil {
		return err
	}
	poll := time.NewTicker(s.sched.poll)
	defer poll.Stop()
	var last *schedulerv1.Session
	for {
		changed := s.sched.changes()
		v, err := s.sched.Get(ctx, owner, id)
		if err != nil {
			return toStatus(err)
		}
		cur := s.sched.toProto(v)
		if !proto.Equal(cur, last) {
			if err := stream.Send(cur); err != nil {
				return err
			}
			last = cur
		}
		if !store.Live(cur.State) {
			return nil
		}
		select {
		case <-ctx.Done():
			return status.FromContextError(ctx.Err()).Err()
		case <-changed:
		case <-poll.C:
		}
	}
}

// GetQuota reports the caller's weekly quotas.
func (s *Server) GetQuota(ctx context.Context, _ *schedulerv1.GetQuotaRequest) (*schedulerv1.Quota, error) {
	owner, err := s.peers.Caller(ctx)
	if err != nil {
		return nil, err
	}
	usage, err := s.sched.Quota(ctx, owner)
	if err != nil {
		return nil, toStatus(err)
	}
	q := &schedulerv1.Quota{Owner: owner}
	for _, u := range usage {
		q.Usage = append(q.Usage, &schedulerv1.QuotaUsage{
			Group:            u.Group,
			LimitSeconds:     int64(u.Limit.Seconds()),
			UsedSeconds:      int64(u.Used.Seconds()),
			ProjectedSeconds: int64(u.Projected.Seconds()),
			ResetTime:        timestamppb.New(u.Reset),
			Pools:            u.Pools,
		})
	}
	return q, nil
}

// target authenticates the caller and parses a resource name.
func (s *Server) target(ctx context.Context, name string) (owner, id string, err error) {
	if owner, err = s.peers.Caller(ctx); err != nil {
		return "", "", err
	}
	id, ok := strings.CutPrefix(name, "sessions/")
	if !ok || !sessionIDRe.MatchString(id) {
		return "", "", status.Errorf(codes.InvalidArgument, "name = %.80q: want sessions/{session_id}, e.g. sessions/abc123", name)
	}
	return owner, id, nil
}

// toProto renders a session for its owner; a RUNNING one's endpoint is
// its notebook URL on the edge.
func (sc *Scheduler) toProto(v *View) *schedulerv1.Session {
	s := v.Session
	out := &schedulerv1.Session{
		Name:             sessionName(s.ID),
		Owner:            s.Owner,
		Pool:             s.Pool,
		Region:           s.Region,
		State:            s.State,
		QueuePosition:    int32(v.QueuePosition),
		QueueSize:        int32(v.QueueSize),
		StopReason:       s.StopReason,
		CreateTime:       ts(s.CreateTime),
		StartTime:        ts(s.StartTime),
		EndTime:          ts(s.EndTime),
		ExpireTime:       ts(s.ExpireTime),
		LastActivityTime: ts(s.LastActivity),
		StatusMessage:    s.Message,
		RequestId:        s.RequestID,
	}
	if s.State == schedulerv1.Session_RUNNING {
		out.IdleDeadline = ts(s.LastActivity.Add(s.IdleTimeout))
		out.Endpoint = sc.notebookURL(s.ID)
	}
	return out
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

// pageToken is an opaque keyset cursor bound to the filter it was made with.
type pageToken struct {
	T int64  `json:"t"`
	I string `json:"i"`
	F uint32 `json:"f"`
}

func filterHash(f string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(f))
	return h.Sum32()
}

func encodePageToken(c store.Cursor, filter string) string {
	b, _ := json.Marshal(pageToken{T: c.CreateTime.UnixMicro(), I: c.ID, F: filterHash(filter)})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodePageToken(tok, filter string) (*store.Cursor, error) {
	if tok == "" {
		return nil, nil
	}
	bad := status.Errorf(codes.InvalidArgument, "page_token = %.40q: not a next_page_token from a ListSessions call with this filter; start again without page_token", tok)
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return nil, bad
	}
	var p pageToken
	if err := json.Unmarshal(b, &p); err != nil || p.F != filterHash(filter) || !sessionIDRe.MatchString(p.I) {
		return nil, bad
	}
	return &store.Cursor{CreateTime: time.UnixMicro(p.T).UTC(), ID: p.I}, nil
}

// ParseFilter parses `field = value` terms joined by AND; a field repeated
// (with OR or AND between its terms) matches any of its values. Fields:
// state, pool, region.
func ParseFilter(f string) (store.Filter, error) {
	var out store.Filter
	f = strings.TrimSpace(f)
	if f == "" {
		return out, nil
	}
	fields := strings.Fields(strings.NewReplacer("=", " = ").Replace(f))
	for i := 0; i < len(fields); {
		if i+2 >= len(fields) || fields[i+1] != "=" {
			return out, errors.New(`want terms like state = RUNNING, pool = "cpu", region = "us-central1", joined by AND or OR`)
		}
		key, val := strings.ToLower(fields[i]), strings.Trim(fields[i+2], `"'`)
		switch key {
		case "state":
			st, ok := schedulerv1.Session_State_value[strings.ToUpper(val)]
			if !ok || st == 0 {
				return out, fmt.Errorf("state %q: want one of QUEUED, STARTING, RUNNING, STOPPING, STOPPED, FAILED", val)
			}
			out.States = append(out.States, schedulerv1.Session_State(st))
		case "pool":
			out.Pools = append(out.Pools, val)
		case "region":
			out.Regions = append(out.Regions, val)
		default:
			return out, fmt.Errorf("field %q: filter on state, pool or region", fields[i])
		}
		i += 3
		if i < len(fields) {
			if op := strings.ToUpper(fields[i]); op != "AND" && op != "OR" {
				return out, fmt.Errorf("%q: join terms with AND or OR", fields[i])
			}
			i++
			if i == len(fields) {
				return out, errors.New("ends with AND/OR")
			}
		}
	}
	return out, nil
}
