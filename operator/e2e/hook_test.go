package e2e

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// upgradeScript stands in for Harvester's upgrade_manifests.sh: under
// `bash -e` it sources the previous version's pre-hook.sh, then goes on.
const upgradeScript = `#!/bin/bash -e
source "$HOOK"
echo "Upgrading charts"
`

// With the operator installed, Harvester's upgrade pre-hook needs no
// binary: it creates a NADMigration and waits for its condition, with
// kubectl only (no netconf-migrator on PATH here).
func TestPreHookUsesTheOperator(t *testing.T) {
	// The hook migrates every namespace: other tests' NADs that need a
	// person would be reported too.
	dropUnfixable(t)
	ns := namespace(t, "pre-hook", nil)
	create(t, newNAD(ns, "a", nested), newNAD(ns, "b", nested), newNAD(ns, "bad", truncated))
	// The operator's Deployment, ready (no kube-controller-manager here to
	// say so).
	readyDeployment(t, "operator")
	readyDeployment(t, "webhook")
	startOperator(t, operator.Options{Fix: detect.FixOff})

	out, err := upgradeHook(t, "NETCONF_MIGRATOR_STRICT=true").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || strings.Contains(string(out), "Upgrading charts") {
		t.Fatalf("strict pre-hook with a truncated NAD: %v, want exit 1 before the charts\n%s", err, out)
	}
	if !strings.Contains(string(out), ns+"/bad: truncated [reported]") {
		t.Errorf("the hook's output does not name the NAD that needs a person:\n%s", out)
	}
	// Each "what to do" says something: for the truncated NAD, where its
	// bridge settings must come from; an empty one is noise in the
	// upgrade's log.
	for _, line := range strings.Split(string(out), "\n") {
		if strings.TrimSpace(line) == "what to do:" {
			t.Errorf("the hook printed an empty \"what to do:\":\n%s", out)
			break
		}
	}
	if !strings.Contains(string(out), "what to do: write spec.config again with its bridge, vlan and ipam") {
		t.Errorf("the hook does not say what to do with the truncated NAD:\n%s", out)
	}
	if got := forms(t, ns); got[netconf.FormNested] != 0 {
		t.Errorf("forms after the hook: %v", got)
	}
	if hookMigrations(t) == 0 {
		t.Error("the hook created no NADMigration")
	}

	// Not strict (Harvester's default): the upgrade goes on.
	if err := env.Client.Delete(context.Background(), newNAD(ns, "bad", truncated)); err != nil {
		t.Fatal(err)
	}
	out, err = upgradeHook(t).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "every NAD is in the flat form") || !strings.Contains(string(out), "Upgrading charts") {
		t.Errorf("pre-hook with every NAD fixable: %v\n%s", err, out)
	}
}

// dropUnfixable deletes every NAD no run can fix (truncated, invalid,
// double-encoded) that earlier tests left.
func dropUnfixable(t *testing.T) {
	t.Helper()
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := env.Client.List(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		switch netconf.Normalize([]byte(list.Items[i].Spec.Config)).Form {
		case netconf.FormTruncated, netconf.FormInvalid, netconf.FormDoubleEncoded:
			if err := env.Client.Delete(context.Background(), &list.Items[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// readyDeployment stores netconf-migrator's Deployment of a component with
// a ready replica, as the Deployment controller reports it (there is none
// in the test control plane).
func readyDeployment(t *testing.T, component string) {
	t.Helper()
	readyDeploymentIn(t, ownNamespace, "netconf-migrator-"+component, component, "netconf-migrator-"+component)
}

// readyDeploymentIn stores a ready Deployment labelled as netconf-migrator's
// component, running as the ServiceAccount sa.
func readyDeploymentIn(t *testing.T, ns, name, component, sa string) {
	t.Helper()
	readyDeploymentOn(t, env, ns, name, component, sa)
}

// readyDeploymentOn is readyDeploymentIn on the control plane env.
func readyDeploymentOn(t *testing.T, env *testenv.Env, ns, name, component, sa string) {
	t.Helper()
	dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
		Labels: map[string]string{"app.kubernetes.io/name": "netconf-migrator", "app.kubernetes.io/component": component}},
		Spec: appsv1.DeploymentSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "x"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "x"}},
				Spec: corev1.PodSpec{ServiceAccountName: sa, Containers: []corev1.Container{{Name: "c", Image: "i"}}}}}}
	if err := env.Client.Create(context.Background(), dep); err != nil {
		t.Fatalf("creating %s: %v", dep.Name, err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), dep) })
	dep.Status.Replicas, dep.Status.ReadyReplicas = 1, 1
	if err := env.Client.Status().Update(context.Background(), dep); err != nil {
		t.Fatal(err)
	}
}

// With the CRD installed but only the webhook's Deployment ready (the
// chart's operator.enabled=false), no operator would run a NADMigration:
// the hook must not create one and wait for it, but fall back to the
// binary, which this PATH lacks, and say so (strict: exit 2).
func TestPreHookWithoutTheOperatorFallsBackToTheBinary(t *testing.T) {
	readyDeployment(t, "webhook")
	before := hookMigrations(t)
	out, err := upgradeHook(t, "NETCONF_MIGRATOR_STRICT=true", "NETCONF_MIGRATOR_WAIT=5").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "is not in this image") {
		t.Errorf("the hook with only the webhook ready: %v, want exit 2 naming the missing binary\n%s", err, out)
	}
	if after := hookMigrations(t); after != before {
		t.Errorf("the hook created a NADMigration no operator runs (%d, was %d)", after, before)
	}
}

// upgradeHook is Harvester's upgrade script sourcing the pre-hook, with
// only kubectl and the shell's tools on PATH (no netconf-migrator), and
// extra added to this process's environment.
func upgradeHook(t *testing.T, extra ...string) *exec.Cmd {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(t.TempDir(), "upgrade_manifests.sh")
	if err := os.WriteFile(script, []byte(upgradeScript), 0o755); err != nil {
		t.Fatal(err)
	}
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	if err := os.Symlink(kubectl, filepath.Join(bin, "kubectl")); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(script)
	cmd.Env = append(append(os.Environ(), "PATH="+bin+":/usr/bin:/bin", "KUBECONFIG="+env.KubeconfigPath,
		"HOOK="+filepath.Join(root, "config", "harvester-upgrade", "pre-hook.sh")), extra...)
	return cmd
}

// hookMigrations counts the NADMigrations the pre-hook created.
func hookMigrations(t *testing.T) int {
	t.Helper()
	list := &v1alpha1.NADMigrationList{}
	if err := env.Client.List(context.Background(), list); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, nm := range list.Items {
		if strings.HasPrefix(nm.Name, "harvester-upgrade-") {
			n++
		}
	}
	return n
}
