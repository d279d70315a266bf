package runtime_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"syscall"
	"testing"

	schedulerv1 "github.com/meridian-gw/meridian/api/meridian/scheduler/v1"
	kuberuntime "github.com/meridian-gw/meridian/kube/runtime"
	"github.com/meridian-gw/meridian/test/kubetest"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

var errNotYet = errors.New("not yet")

// One cluster and one scheduler process serve every subtest: starting a
// control plane costs seconds of a shared 2-core machine.
func TestPodRuntime(t *testing.T) {
	e := newEnv(t, kubetest.Node{Name: "node-1"}, gpuNode("gpu-1", 4))
	e.startScheduler()
	t.Run("SessionIsAPodWithThePoolsSpecAndTheUsersClaim", func(t *testing.T) { testSessionIsAPod(e.with(t)) })
	t.Run("ProgressFromEventsAndConditions", func(t *testing.T) { testProgress(e.with(t)) })
	t.Run("ImagePullFailureFailsAtOnce", func(t *testing.T) { testImagePullFails(e.with(t)) })
	t.Run("UnschedulableFailsAtOnce", func(t *testing.T) { testUnschedulable(e.with(t)) })
	t.Run("UnschedulableForAClaimTheSchedulerHasNotSeenBoundIsNotFinal", func(t *testing.T) { testStaleUnschedulable(e.with(t)) })
	t.Run("CrashLoopFailsAtOnce", func(t *testing.T) { testCrashLoop(e.with(t)) })
	t.Run("PodDeletedBehindOurBackCrashes", func(t *testing.T) { testDeletedBehindOurBack(e.with(t)) })
	t.Run("CapacityFromTheCluster", func(t *testing.T) { testCapacityFromCluster(e.with(t)) })
	t.Run("RestartAdoptsPodsDeletesStraysAndReportsVanished", func(t *testing.T) { testRestart(e.with(t)) })
}

// CreateSession → a Pod with the pool's spec and the user's claim → kwok
// runs it → RUNNING at the Pod's address; StopSession → the Pod and its
// token Secret are deleted, the claim stays, and the user's next session
// mounts the same claim.
func testSessionIsAPod(e *env) {
	t := e.t
	ctx := e.ctx()
	s := e.create("alice@example.com", "cpu")
	s, msgs := e.watch("alice@example.com", s.Name, schedulerv1.Session_RUNNING)
	if s.State != schedulerv1.Session_RUNNING {
		t.Fatalf("session %s: %s %q; want RUNNING (messages %q)", s.Name, s.State, s.StatusMessage, msgs)
	}
	t.Logf("messages on the way: %q", msgs)
	pod, err := e.c.Client.CoreV1().Pods(namespace).Get(ctx, "session-"+id(s), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want, got := "http://"+pod.Status.PodIP+":8888", e.workloadURL("alice@example.com", s.Name); got != want {
		t.Errorf("workload URL %q; want the Pod's address %s", got, want)
	}
	if want := "/notebooks/" + id(s) + "/"; !strings.HasSuffix(s.Endpoint, want) {
		t.Errorf("endpoint %q; want the notebook's URL, ending %s", s.Endpoint, want)
	}

	c := pod.Spec.Containers[0]
	if c.Image != "example.invalid/notebook:1" || !slices.Equal(c.Command, []string{"jupyter", "server", "--port=8888", "--ServerApp.base_url=/"}) &&
		!slices.Equal(c.Command, []string{"jupyter", "server", "--port=8888", "--ServerApp.base_url=/notebooks/" + id(s) + "/"}) {
		t.Errorf("container image %q command %q; want the pool's, placeholders replaced", c.Image, c.Command)
	}
	if got := c.Resources.Requests.Cpu().String(); got != "100m" || c.Resources.Limits.Memory().String() != "1Gi" {
		t.Errorf("resources %v; want the pool's (cpu 100m, memory limit 1Gi)", c.Resources)
	}
	owner := kuberuntime.OwnerHash("alice@example.com")
	wantLabels := map[string]string{kuberuntime.LabelSession: id(s), kuberuntime.LabelOwner: owner, kuberuntime.LabelPool: "cpu"}
	for k, v := range wantLabels {
		if pod.Labels[k] != v {
			t.Errorf("label %s = %q; want %q", k, pod.Labels[k], v)
		}
	}
	if pod.Annotations[kuberuntime.AnnotationOwner] != "alice@example.com" {
		t.Errorf("owner annotation %q; want the real name", pod.Annotations[kuberuntime.AnnotationOwner])
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the notebook gets the namespace's API credentials; want automountServiceAccountToken false")
	}

	// The token: in a Secret the env names, never in the Pod in clear.
	secret, err := e.c.Client.CoreV1().Secrets(namespace).Get(ctx, "session-"+id(s), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the token Secret: %v", err)
	}
	token := string(secret.Data["token"])
	spec, _ := json.Marshal(pod)
	if len(token) < 16 || strings.Contains(string(spec), token) {
		t.Errorf("token %q (from the Secret) is in the Pod's spec, or too short", token)
	}
	for _, name := range []string{"JUPYTER_TOKEN", "MERIDIAN_WORKLOAD_TOKEN"} {
		if v := envVar(c, name); v == nil || v.ValueFrom == nil || v.ValueFrom.SecretKeyRef == nil || v.ValueFrom.SecretKeyRef.Name != secret.Name {
			t.Errorf("env %s = %+v; want it from Secret %s", name, v, secret.Name)
		}
	}
	if v := envVar(c, "NOTEBOOK_THEME"); v == nil || v.Value != "dark" {
		t.Errorf("env NOTEBOOK_THEME = %+v; want the pool's dark", v)
	}

	// The user's claim, mounted as $HOME.
	claimName := "home-" + owner
	if claimOf(pod) != claimName {
		t.Errorf("Pod mounts claim %q; want the user's %s", claimOf(pod), claimName)
	}
	pvc, err := e.c.Client.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, claimName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the user's claim: %v", err)
	}
	if pvc.Labels[kuberuntime.LabelOwner] != owner || pvc.Spec.Resources.Requests.Storage().String() != "2Gi" {
		t.Errorf("claim labels %v size %v; want owner %s, 2Gi", pvc.Labels, pvc.Spec.Resources.Requests.Storage(), owner)
	}

	stopped, err := e.cl.StopSession(e.as(ctx, "alice@example.com"), &schedulerv1.StopSessionRequest{Name: s.Name})
	if err != nil {
		t.Fatal(err)
	}
	if final, _ := e.watch("alice@example.com", stopped.Name, schedulerv1.Session_STOPPED); final.State != schedulerv1.Session_STOPPED {
		t.Fatalf("after StopSession: %s %q; want STOPPED", final.State, final.StatusMessage)
	}
	e.waitGone("session-" + id(s))
	if _, err := e.c.Client.CoreV1().Secrets(namespace).Get(ctx, "session-"+id(s), metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("token Secret after stop: %v; want NotFound", err)
	}
	if _, err := e.c.Client.CoreV1().PersistentVolumeClaims(namespace).Get(ctx, claimName, metav1.GetOptions{}); err != nil {
		t.Errorf("the user's claim after stop: %v; want it kept", err)
	}

	again := e.create("alice@example.com", "cpu")
	if s, _ := e.watch("alice@example.com", again.Name, schedulerv1.Session_RUNNING); s.State != schedulerv1.Session_RUNNING {
		t.Fatalf("second session: %s %q", s.State, s.StatusMessage)
	}
	pod2, err := e.c.Client.CoreV1().Pods(namespace).Get(ctx, "session-"+id(again), metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if claimOf(pod2) != claimName {
		t.Errorf("the user's second session mounts %q; want the same claim %s", claimOf(pod2), claimName)
	}
	e.stop("alice@example.com", again.Name)
}

// The test is the kubelet of a Pod (its image is one kwok leaves alone):
// each Event it posts and each status it writes shows on WatchSession as
// the session's message before the next, in order, then RUNNING.
func testProgress(e *env) {
	t := e.t
	ctx := e.ctx()
	s := e.create("bob", "manual")
	stream, err := e.cl.WatchSession(e.as(ctx, "bob"), &schedulerv1.WatchSessionRequest{Name: s.Name})
	if err != nil {
		t.Fatal(err)
	}
	next := func(want string) *schedulerv1.Session {
		t.Helper()
		for {
			got, err := stream.Recv()
			if err != nil {
				t.Fatalf("waiting for %q: %v", want, err)
			}
			if strings.Contains(got.StatusMessage, want) {
				return got
			}
			if got.State != schedulerv1.Session_STARTING && got.State != schedulerv1.Session_QUEUED {
				t.Fatalf("waiting for %q: session %s %q", want, got.State, got.StatusMessage)
			}
		}
	}
	name := "session-" + id(s)
	next("scheduled on node ")
	pod := e.pod(name)
	image := pod.Spec.Containers[0].Image
	for _, step := range []struct{ reason, message, want string }{
		{"Pulling", `Pulling image "` + image + `"`, "pulling image " + image},
		{"Pulled", `Successfully pulled image "` + image + `" in 1.2s`, "pulled image " + image},
		{"Created", "Created container: notebook", "container created"},
		{"Started", "Started container notebook", "notebook server started"},
	} {
		e.postEvent(pod, corev1.EventTypeNormal, step.reason, step.message)
		got := next(step.want)
		t.Logf("%s → %q", step.reason, got.StatusMessage)
	}
	pod = e.pod(name)
	pod.Status.Phase = corev1.PodRunning
	pod.Status.PodIP = "10.244.250.7"
	pod.Status.PodIPs = []corev1.PodIP{{IP: pod.Status.PodIP}}
	pod.Status.Conditions = append(pod.Status.Conditions, corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()})
	if _, err := e.c.Client.CoreV1().Pods(namespace).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		got, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got.State == schedulerv1.Session_RUNNING {
			if u := e.workloadURL("bob", s.Name); u != "http://10.244.250.7:8888" {
				t.Errorf("workload URL %q; want the Pod's address http://10.244.250.7:8888", u)
			}
			break
		}
	}
	e.stop("bob", s.Name)
}

// An image kwok fails to pull ends the session FAILED / START_FAILED with
// the kubelet's reason, at once: the pool's startTimeout is 10 minutes.
func testImagePullFails(e *env) {
	s := e.create("carol", "badimage")
	got, msgs := e.watch("carol", s.Name, schedulerv1.Session_RUNNING)
	e.expectStartFailed(got, msgs, "ErrImagePull", "kubetest.invalid/image-pull-fails/notebook:1")
	e.waitGone("session-" + id(s))
	if _, err := e.c.Client.CoreV1().PersistentVolumeClaims(namespace).Get(e.ctx(), "home-"+kuberuntime.OwnerHash("carol"), metav1.GetOptions{}); err != nil {
		e.t.Errorf("the user's claim after a failed start: %v; want it kept", err)
	}
}

// A Pod no node fits (a GPU on nodes without, or with an untolerated
// taint) fails at once with the scheduler's reason; its new claim, which
// the cluster binds a moment after it is created, is not taken for the
// reason.
func testUnschedulable(e *env) {
	s := e.create("dave", "nofit")
	got, msgs := e.watch("dave", s.Name, schedulerv1.Session_RUNNING)
	e.expectStartFailed(got, msgs, "Unschedulable", "nvidia.com/gpu")
	e.waitGone("session-" + id(s))
}

// kube-scheduler's cache may learn that a claim is bound after the
// runtime's has: the Pod, created once the claim was bound, is called
// Unschedulable for the unbound claim, once, before the scheduler retries
// it. That must not fail the start (it did, under 50 concurrent starts);
// a real Unschedulable after it still does. The test plays the lagging
// kube-scheduler on a Pod whose image kwok leaves alone.
func testStaleUnschedulable(e *env) {
	t := e.t
	s := e.create("ivan", "manualclaim")
	stream, err := e.cl.WatchSession(e.as(e.ctx(), "ivan"), &schedulerv1.WatchSessionRequest{Name: s.Name})
	if err != nil {
		t.Fatal(err)
	}
	until := func(want string) *schedulerv1.Session {
		t.Helper()
		for {
			got, err := stream.Recv()
			if err != nil {
				t.Fatalf("waiting for %q: %v", want, err)
			}
			if strings.Contains(got.StatusMessage, want) || got.State == schedulerv1.Session_FAILED {
				return got
			}
		}
	}
	until("scheduled on node")
	setUnschedulable := func(msg string) {
		t.Helper()
		pod := e.pod("session-" + id(s))
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse,
			Reason: corev1.PodReasonUnschedulable, Message: msg, LastTransitionTime: metav1.Now()}}
		if _, err := e.c.Client.CoreV1().Pods(namespace).UpdateStatus(e.ctx(), pod, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	setUnschedulable("0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims. preemption: not helpful.")
	if got := until("waiting for volume claim home-"); got.State != schedulerv1.Session_STARTING {
		t.Fatalf("Unschedulable for an unbound claim, the claim bound: %s/%s %q; want STARTING, waiting for the claim", got.State, got.StopReason, got.StatusMessage)
	}
	setUnschedulable("0/2 nodes are available: 2 Insufficient nvidia.com/gpu.")
	got := until("could not be scheduled")
	e.expectStartFailed(got, nil, "Unschedulable", "Insufficient nvidia.com/gpu")
}

// A notebook server that keeps crashing ends the start at once.
func testCrashLoop(e *env) {
	s := e.create("erin", "crashes")
	got, msgs := e.watch("erin", s.Name, schedulerv1.Session_RUNNING)
	e.expectStartFailed(got, msgs, "CrashLoopBackOff", "kept crashing")
}

// A RUNNING session whose Pod someone else deletes ends CRASHED, saying so.
func testDeletedBehindOurBack(e *env) {
	t := e.t
	s := e.create("frank", "cpu")
	if got, msgs := e.watch("frank", s.Name, schedulerv1.Session_RUNNING); got.State != schedulerv1.Session_RUNNING {
		t.Fatalf("%s %q (%q); want RUNNING", got.State, got.StatusMessage, msgs)
	}
	if err := e.c.Client.CoreV1().Pods(namespace).Delete(e.ctx(), "session-"+id(s), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	got, _ := e.watch("frank", s.Name, schedulerv1.Session_FAILED)
	if got.State != schedulerv1.Session_FAILED || got.StopReason != schedulerv1.Session_CRASHED ||
		!strings.Contains(got.StatusMessage, "deleted (not by the scheduler)") {
		t.Fatalf("after its Pod was deleted: %s/%s %q; want FAILED/CRASHED saying the Pod was deleted", got.State, got.StopReason, got.StatusMessage)
	}
}

// `capacity: fromCluster`: gpu-1 has 4 GPUs, a session takes 2, so two
// run and the third queues; a second GPU node (labelled and tainted as
// the pool's nodeSelector and tolerations want) places it.
func testCapacityFromCluster(e *env) {
	t := e.t
	a, b := e.create("grace", "gpu"), e.create("grace", "gpu")
	third := e.create("grace", "gpu")
	if third.State != schedulerv1.Session_QUEUED {
		t.Fatalf("third gpu session with 4 GPUs and 2 per session: %s %q; want QUEUED", third.State, third.StatusMessage)
	}
	for _, s := range []*schedulerv1.Session{a, b} {
		if got, msgs := e.watch("grace", s.Name, schedulerv1.Session_RUNNING); got.State != schedulerv1.Session_RUNNING {
			t.Fatalf("%s: %s %q (%q)", s.Name, got.State, got.StatusMessage, msgs)
		}
	}
	if got := e.get("grace", third.Name); got.State != schedulerv1.Session_QUEUED {
		t.Fatalf("third session with two running: %s %q; want still QUEUED", got.State, got.StatusMessage)
	}
	pod := e.pod("session-" + id(a))
	if pod.Spec.NodeName != "gpu-1" || claimOf(pod) != "scratch-"+id(a) {
		t.Errorf("gpu Pod on %q with claim %q; want gpu-1 and its per-session claim scratch-%s", pod.Spec.NodeName, claimOf(pod), id(a))
	}
	e.addNode(gpuNode("gpu-2", 2))
	if got, msgs := e.watch("grace", third.Name, schedulerv1.Session_RUNNING); got.State != schedulerv1.Session_RUNNING {
		t.Fatalf("third session once gpu-2 joined: %s %q (%q); want RUNNING", got.State, got.StatusMessage, msgs)
	}
	for _, s := range []*schedulerv1.Session{a, b, third} {
		e.stop("grace", s.Name)
	}
	if _, err := e.c.Client.CoreV1().PersistentVolumeClaims(namespace).Get(e.ctx(), "scratch-"+id(a), metav1.GetOptions{}); err != nil {
		t.Errorf("a per-session claim after its session: %v; want it kept", err)
	}
}

// kill -9 and SIGTERM: Pods keep running, the restarted scheduler adopts
// them (the same Pods, still RUNNING), deletes a Pod whose session is
// gone, and ends CRASHED a session whose Pod vanished while it was down.
func testRestart(e *env) {
	t := e.t
	ctx := e.ctx()
	var live []*schedulerv1.Session
	for range 3 {
		s := e.create("heidi", "cpu")
		if got, msgs := e.watch("heidi", s.Name, schedulerv1.Session_RUNNING); got.State != schedulerv1.Session_RUNNING {
			t.Fatalf("%s %q (%q)", got.State, got.StatusMessage, msgs)
		}
		live = append(live, s)
	}
	uids := map[string]string{}
	for _, s := range live {
		uids[s.Name] = string(e.pod("session-" + id(s)).UID)
	}

	for _, sig := range []syscall.Signal{syscall.SIGKILL, syscall.SIGTERM} {
		e.kill(sig)
		// While it is down: a Pod of no session appears, and one
		// session's Pod is deleted.
		stray := e.pod("session-" + id(live[0]))
		stray.ObjectMeta = metav1.ObjectMeta{Name: "session-stray-" + strings.ToLower(sig.String()[:4]), Namespace: namespace,
			Labels: map[string]string{kuberuntime.LabelSession: "stray-" + strings.ToLower(sig.String()[:4]), kuberuntime.LabelManagedBy: "meridian-scheduler"}}
		stray.Spec.NodeName = ""
		stray.Status = corev1.PodStatus{}
		stray.Spec.Volumes = slices.DeleteFunc(stray.Spec.Volumes, func(v corev1.Volume) bool { return v.PersistentVolumeClaim != nil })
		stray.Spec.Containers[0].VolumeMounts = slices.DeleteFunc(stray.Spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "home" })
		stray.Spec.Containers[0].Env = nil
		if _, err := e.c.Client.CoreV1().Pods(namespace).Create(ctx, stray, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		victim := live[len(live)-1]
		live = live[:len(live)-1]
		if err := e.c.Client.CoreV1().Pods(namespace).Delete(ctx, "session-"+id(victim), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		e.waitGone("session-" + id(victim))

		e.startScheduler()
		got, _ := e.watch("heidi", victim.Name, schedulerv1.Session_FAILED)
		if got.State != schedulerv1.Session_FAILED || got.StopReason != schedulerv1.Session_CRASHED || !strings.Contains(got.StatusMessage, "session-"+id(victim)) {
			t.Errorf("after %s: session whose Pod vanished: %s/%s %q; want FAILED/CRASHED naming its Pod", sig, got.State, got.StopReason, got.StatusMessage)
		}
		e.waitGone(stray.Name)
		for _, s := range live {
			if got := e.get("heidi", s.Name); got.State != schedulerv1.Session_RUNNING {
				t.Errorf("after %s: %s is %s %q; want still RUNNING", sig, s.Name, got.State, got.StatusMessage)
			}
			if uid := string(e.pod("session-" + id(s)).UID); uid != uids[s.Name] {
				t.Errorf("after %s: %s has a new Pod (uid %s, was %s); want the same one adopted", sig, s.Name, uid, uids[s.Name])
			}
		}
	}
	// The adopted session is still the scheduler's to stop.
	e.stop("heidi", live[0].Name)
}

func (e *env) expectStartFailed(got *schedulerv1.Session, msgs []string, wants ...string) {
	e.t.Helper()
	if got.State != schedulerv1.Session_FAILED || got.StopReason != schedulerv1.Session_START_FAILED {
		e.t.Fatalf("%s/%s %q (messages %q); want FAILED/START_FAILED", got.State, got.StopReason, got.StatusMessage, msgs)
	}
	for _, w := range wants {
		if !strings.Contains(got.StatusMessage, w) {
			e.t.Errorf("message %q; want it to say %q", got.StatusMessage, w)
		}
	}
	if strings.Contains(got.StatusMessage, "not serving") {
		e.t.Errorf("message %q is the start timeout's; want the fast failure", got.StatusMessage)
	}
	e.t.Logf("failed at once: %q", got.StatusMessage)
}

func (e *env) stop(user, name string) {
	e.t.Helper()
	if _, err := e.cl.StopSession(e.as(e.ctx(), user), &schedulerv1.StopSessionRequest{Name: name}); err != nil {
		e.t.Fatal(err)
	}
	if got, _ := e.watch(user, name, schedulerv1.Session_STOPPED); got.State != schedulerv1.Session_STOPPED {
		e.t.Fatalf("stopping %s: %s %q", name, got.State, got.StatusMessage)
	}
	e.waitGone("session-" + strings.TrimPrefix(name, "sessions/"))
}

func (e *env) pod(name string) *corev1.Pod {
	e.t.Helper()
	p, err := e.c.Client.CoreV1().Pods(namespace).Get(e.ctx(), name, metav1.GetOptions{})
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

func (e *env) waitGone(pod string) {
	e.t.Helper()
	e.waitFor("Pod "+pod+" to be gone", func(ctx context.Context) error {
		_, err := e.c.Client.CoreV1().Pods(namespace).Get(ctx, pod, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("%w: %v", errNotYet, err)
	})
}

func (e *env) postEvent(pod *corev1.Pod, typ, reason, message string) {
	e.t.Helper()
	now := metav1.Now()
	ev := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: pod.Name + ".", Namespace: namespace},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: namespace, Name: pod.Name, UID: pod.UID,
			FieldPath: "spec.containers{notebook}"},
		Reason: reason, Message: message, Type: typ, Source: corev1.EventSource{Component: "kubelet", Host: pod.Spec.NodeName},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
	}
	if _, err := e.c.Client.CoreV1().Events(namespace).Create(e.ctx(), ev, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

// addNode adds a node that kwok keeps Ready, as kubetest makes its own.
func (e *env) addNode(n kubetest.Node) {
	e.t.Helper()
	capacity := kubetest.DefaultCapacity()
	maps.Copy(capacity, n.Capacity)
	labels := map[string]string{"kubernetes.io/hostname": n.Name, "type": "kwok"}
	maps.Copy(labels, n.Labels)
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: labels, Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"}},
		Spec:       corev1.NodeSpec{Taints: n.Taints},
		Status:     corev1.NodeStatus{Capacity: capacity, Allocatable: capacity.DeepCopy()},
	}
	if _, err := e.c.Client.CoreV1().Nodes().Create(e.ctx(), node, metav1.CreateOptions{}); err != nil {
		e.t.Fatal(err)
	}
}

func envVar(c corev1.Container, name string) *corev1.EnvVar {
	for i := range c.Env {
		if c.Env[i].Name == name {
			return &c.Env[i]
		}
	}
	return nil
}

func claimOf(p *corev1.Pod) string {
	for _, v := range p.Spec.Volumes {
		if v.PersistentVolumeClaim != nil {
			return v.PersistentVolumeClaim.ClaimName
		}
	}
	return ""
}
