package kubetest

import (
	"context"
	"errors"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// kwokNodeAnnotation marks the nodes kwok manages
// (--manage-nodes-with-annotation-selector).
const kwokNodeAnnotation = "kwok.x-k8s.io/node"

// StorageClass is the cluster's default StorageClass: kwok provisions and
// binds its PersistentVolumeClaims at once.
const StorageClass = "kwok-volume"

// errNotYet: a condition a poll waits for does not hold yet.
var errNotYet = errors.New("not yet")

// createObjects creates the StorageClass and the nodes.
func (c *Cluster) createObjects(ctx context.Context) error {
	bindImmediately := storagev1.VolumeBindingImmediate
	reclaimDelete := corev1.PersistentVolumeReclaimDelete
	sc := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{Name: StorageClass, Annotations: map[string]string{
			"storageclass.kubernetes.io/is-default-class": "true",
		}},
		Provisioner:       "kwok.x-k8s.io/volume",
		ReclaimPolicy:     &reclaimDelete,
		VolumeBindingMode: &bindImmediately,
	}
	if _, err := c.Client.StorageV1().StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating StorageClass %s: %w", StorageClass, err)
	}
	for _, n := range c.opts.Nodes {
		if _, err := c.Client.CoreV1().Nodes().Create(ctx, node(n), metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating node %s: %w", n.Name, err)
		}
	}
	return nil
}

func node(n Node) *corev1.Node {
	capacity := DefaultCapacity()
	maps.Copy(capacity, n.Capacity)
	labels := map[string]string{
		"kubernetes.io/hostname": n.Name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "kwok",
	}
	maps.Copy(labels, n.Labels)
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name: n.Name, Labels: labels,
			Annotations: map[string]string{kwokNodeAnnotation: "fake", "node.alpha.kubernetes.io/ttl": "0"},
		},
		Spec:   corev1.NodeSpec{Taints: n.Taints},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity.DeepCopy()},
	}
}

// settled holds once every node is Ready and free of the node lifecycle
// controller's not-ready taint, and the controller-manager has made the
// default namespace's ServiceAccount (its controllers are running).
func (c *Cluster) settled(ctx context.Context) error {
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	if len(nodes.Items) != len(c.opts.Nodes) {
		return fmt.Errorf("%w: %d nodes of %d", errNotYet, len(nodes.Items), len(c.opts.Nodes))
	}
	for _, n := range nodes.Items {
		if !nodeReady(&n) {
			return fmt.Errorf("%w: node %s is not Ready", errNotYet, n.Name)
		}
		for _, taint := range n.Spec.Taints {
			if taint.Key == corev1.TaintNodeNotReady || taint.Key == corev1.TaintNodeUnreachable {
				return fmt.Errorf("%w: node %s has taint %s", errNotYet, n.Name, taint.Key)
			}
		}
	}
	if _, err := c.Client.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{}); err != nil {
		return fmt.Errorf("%w: the default ServiceAccount: %w", errNotYet, err)
	}
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}
