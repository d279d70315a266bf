package runtime

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

	schedrt "github.com/meridian-gw/meridian/scheduler/runtime"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
)

// step is how far a Pod's start has come, as its Events and status say.
// Events and status updates arrive on separate watches: progress only
// moves forward.
type step int

const (
	stepCreated step = iota
	stepScheduled
	stepPulling
	stepPulled
	stepContainerCreated
	stepStarted
)

// eventSteps are the kubelet's and the scheduler's Event reasons for each
// step.
var eventSteps = map[string]step{
	"Scheduled": stepScheduled,
	"Pulling":   stepPulling,
	"Pulled":    stepPulled,
	"Created":   stepContainerCreated,
	"Started":   stepStarted,
}

// progress is what a Pod's Events said.
type progress struct {
	uid  types.UID
	step step
	// warning is the last Warning Event (reason: message), which says
	// more than a container's waiting reason (the registry's answer).
	warning string
}

// fatalWaiting are container waiting reasons that do not heal by
// waiting: the start fails at once with the reason.
var fatalWaiting = map[string]string{
	"ErrImagePull":               "could not pull its image",
	"ImagePullBackOff":           "could not pull its image",
	"InvalidImageName":           "has an invalid image name",
	"ErrImageNeverPull":          "has no image on the node and imagePullPolicy Never",
	"CrashLoopBackOff":           "kept crashing",
	"RunContainerError":          "could not be run",
	"CreateContainerError":       "could not be created",
	"PreCreateHookError":         "could not be created",
	"PostStartHookError":         "failed its postStart hook",
	"ContainerCannotRun":         "could not be run",
	"ImageInspectError":          "could not inspect its image",
	"RegistryUnavailable":        "could not reach its image's registry",
	"SignatureValidationFailed":  "has an image whose signature is invalid",
	"CreateContainerConfigError": "", // the token Secret may lag its Pod a moment: not fatal
}

func (r *Pods) eventSeen(o any) {
	e, ok := o.(*corev1.Event)
	if !ok || e.InvolvedObject.Kind != "Pod" {
		return
	}
	id := sessionOf(e.InvolvedObject.Name)
	if id == "" {
		return
	}
	// Only Events of a Pod this runtime knows: Pods of other workloads in
	// the namespace, or of long-ended sessions, leave no trace.
	pod, err := r.pods.Pods(r.ns).Get(e.InvolvedObject.Name)
	r.mu.Lock()
	_, creating := r.creating[id]
	if err != nil && !creating {
		r.mu.Unlock()
		return
	}
	if pod != nil && pod.UID != e.InvolvedObject.UID {
		r.mu.Unlock()
		return // an Event of an earlier Pod of the same name
	}
	pr := r.progress[id]
	if pr == nil || pr.uid != e.InvolvedObject.UID {
		pr = &progress{uid: e.InvolvedObject.UID}
		r.progress[id] = pr
	}
	if s, ok := eventSteps[e.Reason]; ok && s > pr.step {
		pr.step = s
	}
	if e.Type == corev1.EventTypeWarning {
		pr.warning = e.Reason + ": " + e.Message
	}
	r.mu.Unlock()
	r.changed(id)
}

// Status reports the session's Pod: Ready with its address, Pending with
// the start's progress, Exited with why it ended or why its start cannot
// succeed, Unknown with why it is gone.
func (r *Pods) Status(_ context.Context, id string) (schedrt.Status, error) {
	name := podName(id)
	p, err := r.pods.Pods(r.ns).Get(name)
	if apierrors.IsNotFound(err) {
		r.mu.Lock()
		defer r.mu.Unlock()
		if _, ok := r.creating[id]; ok {
			return schedrt.Status{Phase: schedrt.Pending, Message: "Pod " + name + " created"}, nil
		}
		if g, ok := r.gone[id]; ok {
			return schedrt.Status{Phase: schedrt.Unknown, Message: g.why}, nil
		}
		return schedrt.Status{Phase: schedrt.Unknown, Message: fmt.Sprintf("its Pod %s/%s is gone", r.ns, name)}, nil
	}
	if err != nil {
		return schedrt.Status{}, err
	}
	r.mu.Lock()
	var pr progress
	if got := r.progress[id]; got != nil && got.uid == p.UID {
		pr = *got
	}
	r.mu.Unlock()
	return r.podStatus(p, pr), nil
}

func (r *Pods) podStatus(p *corev1.Pod, pr progress) schedrt.Status {
	exited := func(msg string) schedrt.Status { return schedrt.Status{Phase: schedrt.Exited, Message: msg} }
	if p.DeletionTimestamp != nil {
		return exited(fmt.Sprintf("had its Pod %s/%s deleted (not by the scheduler)", r.ns, p.Name))
	}
	switch p.Status.Phase {
	case corev1.PodSucceeded, corev1.PodFailed:
		return exited(ended(p))
	}
	for _, c := range p.Status.ContainerStatuses {
		if w := c.State.Waiting; w != nil && fatalWaiting[w.Reason] != "" {
			detail := w.Reason
			if w.Message != "" {
				detail += ": " + w.Message
			} else if pr.warning != "" {
				detail += "; " + pr.warning
			}
			what := fatalWaiting[w.Reason]
			if strings.HasSuffix(what, "its image") {
				what += " " + c.Image
			}
			return exited(fmt.Sprintf("%s (%s)", what, truncate(detail, 512)))
		}
	}
	if cond := condition(p, corev1.PodScheduled); cond != nil && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable {
		if claim, bound := r.claimsBound(p); !bound || volumeCacheLag(cond.Message) {
			if claim == "" {
				claim = claimOf(p)
			}
			return schedrt.Status{Phase: schedrt.Pending, Message: "waiting for volume claim " + claim + " to be bound"}
		}
		return exited(fmt.Sprintf("could not be scheduled (Unschedulable: %s)", truncate(cond.Message, 512)))
	}
	if cond := condition(p, corev1.PodReady); cond != nil && cond.Status == corev1.ConditionTrue && p.Status.PodIP != "" {
		port := r.port(p)
		return schedrt.Status{Phase: schedrt.Ready, Endpoint: "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port))}
	}
	return schedrt.Status{Phase: schedrt.Pending, Message: r.progressMessage(p, pr)}
}

// progressMessage says how far the start has come, for the session's
// message: what a JupyterHub user sees on the spawn page.
func (r *Pods) progressMessage(p *corev1.Pod, pr progress) string {
	s := pr.step
	if p.Spec.NodeName != "" && s < stepScheduled {
		s = stepScheduled
	}
	for _, c := range p.Status.ContainerStatuses {
		if c.State.Running != nil && s < stepStarted {
			s = stepStarted
		}
	}
	image := p.Spec.Containers[0].Image
	switch s {
	case stepScheduled:
		return "scheduled on node " + p.Spec.NodeName
	case stepPulling:
		return "pulling image " + image
	case stepPulled:
		return "pulled image " + image
	case stepContainerCreated:
		return "container created"
	case stepStarted:
		return "notebook server started; waiting for it to be ready"
	}
	return "Pod " + p.Name + " waiting for a node"
}

// unboundClaims is how kube-scheduler's VolumeBinding plugin says that a
// Pod waits for its claims (ErrReasonUnboundImmediatePersistentVolumeClaims
// in k8s.io/kubernetes, unchanged since 1.12). The API has no structured
// reason for it, and the scheduler's cache may learn of a binding after
// ours has: a Pod created once its claim is bound can still be called
// Unschedulable for it, once, before the scheduler retries it. Reading
// the message only ever delays a failure (to the start timeout, if the
// text changed), never invents one.
const unboundClaims = "unbound immediate PersistentVolumeClaims"

// missingVolume is the same plugin saying that a bound claim names a
// PersistentVolume its cache has not seen yet (the claim and its volume
// were made together by the provisioner): as transient as unboundClaims.
const missingVolume = "bound to non-existent persistentvolume"

// volumeCacheLag reports whether an Unschedulable message is one of
// kube-scheduler's volume cache lagging behind the API, which it retries
// by itself, rather than a Pod that no node fits.
func volumeCacheLag(msg string) bool {
	return strings.Contains(msg, unboundClaims) || strings.Contains(msg, missingVolume)
}

func claimOf(p *corev1.Pod) string {
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			return v.PersistentVolumeClaim.ClaimName
		}
	}
	return "(none)"
}

// claimsBound says whether every claim the Pod mounts is bound; if not,
// it names one that is not. An unbound claim makes the scheduler call a
// Pod Unschedulable until the claim binds.
func (r *Pods) claimsBound(p *corev1.Pod) (string, bool) {
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim == nil {
			continue
		}
		c, err := r.claims.PersistentVolumeClaims(r.ns).Get(v.PersistentVolumeClaim.ClaimName)
		if err != nil || c.Status.Phase != corev1.ClaimBound {
			return v.PersistentVolumeClaim.ClaimName, false
		}
	}
	return "", true
}

func (r *Pods) port(p *corev1.Pod) int {
	for _, c := range p.Spec.Containers {
		if c.Name == container && len(c.Ports) > 0 {
			return int(c.Ports[0].ContainerPort)
		}
	}
	if pl, ok := r.pools[p.Labels[LabelPool]]; ok {
		return pl.cfg.Port
	}
	return 8888
}

// ended says how a Pod that reached Succeeded or Failed ended.
func ended(p *corev1.Pod) string {
	if p.Status.Reason != "" { // Evicted, DeadlineExceeded, …
		msg := "was ended by Kubernetes (" + p.Status.Reason
		if p.Status.Message != "" {
			msg += ": " + truncate(p.Status.Message, 512)
		}
		return msg + ")"
	}
	for _, c := range p.Status.ContainerStatuses {
		if t := c.State.Terminated; t != nil {
			msg := fmt.Sprintf("exited with status %d", t.ExitCode)
			if t.Reason != "" {
				msg += " (" + t.Reason + ")"
			}
			return msg
		}
	}
	return "ended (Pod phase " + string(p.Status.Phase) + ")"
}

// vanished says why a Pod that is gone went, for its session's end.
func vanished(ns string, p *corev1.Pod) string {
	msg := fmt.Sprintf("its Pod %s/%s was deleted (not by the scheduler)", ns, p.Name)
	if p.Status.Reason != "" {
		msg += " after " + p.Status.Reason
	}
	if c := condition(p, corev1.DisruptionTarget); c != nil && c.Status == corev1.ConditionTrue {
		msg += "; " + c.Reason
		if c.Message != "" {
			msg += ": " + truncate(c.Message, 256)
		}
	}
	return msg
}

func condition(p *corev1.Pod, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == t {
			return &p.Status.Conditions[i]
		}
	}
	return nil
}
