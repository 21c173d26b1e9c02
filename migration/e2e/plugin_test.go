package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/harvester/netconf-migrator/test/testenv"
)

// TestAsAKubectlPlugin installs the binary as kubectl-netconf_migrator and
// runs it through kubectl, with kubectl's own connection flags: --context
// picks the cluster when the current context points elsewhere, --as and
// --as-group act as another identity (the Job's ServiceAccount: a dry run
// it may do, a server dry run with a backup namespace it may not write
// refused by name), -n scopes the run, and -n with -A is a usage error.
func TestAsAKubectlPlugin(t *testing.T) {
	ctx := context.Background()
	const ns = "plugin"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	seed(t, population(ns, 5, map[string]string{suiteLabel: "plugin"}))
	applyJobRBAC(t)
	ensureBackupNamespace(t)

	dir := t.TempDir()
	if err := os.Rename(testenv.BuildBinary(t), filepath.Join(dir, "kubectl-netconf_migrator")); err != nil {
		t.Fatal(err)
	}
	// A kubeconfig whose current context points nowhere; the real one is
	// named with --context.
	cfg, err := clientcmd.LoadFromFile(env.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	real := cfg.CurrentContext
	cfg.Clusters["nowhere"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1"}
	cfg.Contexts["nowhere"] = &clientcmdapi.Context{Cluster: "nowhere", AuthInfo: cfg.Contexts[real].AuthInfo}
	cfg.CurrentContext = "nowhere"
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, kubeconfig); err != nil {
		t.Fatal(err)
	}
	kubectl := func(args ...string) (int, string) {
		t.Helper()
		cmd := exec.Command("kubectl", append([]string{"netconf-migrator"}, args...)...)
		cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+kubeconfig)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		code := 0
		if e, ok := err.(*exec.ExitError); ok {
			code = e.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return code, out.String()
	}
	common := []string{"--termination-message-path", "", "--lease-wait", "0s"}

	if code, out := kubectl(append([]string{"migrate", "--context", real, "-n", ns, "--dry-run=server"}, common...)...); code != 0 || !strings.Contains(out, `"namespace":"`+ns+`"`) {
		t.Errorf("kubectl netconf-migrator migrate --context -n --dry-run=server: exit %d\n%s", code, out)
	}
	if code, out := kubectl(append([]string{"migrate", "-n", ns, "--dry-run=client", "--nad-retry-budget", "1s"}, common...)...); code != 3 || !strings.Contains(out, "https://127.0.0.1:1") {
		t.Errorf("through the current context, which points nowhere: exit %d, want 3 naming its server\n%s", code, out)
	}
	asJob := []string{"--context", real, "--as", jobSA, "--as-group", "system:serviceaccounts", "--as-group", "system:serviceaccounts:" + jobNamespace}
	if code, out := kubectl(append(append([]string{"migrate", "-n", ns, "--dry-run=client"}, asJob...), common...)...); code != 0 {
		t.Errorf("--as the Job's ServiceAccount, client dry run: exit %d\n%s", code, out)
	}
	// A backup namespace the Job may not write: the dry run names what the
	// real run would need there and exits 1; the real run refuses to start.
	code, out := kubectl(append(append([]string{"migrate", "-n", ns, "--dry-run=server", "--backup-namespace", "default"}, asJob...), common...)...)
	if code != 1 || !strings.Contains(out, "- create leases in namespace default, for every run") {
		t.Errorf("--as the Job's ServiceAccount, dry run, a backup namespace it may not write: exit %d, want 1 naming what it needs there\n%s", code, out)
	}
	code, out = kubectl(append(append([]string{"migrate", "-n", ns, "--backup-namespace", "default"}, asJob...), common...)...)
	if code != 2 || !strings.Contains(out, "in namespace default") {
		t.Errorf("--as the Job's ServiceAccount, a backup namespace it may not write: exit %d, want 2 naming it\n%s", code, out)
	}
	if code, out := kubectl(append([]string{"migrate", "--context", real, "-n", ns, "-A"}, common...)...); code != 2 || !strings.Contains(out, "cannot go together") {
		t.Errorf("-n with -A: exit %d, want 2\n%s", code, out)
	}
	if code, out := kubectl("backups", "list", "--context", real); code != 0 || !strings.Contains(out, "BACKUP") {
		t.Errorf("kubectl netconf-migrator backups list: exit %d\n%s", code, out)
	}
}
