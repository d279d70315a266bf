package scheduler

import (
	"context"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	"google.golang.org/grpc"
)

// NotebookServer answers the gateway's ResolveNotebook: where the caller's
// notebook runs, and with which token. It is served beside the public API
// but is not part of it: the service config does not list
// meridian.scheduler.v1.Notebooks, so the gateway never proxies it for a
// client, and like every call it needs a caller asserted by a trusted
// peer (the gateway).
type NotebookServer struct {
	schedulerv1.UnimplementedNotebooksServer
	srv *Server
}

var _ schedulerv1.NotebooksServer = (*NotebookServer)(nil)

// NewNotebookServer serves sched's notebooks to callers asserted by peers.
func NewNotebookServer(sched *Scheduler, peers *TrustedPeers) *NotebookServer {
	return &NotebookServer{srv: NewServer(sched, peers)}
}

// Register adds the service to a gRPC server.
func (n *NotebookServer) Register(g *grpc.Server) { schedulerv1.RegisterNotebooksServer(g, n) }

// ResolveNotebook returns the caller's session and, while it is RUNNING,
// its workload's URL and token. Another user's session is NOT_FOUND, as
// in GetSession.
func (n *NotebookServer) ResolveNotebook(ctx context.Context, req *schedulerv1.ResolveNotebookRequest) (*schedulerv1.Notebook, error) {
	owner, id, err := n.srv.target(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	v, err := n.srv.sched.Get(ctx, owner, id)
	if err != nil {
		return nil, toStatus(err)
	}
	nb := &schedulerv1.Notebook{Session: n.srv.sched.toProto(v)}
	if v.Session.State == schedulerv1.Session_RUNNING {
		nb.WorkloadUrl, nb.WorkloadToken = v.Session.WorkloadURL, v.Session.WorkloadToken
	}
	return nb, nil
}
