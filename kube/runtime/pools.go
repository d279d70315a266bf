package runtime

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/meridian-gw/meridian/scheduler"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
)

// pool is a pool's Kubernetes settings, checked and turned into the
// Kubernetes types the Pods are made of.
type pool struct {
	name      string
	cfg       *scheduler.KubernetesPool
	resources corev1.ResourceRequirements
	// selector matches the nodes the pool's Pods may run on (nodeSelector).
	selector    labels.Selector
	tolerations []corev1.Toleration
	size        resource.Quantity // of a new claim
	// capacity: the pool's slots come from the cluster, counting
	// capacityResource (one session takes perSession of it).
	capacity         bool
	capacityResource corev1.ResourceName
	perSession       resource.Quantity
}

// preparePools checks every pool's Kubernetes settings, for what
// scheduler.Config cannot check without Kubernetes code: quantities,
// label keys and values, environment names. Every error names the field.
func preparePools(cfg *scheduler.Config) (map[string]*pool, error) {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	pools := map[string]*pool{}
	for i := range cfg.Pools {
		pc := &cfg.Pools[i]
		f := fmt.Sprintf("pools[%d]", i)
		k := pc.Kubernetes
		if k == nil {
			bad("%s.kubernetes: missing for pool %q; the kubernetes runtime needs at least its image, e.g. kubernetes: {image: quay.io/jupyter/scipy-notebook}", f, pc.Name)
			continue
		}
		f += ".kubernetes"
		p := &pool{name: pc.Name, cfg: k, capacity: pc.CapacityFromCluster, capacityResource: corev1.ResourceName(k.CapacityResource)}
		p.resources.Requests = quantities(f+".resources.requests", k.Resources.Requests, bad)
		p.resources.Limits = quantities(f+".resources.limits", k.Resources.Limits, bad)
		for key, value := range k.NodeSelector {
			for _, msg := range validation.IsQualifiedName(key) {
				bad("%s.nodeSelector: key %q: %s", f, key, msg)
			}
			for _, msg := range validation.IsValidLabelValue(value) {
				bad("%s.nodeSelector.%s = %q: %s", f, key, value, msg)
			}
		}
		p.selector = labels.SelectorFromSet(k.NodeSelector)
		for j, t := range k.Tolerations {
			if t.Key != "" {
				for _, msg := range validation.IsQualifiedName(t.Key) {
					bad("%s.tolerations[%d].key = %q: %s", f, j, t.Key, msg)
				}
			}
			p.tolerations = append(p.tolerations, corev1.Toleration{Key: t.Key, Operator: corev1.TolerationOperator(t.Operator),
				Value: t.Value, Effect: corev1.TaintEffect(t.Effect), TolerationSeconds: t.TolerationSeconds})
		}
		for name := range k.Env {
			for _, msg := range validation.IsEnvVarName(name) {
				bad("%s.env: name %q: %s", f, name, msg)
			}
		}
		if q, err := resource.ParseQuantity(string(k.Volume.Size)); err != nil || q.Sign() <= 0 {
			bad("%s.volume.size = %q: want a positive quantity such as 10Gi", f, k.Volume.Size)
		} else {
			p.size = q
		}
		if sc := k.Volume.StorageClass; sc != "" {
			for _, msg := range validation.IsDNS1123Subdomain(sc) {
				bad("%s.volume.storageClass = %q: %s", f, sc, msg)
			}
		}
		if p.capacity {
			q, ok := p.resources.Requests[p.capacityResource]
			if !ok {
				q, ok = p.resources.Limits[p.capacityResource]
			}
			if !ok || q.Sign() <= 0 {
				bad("%s.resources: asks for no %s, which capacity: %s counts; request it, or set %s.capacityResource", f, p.capacityResource, scheduler.CapacityFromCluster, f)
			}
			p.perSession = q
		}
		pools[pc.Name] = p
	}
	return pools, errors.Join(errs...)
}

// quantities parses a map of resource quantities; bad reports each error.
func quantities(f string, in map[string]scheduler.Quantity, bad func(string, ...any)) corev1.ResourceList {
	if len(in) == 0 {
		return nil
	}
	out := corev1.ResourceList{}
	names := make([]string, 0, len(in))
	for name := range in {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		v := in[name]
		if msgs := validation.IsQualifiedName(name); len(msgs) > 0 {
			bad("%s: resource name %q: %s", f, name, strings.Join(msgs, "; "))
			continue
		}
		q, err := resource.ParseQuantity(string(v))
		if err != nil || q.Sign() < 0 {
			bad("%s.%s = %q: want a quantity such as 4, 500m or 29Gi", f, name, v)
			continue
		}
		out[corev1.ResourceName(name)] = q
	}
	return out
}

// CheckConfig reports what the kubernetes runtime would refuse in cfg's
// pools, as New does, without a cluster: for tests and config checks.
func CheckConfig(cfg *scheduler.Config) error {
	_, err := preparePools(cfg)
	return err
}
