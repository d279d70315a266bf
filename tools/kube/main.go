// Command kube is the Kubernetes control plane that Meridian's tests run
// (test/kubetest): kube-apiserver, kube-controller-manager, kube-scheduler
// and kubectl from k8s.io/kubernetes v1.37.2, in one binary that picks the
// program by the name it is called by (a symlink), or by its first
// argument (kube kube-apiserver …).
//
// Why one binary: the four programs share most of their code (client-go,
// apimachinery, apiserver, the API types). Linked together they are one
// file of about 180 MB and one link step; linked apart, four files that
// each carry that shared code and four link steps, which cost CI minutes
// on a 2-core machine and disk in the binary cache (scripts/ensure-kube.sh).
//
// Why its own module: k8s.io/kubernetes is not meant to be imported (its
// go.mod requires its 31 staging modules at v0.0.0, so each needs a
// replace to its published v0.37.2 here), and it would pull hundreds of
// modules into Meridian's go.mod. The main module needs only client-go,
// api and apimachinery, at the same release.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/component-base/cli"
	kubectl "k8s.io/kubectl/pkg/cmd"
	apiserver "k8s.io/kubernetes/cmd/kube-apiserver/app"
	controllermanager "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	scheduler "k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	name := filepath.Base(os.Args[0])
	if name == "kube" && len(os.Args) > 1 {
		name, os.Args = os.Args[1], os.Args[1:]
	}
	switch name {
	case "kube-apiserver":
		os.Exit(cli.Run(apiserver.NewAPIServerCommand()))
	case "kube-controller-manager":
		os.Exit(cli.Run(controllermanager.NewControllerManagerCommand()))
	case "kube-scheduler":
		os.Exit(cli.Run(scheduler.NewSchedulerCommand()))
	case "kubectl":
		if err := cli.RunNoErrOutput(kubectl.NewDefaultKubectlCommand()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	fmt.Fprintf(os.Stderr, "kube: call as kube-apiserver, kube-controller-manager, kube-scheduler or kubectl (or kube NAME …), not %q\n", name)
	os.Exit(2)
}
