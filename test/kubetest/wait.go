package kubetest

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// WaitFor polls cond every 50 ms until it returns nil, and fails the test
// with what and cond's last error after Options.WaitTimeout, or at once
// when a program of the cluster exits unbidden. Return an error wrapping
// nothing in particular for "not yet".
func (c *Cluster) WaitFor(t testing.TB, what string, cond func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.WaitTimeout)
	defer cancel()
	if err := c.poll(ctx, what, cond); err != nil {
		t.Fatalf("cluster %q: %v", c.Name, err)
	}
}

// WaitPodsReady waits until exactly n pods in namespace ns match selector
// (a label selector, e.g. "app=web") and all are Running and Ready with an
// IP, none terminating, and returns them ordered by name. Their IPs (IPs)
// are local in the test's network namespace: bind servers on them.
func (c *Cluster) WaitPodsReady(t testing.TB, ns, selector string, n int) []corev1.Pod {
	t.Helper()
	var ready []corev1.Pod
	c.WaitFor(t, fmt.Sprintf("%d Ready pods %s in %s", n, selector, ns), func(ctx context.Context) error {
		list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		ready = ready[:0]
		var states []string
		for _, p := range list.Items {
			if PodReady(&p) {
				ready = append(ready, p)
			} else {
				states = append(states, p.Name+": "+string(p.Status.Phase))
			}
		}
		if len(ready) != n || len(list.Items) != n {
			return fmt.Errorf("%w: %d pods, %d Ready (%s)", errNotYet, len(list.Items), len(ready), strings.Join(states, ", "))
		}
		return nil
	})
	slices.SortFunc(ready, func(a, b corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return ready
}

// PodReady: Running, Ready, with an IP, and not terminating.
func PodReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
		return false
	}
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// IPs are the pods' IPs, in the pods' order.
func IPs(pods []corev1.Pod) []string {
	ips := make([]string, len(pods))
	for i, p := range pods {
		ips[i] = p.Status.PodIP
	}
	return ips
}

// CreateNamespace creates a namespace and waits for its default
// ServiceAccount, without which the apiserver refuses pods there (the
// controller-manager makes it a moment after the namespace).
func (c *Cluster) CreateNamespace(t testing.TB, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.WaitTimeout)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("cluster %q: creating namespace %s: %v", c.Name, name, err)
	}
	c.WaitFor(t, "namespace "+name+"'s default ServiceAccount", func(ctx context.Context) error {
		_, err := c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
}

// Endpoint is one address of a Service as its EndpointSlices publish it.
type Endpoint struct {
	IP    string
	Pod   string // the targetRef's name
	Ready bool
}

// ServiceEndpoints reads the EndpointSlices of a Service, ordered by IP
// and then pod (kwok may give a new pod the IP of one just deleted).
func (c *Cluster) ServiceEndpoints(ctx context.Context, ns, service string) ([]Endpoint, error) {
	slices_, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + service,
	})
	if err != nil {
		return nil, err
	}
	var eps []Endpoint
	for _, s := range slices_.Items {
		for _, e := range s.Endpoints {
			ep := Endpoint{Ready: e.Conditions.Ready == nil || *e.Conditions.Ready}
			if e.TargetRef != nil {
				ep.Pod = e.TargetRef.Name
			}
			for _, a := range e.Addresses {
				ep.IP = a
				eps = append(eps, ep)
			}
		}
	}
	slices.SortFunc(eps, func(a, b Endpoint) int {
		if d := strings.Compare(a.IP, b.IP); d != 0 {
			return d
		}
		return strings.Compare(a.Pod, b.Pod)
	})
	return eps, nil
}
