package e2e

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
)

// The hook takes the operator's path only for the operator's Deployment in
// its own namespace, running as its own ServiceAccount: one with the
// operator's labels elsewhere (anyone who may create a Deployment in some
// namespace could make one), or in its namespace under another account, is
// not taken for it. Before, either made the hook create a NADMigration no
// operator runs, wait it out and let the upgrade go on.
func TestPreHookFindsTheOperatorOnlyInItsNamespaceAsItsAccount(t *testing.T) {
	elsewhere := namespace(t, "spoof", nil)
	readyDeploymentIn(t, elsewhere, "netconf-migrator-operator", "operator", "netconf-migrator-operator")
	readyDeploymentIn(t, ownNamespace, "operator-look-alike", "operator", "default")
	before := hookMigrations(t)
	out, err := upgradeHook(t, "NETCONF_MIGRATOR_STRICT=true", "NETCONF_MIGRATOR_WAIT=5").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "is not in this image") {
		t.Errorf("the hook beside look-alikes of the operator: %v, want exit 2 naming the missing binary\n%s", err, out)
	}
	if after := hookMigrations(t); after != before {
		t.Errorf("the hook created a NADMigration for a look-alike of the operator (%d, was %d)", after, before)
	}
}

// Whatever the mode and the outcome, the hook never lets the upgrade go on
// while a backup is open in the backup namespace: its NAD may be missing,
// or a person must decide on it. Here a look-alike backup no run acts on
// stays open; the NADMigration ends Stalled, which the hook, not strict,
// let pass before.
func TestPreHookNeverPassesWithABackupOpen(t *testing.T) {
	dropUnfixable(t)
	ctx := context.Background()
	readyDeployment(t, "operator")
	readyDeployment(t, "webhook")
	startOperator(t, operator.Options{Fix: detect.FixOff})
	open := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: backupNamespace, Name: replace.BackupName("0000-left-open"),
		Labels: map[string]string{replace.LabelBackup: "true"}}, Type: replace.BackupSecretType,
		Data: map[string][]byte{"original.json": []byte(`{}`)}}
	create(t, open)
	out, err := upgradeHook(t, "NETCONF_MIGRATOR_WAIT=120").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 4 || strings.Contains(string(out), "Upgrading charts") ||
		!strings.Contains(string(out), "a replacement is not finished") || !strings.Contains(string(out), open.Name) {
		t.Errorf("the hook with a backup open: %v, want exit 4 before the charts, naming it\n%s", err, out)
	}
	if err := env.Client.Delete(ctx, open); err != nil {
		t.Fatal(err)
	}
	out, err = upgradeHook(t, "NETCONF_MIGRATOR_WAIT=120").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Upgrading charts") {
		t.Errorf("the hook with no backup open: %v\n%s", err, out)
	}
}

// Backups a 0.2 run left beside the webhook count too: the operator may not
// list them, so the hook, with the upgrade Job's rights, checks that
// namespace as well, and stops the upgrade while one is there.
func TestPreHookNeverPassesWithAnEarlierBackupLeft(t *testing.T) {
	dropUnfixable(t)
	ctx := context.Background()
	readyDeployment(t, "operator")
	readyDeployment(t, "webhook")
	startOperator(t, operator.Options{Fix: detect.FixOff})
	left := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ownNamespace, Name: replace.BackupName("0000-left-by-0-2"),
		Labels: map[string]string{replace.LabelBackup: "true"}}, Type: replace.BackupSecretType,
		Data: map[string][]byte{"original.json": []byte(`{}`)}}
	create(t, left)
	out, err := upgradeHook(t, "NETCONF_MIGRATOR_WAIT=120").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 4 || strings.Contains(string(out), "Upgrading charts") ||
		!strings.Contains(string(out), "an earlier version left backups in "+ownNamespace) || !strings.Contains(string(out), left.Name) {
		t.Errorf("the hook with a 0.2 backup left: %v, want exit 4 before the charts, naming it\n%s", err, out)
	}
	if err := env.Client.Delete(ctx, left); err != nil {
		t.Fatal(err)
	}
	out, err = upgradeHook(t, "NETCONF_MIGRATOR_WAIT=120").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Upgrading charts") {
		t.Errorf("the hook with nothing left: %v\n%s", err, out)
	}
}

// An operator the chart installed with nameOverride and fullnameOverride
// runs as <fullname>-operator and carries another name label: the hook
// finds it by the account NETCONF_MIGRATOR_OPERATOR_ACCOUNT names, and
// without it falls back to the binary rather than wait on a guess.
func TestPreHookFindsAnOperatorInstalledUnderAnotherName(t *testing.T) {
	dropUnfixable(t)
	readyDeploymentIn(t, ownNamespace, "nm-operator", "operator", "nm-operator")
	dep := &appsv1.Deployment{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ownNamespace, Name: "nm-operator"}, dep); err != nil {
		t.Fatal(err)
	}
	dep.Labels["app.kubernetes.io/name"] = "nadfix"
	if err := env.Client.Update(context.Background(), dep); err != nil {
		t.Fatal(err)
	}
	readyDeployment(t, "webhook")
	out, err := upgradeHook(t, "NETCONF_MIGRATOR_STRICT=true", "NETCONF_MIGRATOR_WAIT=5").CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 2 || !strings.Contains(string(out), "is not in this image") {
		t.Errorf("the hook without the operator's account named: %v, want exit 2 naming the missing binary\n%s", err, out)
	}
	startOperator(t, operator.Options{Fix: detect.FixOff})
	out, err = upgradeHook(t, "NETCONF_MIGRATOR_OPERATOR_ACCOUNT=nm-operator", "NETCONF_MIGRATOR_WAIT=120").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "the operator runs NADMigration") || !strings.Contains(string(out), "Upgrading charts") {
		t.Errorf("the hook with the operator's account named: %v, want the operator's path and the upgrade going on\n%s", err, out)
	}
}
