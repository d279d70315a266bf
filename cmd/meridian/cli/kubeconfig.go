package cli

import (
	"fmt"
	"os"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// restConfig is the kubeconfig file's client configuration, or else the
// in-cluster one, or else $KUBECONFIG's (client-go's rules).
func restConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		if cfg, err := rest.InClusterConfig(); err == nil {
			return cfg, nil
		}
		if os.Getenv("KUBECONFIG") == "" {
			return nil, fmt.Errorf("--kubeconfig: not given, not in a Pod (no in-cluster credentials), and $KUBECONFIG unset: give --kubeconfig FILE")
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("--kubeconfig %q: %w", kubeconfig, err)
	}
	return cfg, nil
}
