package kubernetes_test

import (
	"bytes"
	"errors"
	kuberuntime "github.com/meridian-gw/meridian/kube/runtime"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/deploy"
	"github.com/meridian-gw/meridian/scheduler"
	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
)

// flag returns the value of --name=VALUE in args.
func flag(t *testing.T, args []string, name string) string {
	t.Helper()
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v
		}
	}
	t.Fatalf("no --%s in %q", name, args)
	return ""
}

func duration(t *testing.T, args []string, name string) time.Duration {
	t.Helper()
	d, err := time.ParseDuration(flag(t, args, name))
	if err != nil {
		t.Fatalf("--%s: %v", name, err)
	}
	return d
}

// TestDrainAddsUp: the shutdown sequence of base/scheduler.yaml's comment
// holds for the values the manifests set.
func TestDrainAddsUp(t *testing.T) {
	// The gateway's graceful stop after its drain, and the scheduler's
	// runtime shutdown (--workload_grace default 10s, + 10s): fixed in code.
	const gatewayInFlight, runtimeShutdown = 10 * time.Second, 20 * time.Second
	d := schedulerPod(t, "overlays/member-us-central1")
	ps := d.Spec.Template.Spec
	esp, sched := container(t, ps, "esp"), container(t, ps, "session-scheduler")
	espDrain, schedDrain := duration(t, esp.Args, "drain"), duration(t, sched.Args, "drain")
	if sched.Lifecycle == nil || sched.Lifecycle.PreStop == nil || sched.Lifecycle.PreStop.Sleep == nil {
		t.Fatal("session-scheduler has no preStop sleep")
	}
	preStop := time.Duration(sched.Lifecycle.PreStop.Sleep.Seconds) * time.Second
	grace := time.Duration(*ps.TerminationGracePeriodSeconds) * time.Second
	// The scheduler accepts calls until preStop + its drain; esp forwards
	// new ones until its drain ends.
	if preStop+schedDrain <= espDrain {
		t.Errorf("the scheduler stops accepting calls at %v, before esp stops forwarding them at %v", preStop+schedDrain, espDrain)
	}
	// Done: esp's in-flight calls end by espDrain + gatewayInFlight; the
	// scheduler then stops its runtime.
	done := max(preStop+schedDrain, espDrain+gatewayInFlight) + runtimeShutdown
	if grace < done {
		t.Errorf("terminationGracePeriodSeconds %v < %v, when the scheduler may still be stopping", grace, done)
	}
}

// TestCopiesAreTheOriginals: kustomize reads files only below a
// kustomization, so these are copies; they must not drift.
func TestCopiesAreTheOriginals(t *testing.T) {
	pools, err := os.ReadFile("../pools.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for copyPath, orig := range map[string]string{
		"base/service-config.yaml":  deploy.ServiceYAML,
		"base/pools.yaml":           string(pools),
		"overlays/config/seed.yaml": deploy.EdgeYAML,
	} {
		b, err := os.ReadFile(copyPath)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != orig {
			t.Errorf("deploy/kubernetes/%s differs from its original in deploy/: copy it again", copyPath)
		}
	}
}

// TestPoolsConfigsLoad: every pools.yaml the manifests ship is one the
// scheduler accepts, with the Pod runtime.
func TestPoolsConfigsLoad(t *testing.T) {
	files, _ := filepath.Glob("*/pools.yaml")
	more, _ := filepath.Glob("overlays/*/pools.yaml")
	files = append(files, more...)
	if len(files) != 3 {
		t.Fatalf("pools.yaml files %v; want base's and one per member overlay", files)
	}
	for _, f := range files {
		cfg, err := scheduler.LoadConfig(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		// The scheduler runs them with --runtime=kubernetes.
		if err := kuberuntime.CheckConfig(cfg); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestMemberOverlaysNameTheirRegion: overlays/member-REGION runs its
// scheduler in REGION.
func TestMemberOverlaysNameTheirRegion(t *testing.T) {
	dirs, _ := filepath.Glob("overlays/member-*")
	for _, dir := range dirs {
		region := strings.TrimPrefix(filepath.Base(dir), "member-")
		d := schedulerPod(t, dir)
		sched := container(t, d.Spec.Template.Spec, "session-scheduler")
		if flag(t, sched.Args, "region") != "$(MERIDIAN_REGION)" {
			t.Fatalf("%s: --region is not $(MERIDIAN_REGION)", dir)
		}
		var cm string
		for _, e := range sched.Env {
			if e.Name == "MERIDIAN_REGION" && e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
				cm = e.ValueFrom.ConfigMapKeyRef.Name
			}
		}
		found := false
		for _, o := range render(t, dir).objects {
			if c, ok := o.(*corev1.ConfigMap); ok && c.Name == cm {
				found = true
				if c.Data["region"] != region {
					t.Errorf("%s: ConfigMap %s says region %q; want %q", dir, cm, c.Data["region"], region)
				}
			}
		}
		if !found {
			t.Errorf("%s: the region's ConfigMap %q is not rendered", dir, cm)
		}
	}
}

// TestEveryRBACVerbSaysWhy: each rule of each Role and ClusterRole has a
// comment naming every verb it grants (least privilege, explained).
func TestEveryRBACVerbSaysWhy(t *testing.T) {
	files, _ := filepath.Glob("*/*.yaml")
	more, _ := filepath.Glob("overlays/*/*.yaml")
	rules := 0
	for _, f := range append(files, more...) {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var doc yaml.Node
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(doc.Content) == 0 {
				continue
			}
			root := doc.Content[0]
			kind := field(root, "kind")
			if kind == nil || (kind.Value != "Role" && kind.Value != "ClusterRole") {
				continue
			}
			name := field(field(root, "metadata"), "name").Value
			rs := field(root, "rules")
			for i, rule := range rs.Content {
				rules++
				comment := rule.HeadComment
				if len(rule.Content) > 0 {
					comment += rule.Content[0].HeadComment
				}
				for _, verb := range field(rule, "verbs").Content {
					if !regexp.MustCompile(`\b` + verb.Value + `\b`).MatchString(comment) {
						t.Errorf("%s: %s %s rule %d grants %s without a comment saying why", f, kind.Value, name, i, verb.Value)
					}
				}
			}
		}
	}
	if rules < 10 {
		t.Fatalf("found only %d RBAC rules: has the layout changed?", rules)
	}
}

// field returns the value of key in a mapping node, or nil.
func field(n *yaml.Node, key string) *yaml.Node {
	if n == nil {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}
