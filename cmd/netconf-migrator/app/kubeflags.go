package app

import (
	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// kubeFlags are kubectl's own connection flags, bound by client-go's
// clientcmd (the flag set k8s.io/cli-runtime's ConfigFlags wraps):
// --kubeconfig, --context, --cluster, --user, --as, --as-group, --as-uid,
// --server, --token, --certificate-authority, -n and the rest, so the
// binary works as `kubectl netconf-migrator` (installed as
// kubectl-netconf_migrator) the way kubectl plugins do. cli-runtime's
// genericclioptions package itself is not used: it links its printers and
// kustomize, and doubled the binary (51 MB to 103 MB) for the same flags.
// Without a kubeconfig the Pod's ServiceAccount is used, as a Job does.
type kubeFlags struct {
	rules         *clientcmd.ClientConfigLoadingRules
	overrides     clientcmd.ConfigOverrides
	allNamespaces bool
}

func newKubeFlags() *kubeFlags {
	return &kubeFlags{rules: clientcmd.NewDefaultClientConfigLoadingRules()}
}

// addTo binds the flags; scoped commands get -n and -A. kubectl's
// --request-timeout is left out: migrate has its own, per request. So are
// --username and --password, as kubectl leaves them out (cli-runtime's
// ConfigFlags binds them only when asked to): basic auth is gone from
// Kubernetes, and a password on a command line lands in shell history.
func (k *kubeFlags) addTo(fs *pflag.FlagSet, scoped bool) {
	fs.StringVar(&k.rules.ExplicitPath, "kubeconfig", "", "kubeconfig file (default: KUBECONFIG, ~/.kube/config, then in-cluster)")
	names := clientcmd.RecommendedConfigOverrideFlags("")
	names.Timeout.LongName = ""
	names.AuthOverrideFlags.Username.LongName = ""
	names.AuthOverrideFlags.Password.LongName = ""
	if !scoped {
		names.ContextOverrideFlags.Namespace.LongName = ""
		names.ContextOverrideFlags.Namespace.ShortName = ""
	}
	clientcmd.BindOverrideFlags(&k.overrides, fs, names)
	if scoped {
		fs.Lookup("namespace").Usage = "only this namespace (default: every namespace, as the migration Job runs; not the kubeconfig's namespace)"
		fs.BoolVarP(&k.allNamespaces, "all-namespaces", "A", false, "every namespace (the default; says it explicitly)")
	}
}

// restConfig resolves the connection as kubectl does: the flags, then
// KUBECONFIG and ~/.kube/config, then the Pod's ServiceAccount.
func (k *kubeFlags) restConfig() (*rest.Config, error) {
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(k.rules, &k.overrides).ClientConfig()
}

// namespace is the scope: the -n given, or "" (every namespace).
func (k *kubeFlags) namespace() (string, error) {
	ns := k.overrides.Context.Namespace
	if ns != "" && k.allNamespaces {
		return "", usageError("-n %s and -A (--all-namespaces) cannot go together", ns)
	}
	return ns, nil
}
