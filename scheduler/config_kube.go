package scheduler

// The pools' Kubernetes settings, for the Pod runtime (`meridian scheduler
// --runtime=kubernetes`, package kube/runtime). This package must not
// import k8s.io, so the fields are plain strings and maps: they are
// checked here for what needs no Kubernetes code (enums, ranges, paths),
// and the runtime checks the rest (quantities, label syntax) at start,
// with errors that name the same fields.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"
)

// CapacityFromCluster is the value of a pool's `capacity` that takes its
// slots from the cluster (see PoolConfig.CapacityFromCluster).
const CapacityFromCluster = "fromCluster"

// KubernetesPool is how the Pod runtime runs a pool's sessions: one Pod
// each, with a token Secret and, by Volume.Policy, a claim. The local
// runtime ignores it.
type KubernetesPool struct {
	// Image of the notebook server, e.g. "quay.io/jupyter/scipy-notebook:2026-11-30".
	// Required.
	Image string `json:"image"`
	// ImagePullPolicy is Always, IfNotPresent or Never. Default:
	// Kubernetes's (Always for :latest or no tag, else IfNotPresent).
	ImagePullPolicy string `json:"imagePullPolicy,omitempty"`
	// Command and Args replace the image's entrypoint and its arguments;
	// {port}, {session}, {pool}, {owner} and {base_url} are replaced in
	// each. {token} is refused: the token is in $JUPYTER_TOKEN and
	// $MERIDIAN_WORKLOAD_TOKEN, from a Secret. Default: the image's.
	Command []string `json:"command,omitempty"`
	Args    []string `json:"args,omitempty"`
	// Port the notebook server listens on; the session's endpoint is
	// http://POD_IP:PORT. Default 8888.
	Port int `json:"port,omitempty"`
	// Env is added to the notebook container's environment.
	Env map[string]string `json:"env,omitempty"`
	// Resources of one session, as Kubernetes quantities:
	// {requests: {cpu: 4, memory: 29Gi}, limits: {nvidia.com/gpu: 2}}.
	// Default: none.
	Resources KubernetesResources `json:"resources,omitempty"`
	// NodeSelector and Tolerations place the Pods, e.g.
	// {cloud.google.com/gke-accelerator: nvidia-tesla-t4} and
	// [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}].
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`
	Tolerations  []Toleration      `json:"tolerations,omitempty"`
	// Volume is where users' work is kept between sessions.
	Volume VolumeConfig `json:"volume,omitempty"`
	// SecurityContext of the notebook container. Default: non-root
	// (uid 1000, gid 100, fsGroup 100: Jupyter's images), read-only root
	// filesystem, no privilege escalation, no capabilities.
	SecurityContext SecurityConfig `json:"securityContext,omitempty"`
	// ReadinessPath, when set, is the HTTP path the kubelet probes to call
	// the server ready ({base_url} is replaced), e.g. "{base_url}api" for
	// Jupyter. Default: a TCP connection to Port, as the local runtime
	// waits for the port to answer.
	ReadinessPath string `json:"readinessPath,omitempty"`
	// TerminationGracePeriod is how long a stopping session's server has
	// between SIGTERM and SIGKILL. Default 30s, at most 45s (the
	// scheduler waits a minute for a Pod to go).
	TerminationGracePeriod Duration `json:"terminationGracePeriod,omitempty"`
	// CapacityResource is what `capacity: fromCluster` counts: each
	// node's allocatable amount of it, divided by what one session
	// requests. Default "nvidia.com/gpu".
	CapacityResource string `json:"capacityResource,omitempty"`
}

// KubernetesResources are a container's requests and limits by resource
// name ("cpu", "memory", "nvidia.com/gpu").
type KubernetesResources struct {
	Requests map[string]Quantity `json:"requests,omitempty"`
	Limits   map[string]Quantity `json:"limits,omitempty"`
}

// Quantity is a Kubernetes quantity, "4", "500m" or "29Gi", written as
// a string or a number.
type Quantity string

// UnmarshalJSON accepts a string or a number.
func (q *Quantity) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*q = Quantity(s)
		return nil
	}
	var n json.Number
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&n); err != nil {
		return fmt.Errorf("want a quantity like \"4\", \"500m\" or \"29Gi\", got %s", b)
	}
	*q = Quantity(n.String())
	return nil
}

// Toleration lets Pods onto nodes with a matching taint.
type Toleration struct {
	Key string `json:"key,omitempty"`
	// Operator is Equal (default) or Exists.
	Operator string `json:"operator,omitempty"`
	Value    string `json:"value,omitempty"`
	// Effect is NoSchedule, PreferNoSchedule or NoExecute; empty: all.
	Effect string `json:"effect,omitempty"`
	// TolerationSeconds bounds how long a NoExecute taint is tolerated.
	TolerationSeconds *int64 `json:"tolerationSeconds,omitempty"`
}

// VolumePolicy says which sessions share a claim.
type VolumePolicy string

const (
	// VolumePerUser: one claim per user (and volume name), mounted by
	// each of their sessions of the pools that name it.
	VolumePerUser VolumePolicy = "per-user"
	// VolumePerSession: a claim of its own for each session.
	VolumePerSession VolumePolicy = "per-session"
	// VolumeNone: no claim; an emptyDir that goes with the Pod.
	VolumeNone VolumePolicy = "none"
)

// VolumeConfig is the PersistentVolumeClaim that keeps a user's work. The
// runtime creates it and never deletes it: see docs/scheduler.md for
// deleting a user's data.
type VolumeConfig struct {
	// Policy is per-user (default), per-session or none.
	Policy VolumePolicy `json:"policy,omitempty"`
	// Name prefixes the claims: NAME-<owner hash> (per-user),
	// NAME-<session id> (per-session). Pools with the same name share a
	// user's claim, as it was first created. Default "home".
	Name string `json:"name,omitempty"`
	// Size requested for a new claim. Default 10Gi.
	Size Quantity `json:"size,omitempty"`
	// StorageClass of a new claim. Default: the cluster's default class.
	StorageClass string `json:"storageClass,omitempty"`
	// AccessMode of a new claim: ReadWriteOnce (default), ReadWriteMany
	// or ReadWriteOncePod. A per-user ReadWriteOnce claim cannot be
	// mounted on two nodes at once: with maxPerUser > 1, use
	// ReadWriteMany where the storage offers it.
	AccessMode string `json:"accessMode,omitempty"`
	// MountPath in the container; it is also $HOME. Default /home/jovyan.
	MountPath string `json:"mountPath,omitempty"`
}

// SecurityConfig relaxes the notebook container's defaults. Privilege
// escalation and capabilities are never allowed.
type SecurityConfig struct {
	// RunAsUser, RunAsGroup and FSGroup. Default 1000, 100 and 100.
	RunAsUser  *int64 `json:"runAsUser,omitempty"`
	RunAsGroup *int64 `json:"runAsGroup,omitempty"`
	FSGroup    *int64 `json:"fsGroup,omitempty"`
	// RunAsNonRoot makes the kubelet refuse to run the image as root.
	// Default true.
	RunAsNonRoot *bool `json:"runAsNonRoot,omitempty"`
	// ReadOnlyRootFilesystem leaves only the volume ($HOME) and /tmp
	// writable. Default true.
	ReadOnlyRootFilesystem *bool `json:"readOnlyRootFilesystem,omitempty"`
}

// UnmarshalJSON reads a pool, whose capacity may be a number or
// "fromCluster". Unknown fields are refused, as everywhere in the config.
func (p *PoolConfig) UnmarshalJSON(b []byte) error {
	type fields PoolConfig // the same fields without this method
	aux := struct {
		*fields
		Capacity json.RawMessage `json:"capacity"` // shadows fields.Capacity
	}{fields: (*fields)(p)}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&aux); err != nil {
		return err
	}
	switch c := string(aux.Capacity); {
	case c == "" || c == "null":
	case c == strconv.Quote(CapacityFromCluster):
		p.CapacityFromCluster = true
	default:
		if err := json.Unmarshal(aux.Capacity, &p.Capacity); err != nil {
			return fmt.Errorf("pool %q: capacity = %s: want a number of slots or %q", p.Name, c, CapacityFromCluster)
		}
	}
	return nil
}

// defaultKubernetes fills a pool's Kubernetes defaults in place.
func (k *KubernetesPool) defaultKubernetes() {
	if k.Port == 0 {
		k.Port = 8888
	}
	if k.TerminationGracePeriod.Duration == 0 {
		k.TerminationGracePeriod.Duration = 30 * time.Second
	}
	if k.CapacityResource == "" {
		k.CapacityResource = "nvidia.com/gpu"
	}
	v := &k.Volume
	if v.Policy == "" {
		v.Policy = VolumePerUser
	}
	if v.Name == "" {
		v.Name = "home"
	}
	if v.Size == "" {
		v.Size = "10Gi"
	}
	if v.AccessMode == "" {
		v.AccessMode = "ReadWriteOnce"
	}
	if v.MountPath == "" {
		v.MountPath = "/home/jovyan"
	}
	sc := &k.SecurityContext
	for _, d := range []struct {
		p **int64
		v int64
	}{{&sc.RunAsUser, 1000}, {&sc.RunAsGroup, 100}, {&sc.FSGroup, 100}} {
		if *d.p == nil {
			*d.p = &d.v
		}
	}
	for _, b := range []**bool{&sc.RunAsNonRoot, &sc.ReadOnlyRootFilesystem} {
		if *b == nil {
			t := true
			*b = &t
		}
	}
}

// MaxTerminationGracePeriod bounds KubernetesPool.TerminationGracePeriod:
// the scheduler gives a workload's Stop a minute.
const MaxTerminationGracePeriod = 45 * time.Second

// validateKubernetes reports what is wrong with a pool's Kubernetes
// settings, each error naming the field (f is the pool's, "pools[N]").
func validateKubernetes(f string, p *PoolConfig) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	k := p.Kubernetes
	if k == nil {
		if p.CapacityFromCluster {
			bad("%s.capacity = %s: needs %s.kubernetes (the Pods' resources, to divide the nodes' by)", f, CapacityFromCluster, f)
		}
		return errs
	}
	f += ".kubernetes"
	if strings.TrimSpace(k.Image) == "" {
		bad("%s.image: empty; name the notebook server's image, e.g. quay.io/jupyter/scipy-notebook", f)
	}
	switch k.ImagePullPolicy {
	case "", "Always", "IfNotPresent", "Never":
	default:
		bad("%s.imagePullPolicy = %q: want Always, IfNotPresent or Never", f, k.ImagePullPolicy)
	}
	for name, argv := range map[string][]string{"command": k.Command, "args": k.Args} {
		for i, a := range argv {
			if strings.Contains(a, "{token}") {
				bad("%s.%s[%d] = %q: contains {token}, which would put the session's token in the Pod's spec for anyone who can read Pods; "+
					"remove it: the server finds it in $JUPYTER_TOKEN (which Jupyter reads) and $MERIDIAN_WORKLOAD_TOKEN", f, name, i, a)
			}
		}
	}
	if k.Port < 1 || k.Port > 65535 {
		bad("%s.port = %d: must be 1–65535", f, k.Port)
	}
	for _, name := range []string{"JUPYTER_TOKEN", "MERIDIAN_WORKLOAD_TOKEN"} {
		if _, ok := k.Env[name]; ok {
			bad("%s.env.%s: set by the runtime (the session's token); remove it", f, name)
		}
	}
	for i, t := range k.Tolerations {
		tf := fmt.Sprintf("%s.tolerations[%d]", f, i)
		switch t.Operator {
		case "", "Equal":
			if t.Key == "" {
				bad("%s: operator Equal needs a key", tf)
			}
		case "Exists":
			if t.Value != "" {
				bad("%s.value = %q: operator Exists takes no value", tf, t.Value)
			}
		default:
			bad("%s.operator = %q: want Equal or Exists", tf, t.Operator)
		}
		switch t.Effect {
		case "", "NoSchedule", "PreferNoSchedule", "NoExecute":
		default:
			bad("%s.effect = %q: want NoSchedule, PreferNoSchedule or NoExecute (or none: all)", tf, t.Effect)
		}
		if t.TolerationSeconds != nil && t.Effect != "NoExecute" {
			bad("%s.tolerationSeconds: only for effect NoExecute", tf)
		}
	}
	errs = append(errs, validateVolume(f+".volume", &k.Volume)...)
	sc := k.SecurityContext
	for name, id := range map[string]*int64{"runAsUser": sc.RunAsUser, "runAsGroup": sc.RunAsGroup, "fsGroup": sc.FSGroup} {
		if id != nil && (*id < 0 || *id > 1<<31-1) {
			bad("%s.securityContext.%s = %d: must be 0–2147483647", f, name, *id)
		}
	}
	if sc.RunAsNonRoot != nil && *sc.RunAsNonRoot && sc.RunAsUser != nil && *sc.RunAsUser == 0 {
		bad("%s.securityContext.runAsUser = 0 with runAsNonRoot: the kubelet would refuse to start it; set runAsNonRoot: false to run as root", f)
	}
	if k.ReadinessPath != "" && !strings.HasPrefix(k.ReadinessPath, "/") && !strings.HasPrefix(k.ReadinessPath, "{base_url}") {
		bad("%s.readinessPath = %q: want an absolute path, e.g. \"{base_url}api\" or \"/api\"", f, k.ReadinessPath)
	}
	if g := k.TerminationGracePeriod.Duration; g < time.Second || g > MaxTerminationGracePeriod {
		bad("%s.terminationGracePeriod = %s: must be 1s–%s (the scheduler waits a minute for a stopping Pod)", f, g, MaxTerminationGracePeriod)
	}
	if p.CapacityFromCluster && k.Resources.Requests[k.CapacityResource] == "" && k.Resources.Limits[k.CapacityResource] == "" {
		bad("%s.capacity = %s: %s.resources asks for no %s, the resource counted; request it, or set %s.capacityResource",
			strings.TrimSuffix(f, ".kubernetes"), CapacityFromCluster, f, k.CapacityResource, f)
	}
	return errs
}

func validateVolume(f string, v *VolumeConfig) []error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	switch v.Policy {
	case VolumePerUser, VolumePerSession, VolumeNone:
	default:
		bad("%s.policy = %q: want %s, %s or %s", f, v.Policy, VolumePerUser, VolumePerSession, VolumeNone)
	}
	if !validVolumeName(v.Name) {
		bad("%s.name = %q: must be 1–20 characters of a-z, 0-9 and '-', starting with a letter (claims are NAME-<owner hash>)", f, v.Name)
	}
	switch v.AccessMode {
	case "ReadWriteOnce", "ReadWriteMany", "ReadWriteOncePod":
	default:
		bad("%s.accessMode = %q: want ReadWriteOnce, ReadWriteMany or ReadWriteOncePod", f, v.AccessMode)
	}
	if !path.IsAbs(v.MountPath) || path.Clean(v.MountPath) != v.MountPath || v.MountPath == "/" || v.MountPath == "/tmp" {
		bad("%s.mountPath = %q: want a clean absolute path other than / and /tmp, e.g. /home/jovyan", f, v.MountPath)
	}
	return errs
}

func validVolumeName(s string) bool {
	if len(s) == 0 || len(s) > 20 || s[0] < 'a' || s[0] > 'z' || s[len(s)-1] == '-' {
		return false
	}
	return validPoolName(s)
}
