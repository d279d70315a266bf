// Package runtime starts and stops the workloads behind sessions: local
// processes here, Kubernetes Pods elsewhere. The scheduler decides what
// should run; a Runtime makes it so and reports what it sees.
package runtime

import (
	"context"
	"time"
)

// Runtime runs session workloads. Implementations must be safe for
// concurrent use and must answer Status from what actually runs, so that a
// scheduler restarted after a crash learns which sessions survived.
type Runtime interface {
	// Start launches the workload and returns once it is launched (not
	// once it serves). Starting a session that is already known is a no-op.
	Start(ctx context.Context, spec Spec) error
	// Status reports the workload's phase.
	Status(ctx context.Context, sessionID string) (Status, error)
	// Stop ends the workload, gracefully first, and returns once it is
	// gone. Stopping an unknown session is a no-op.
	Stop(ctx context.Context, sessionID string) error
	// Name is the runtime's kind, e.g. "local".
	Name() string
}

// Lister is a Runtime that can list the workloads it runs (in its
// process, namespace, …), so that the scheduler can end those whose
// session is gone: a workload nobody is charged for must not run on.
type Lister interface {
	// Workloads returns the session ids of every workload it runs.
	Workloads(ctx context.Context) ([]string, error)
}

// Durable is a Runtime whose workloads outlive the scheduler process (Pods
// do): a scheduler that stops leaves them running, and the one that
// starts after it adopts them.
type Durable interface {
	Durable() bool
}

// Adopter is a Durable runtime that finds a workload started by an
// earlier scheduler process from the record it reported for it
// (Status.Record), which the scheduler keeps in its store.
type Adopter interface {
	// Adopt takes over the session's workload that record describes and
	// returns its status, as Status would afterwards; Unknown, with a
	// Message saying why, when that workload no longer runs. Adopting a
	// workload the runtime already runs returns its status.
	Adopt(ctx context.Context, sessionID, record string) (Status, error)
}

// Capacities is a Runtime that measures how many sessions of a pool fit
// in what it runs on (Pods: the allocatable GPUs of the nodes a pool may
// use), for pools whose capacity comes from there (`capacity:
// fromCluster`). It tells the scheduler of a change through the same
// wake-up as a workload's (OnChange).
type Capacities interface {
	// Capacity is the pool's number of slots now; ok is false while the
	// runtime cannot tell (not measured yet, or not a pool it measures).
	Capacity(pool string) (slots int, ok bool)
}

// Spec is what a runtime needs to start one session.
type Spec struct {
	SessionID string
	Owner     string
	Pool      string
	Region    string
	// Token guards the notebook server (Jupyter's token); the gateway
	// adds it to every request it proxies. Never on a command line.
	Token string
	// BaseURL is the path the workload serves under, "/notebooks/{id}/":
	// the gateway proxies requests with their path unchanged.
	BaseURL string
	// MaxDuration bounds the workload's life even if the scheduler is gone.
	MaxDuration time.Duration
}

// Phase is a workload's state as the runtime sees it.
type Phase int

const (
	// Unknown: the runtime has no such workload (never started, or lost).
	Unknown Phase = iota
	// Pending: launched, not yet serving.
	Pending
	// Ready: serving at Status.Endpoint (scheme://host:port).
	Ready
	// Exited: ended on its own; Status.Message says how.
	Exited
)

func (p Phase) String() string {
	switch p {
	case Pending:
		return "pending"
	case Ready:
		return "ready"
	case Exited:
		return "exited"
	}
	return "unknown"
}

// Status is what the runtime knows of one workload.
type Status struct {
	Phase Phase
	// Endpoint is where a Ready workload serves, scheme://host:port (the
	// gateway's target; no token, no path: requests keep their path).
	Endpoint string
	// Message says what is happening, for people: while Pending, the
	// progress of the start ("pulling image jupyter/scipy-notebook");
	// when Exited or Unknown, why ("the image could not be pulled:
	// ErrImagePull", "its Pod was deleted"). Sessions show it.
	Message string
	// Record identifies the workload to a later scheduler process, for a
	// runtime that needs one to adopt it (Adopter; the local runtime: its
	// PID, start time, port and directory). The scheduler stores the
	// latest with the session while it is live. Empty: nothing to keep.
	Record string
}
