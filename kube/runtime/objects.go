package runtime

import (
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/scheduler"
	schedrt "github.com/meridian-gw/meridian/scheduler/runtime"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

// The labels and annotations on everything the runtime creates. Cleanup
// selects by them (docs/kubernetes.md).
const (
	// LabelSession is the session id, on its Pod, Secret and (per-session)
	// claim.
	LabelSession = "meridian.dev/session"
	// LabelOwner is OwnerHash of the session's owner (owner names are not
	// label-safe: "https://issuer#alice"); AnnotationOwner has the name.
	LabelOwner      = "meridian.dev/owner"
	AnnotationOwner = "meridian.dev/owner"
	// LabelPool is the session's pool.
	LabelPool = "meridian.dev/pool"
	// LabelVolume is the volume name (kubernetes.volume.name) of a claim.
	LabelVolume = "meridian.dev/volume"
	// LabelManagedBy says the scheduler made it; the runtime watches and
	// deletes nothing without it.
	LabelManagedBy = "app.kubernetes.io/managed-by"
	managedBy      = "meridian-scheduler"

	// container is the notebook server's container name.
	container = "notebook"
	// tokenKey is the Secret's key holding the session's token.
	tokenKey = "token"
	// deadlineMargin: a Pod's activeDeadlineSeconds is the session's
	// maximum duration plus this, so that the kubelet ends a Pod nobody
	// stopped (the scheduler does, at the maximum duration).
	deadlineMargin = 10 * time.Minute
)

// podName is the Pod of a session, also the name of its token Secret.
func podName(sessionID string) string { return "session-" + sessionID }

// sessionOf is the session id of a Pod's name, or "".
func sessionOf(pod string) string {
	id, ok := strings.CutPrefix(pod, "session-")
	if !ok {
		return ""
	}
	return id
}

// OwnerHash is the label value for an owner: the first 32 hex digits of
// the SHA-256 of the name. `kubectl get pvc -l meridian.dev/owner=$(meridian
// sessions owner-hash NAME)` finds a user's claims.
func OwnerHash(owner string) string {
	sum := sha256.Sum256([]byte(owner))
	return hex.EncodeToString(sum[:16])
}

// claimName is the claim a session mounts under its pool's volume policy.
func claimName(p *pool, spec schedrt.Spec) string {
	switch p.cfg.Volume.Policy {
	case scheduler.VolumePerUser:
		return p.cfg.Volume.Name + "-" + OwnerHash(spec.Owner)
	case scheduler.VolumePerSession:
		return p.cfg.Volume.Name + "-" + spec.SessionID
	}
	return ""
}

func sessionLabels(spec schedrt.Spec) map[string]string {
	return map[string]string{
		LabelSession: spec.SessionID, LabelOwner: OwnerHash(spec.Owner), LabelPool: spec.Pool, LabelManagedBy: managedBy,
	}
}

// tokenSecret holds the session's token, which the Pod reads through its
// environment: the Pod's spec names the Secret, never the token.
func tokenSecret(ns string, spec schedrt.Spec) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: podName(spec.SessionID), Namespace: ns, Labels: sessionLabels(spec),
			Annotations: map[string]string{AnnotationOwner: spec.Owner}},
		Type:      corev1.SecretTypeOpaque,
		Data:      map[string][]byte{tokenKey: []byte(spec.Token)},
		Immutable: ptr.To(true),
	}
}

// claim is the PersistentVolumeClaim a new session of the pool needs, or
// nil (volume policy none). The runtime never deletes it.
func claim(ns string, p *pool, spec schedrt.Spec) *corev1.PersistentVolumeClaim {
	name := claimName(p, spec)
	if name == "" {
		return nil
	}
	v := p.cfg.Volume
	labels := map[string]string{LabelOwner: OwnerHash(spec.Owner), LabelVolume: v.Name, LabelManagedBy: managedBy}
	if v.Policy == scheduler.VolumePerSession {
		labels[LabelSession] = spec.SessionID
		labels[LabelPool] = spec.Pool
	}
	c := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels,
			Annotations: map[string]string{AnnotationOwner: spec.Owner}},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.PersistentVolumeAccessMode(v.AccessMode)},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: p.size}},
		},
	}
	if v.StorageClass != "" {
		c.Spec.StorageClassName = ptr.To(v.StorageClass)
	}
	return c
}

// pod is a session's Pod: the pool's image, command, resources and
// placement, the token from its Secret, the user's claim as $HOME.
func pod(ns string, p *pool, spec schedrt.Spec) *corev1.Pod {
	k := p.cfg
	baseURL := spec.BaseURL
	if baseURL == "" {
		baseURL = "/"
	}
	r := strings.NewReplacer("{port}", strconv.Itoa(k.Port), "{session}", spec.SessionID, "{pool}", spec.Pool,
		"{owner}", spec.Owner, "{base_url}", baseURL)
	replace := func(in []string) []string {
		out := make([]string, len(in))
		for i, a := range in {
			out[i] = r.Replace(a)
		}
		return out
	}
	env := []corev1.EnvVar{
		{Name: "HOME", Value: k.Volume.MountPath},
		{Name: "PORT", Value: strconv.Itoa(k.Port)},
		{Name: "MERIDIAN_SESSION", Value: spec.SessionID},
		{Name: "MERIDIAN_POOL", Value: spec.Pool},
		{Name: "MERIDIAN_BASE_URL", Value: baseURL},
	}
	for _, name := range schedrt.TokenEnv {
		env = append(env, corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
			LocalObjectReference: corev1.LocalObjectReference{Name: podName(spec.SessionID)}, Key: tokenKey,
		}}})
	}
	for _, name := range slices.Sorted(maps.Keys(k.Env)) {
		env = append(env, corev1.EnvVar{Name: name, Value: k.Env[name]})
	}
	home := corev1.Volume{Name: "home", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}
	if c := claimName(p, spec); c != "" {
		home.VolumeSource = corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: c}}
	}
	probe := &corev1.Probe{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Port: intstr.FromInt32(int32(k.Port))}},
		PeriodSeconds: 2, FailureThreshold: 3}
	if k.ReadinessPath != "" {
		probe.ProbeHandler = corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: r.Replace(k.ReadinessPath), Port: intstr.FromInt32(int32(k.Port))}}
	}
	sc := k.SecurityContext
	c := corev1.Container{
		Name:            container,
		Image:           k.Image,
		ImagePullPolicy: corev1.PullPolicy(k.ImagePullPolicy),
		Command:         replace(k.Command),
		Args:            replace(k.Args),
		Env:             env,
		Ports:           []corev1.ContainerPort{{Name: "notebook", ContainerPort: int32(k.Port)}},
		Resources:       p.resources,
		ReadinessProbe:  probe,
		VolumeMounts: []corev1.VolumeMount{
			{Name: "home", MountPath: k.Volume.MountPath},
			{Name: "tmp", MountPath: "/tmp"},
		},
		SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   sc.ReadOnlyRootFilesystem,
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		},
	}
	deadline := int64((spec.MaxDuration + deadlineMargin) / time.Second)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName(spec.SessionID), Namespace: ns, Labels: sessionLabels(spec),
			Annotations: map[string]string{AnnotationOwner: spec.Owner}},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{c},
			Volumes: []corev1.Volume{home,
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}},
			// A notebook server that exits with an error is restarted (the
			// session lives on); one that keeps crashing ends it
			// (CrashLoopBackOff); a clean exit ends it.
			RestartPolicy:                 corev1.RestartPolicyOnFailure,
			NodeSelector:                  maps.Clone(k.NodeSelector),
			Tolerations:                   p.tolerations,
			TerminationGracePeriodSeconds: ptr.To(int64(k.TerminationGracePeriod.Seconds())),
			ActiveDeadlineSeconds:         ptr.To(deadline),
			// Users' code gets no API credentials and no list of the
			// namespace's Services.
			AutomountServiceAccountToken: ptr.To(false),
			EnableServiceLinks:           ptr.To(false),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsUser: sc.RunAsUser, RunAsGroup: sc.RunAsGroup, FSGroup: sc.FSGroup, RunAsNonRoot: sc.RunAsNonRoot,
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
		},
	}
}
