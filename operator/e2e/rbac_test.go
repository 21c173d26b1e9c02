package e2e

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// The operator as its own ServiceAccount with config/operator's roles
// only: leader election, a NADMigration that must replace a NAD beside
// Harvester v1.6 (Lease, signing key, signed backup, delete and create),
// its report Secret, VM readiness and the legacy-NAD watch all work, and
// it still cannot read a Secret. Beside the webhook, where versions up to
// 0.2 kept backups, it lists no Secret (the webhook's TLS key is one): a
// backup a 0.2 run left there is out of its sight, so it reports that one
// may wait (the gauge netconf_migrator_earlier_backups_unseen) and touches
// nothing.
func TestOperatorRBAC(t *testing.T) {
	ctx := context.Background()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// With the backup namespace's admission policy: the operator writes
	// its backups, key and reports under it.
	for _, f := range []string{"config/operator/service_account.yaml", "config/operator/rbac.yaml", "config/policy/policy.yaml"} {
		if _, stderr, err := env.Kubectl(ctx, nil, "apply", "--server-side", "-f", filepath.Join(root, f)); err != nil {
			t.Fatalf("kubectl apply %s: %v\n%s", f, err, stderr)
		}
	}
	t.Cleanup(func() {
		_, _, _ = env.Kubectl(ctx, nil, "delete", "-f", filepath.Join(root, "config/policy/policy.yaml"))
	})
	asSA := rest.CopyConfig(env.Config)
	asSA.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:netconf-migrator-system:netconf-migrator-operator",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:netconf-migrator-system", "system:authenticated"}}

	h, ns, before := vlanNADBesideV16(t, "operator-rbac")
	harvester.Create(t, env.Client, harvester.NewVM(ns, "stopped", "other"))

	// A 0.2 run left its key (under the name 0.2 gave it) and a backup
	// beside the webhook.
	earlierKey := []byte(strings.Repeat("0.2-key-", 4))
	if err := env.Client.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ownNamespace, Name: replace.EarlierKeySecretName},
		Type: replace.EarlierKeySecretType, Data: map[string][]byte{"key": earlierKey}}); err != nil {
		t.Fatal(err)
	}
	gone := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"namespace": ns, "name": "gone", "uid": "0000-earlier-gone"}, "spec": map[string]any{"config": "{}"}}}
	earlier := replace.SecretBackups{Client: env.Client, Namespace: ownNamespace, Key: earlierKey}
	if err := earlier.Save(ctx, &replace.Backup{Run: "v0.2-run", Mode: "migrate", Step: replace.StepDeleted, Original: gone}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace(ownNamespace), client.MatchingLabels{replace.LabelBackup: "true"})
		_ = env.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ownNamespace, Name: replace.EarlierKeySecretName}})
	})

	startOperatorAs(t, asSA, operator.Options{Fix: detect.FixOff})
	waitFor(t, "the gauge of backups a 0.2 run may have left beside the webhook", func() (bool, error) {
		return gauge(t, "netconf_migrator_earlier_backups_unseen", nil) == 1, nil
	})
	create(t, newMigration("rbac", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}}))
	nm := waitStatus(t, "rbac", status.CurrentStatus)
	if f, after := form(t, ns, "vlan100"); f != netconf.FormFlat || after.UID == before.UID || nm.Status.Changed != 1 || nm.Status.Report == nil {
		t.Errorf("as the ServiceAccount: form %s, uid %s -> %s, status %+v", f, before.UID, after.UID, nm.Status)
	}
	h.Pause(func() {
		create(t, newNAD(ns, "later", `{"NetConf":{"cniVersion":"0.3.1","name":"%s","type":"bridge","ipam":{}},"bridge":"mgmt-br","vlan":100}`))
	})
	waitFor(t, "the LegacyNetConf Event, written as the ServiceAccount", func() (bool, error) {
		return len(events(t, ns, "later", detect.ReasonLegacy)) == 1, nil
	})
	c, err := client.New(asSA, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	err = c.Get(ctx, client.ObjectKey{Namespace: backupNamespace, Name: replace.KeySecretName}, &corev1.Secret{})
	if err != nil {
		t.Errorf("the operator cannot read the signing key it needs: %v", err)
	}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ownNamespace, Name: replace.BackupName("0000-earlier-gone")}, &corev1.Secret{}); err != nil {
		t.Errorf("the backup a 0.2 run left beside the webhook: %v, want it left for an administrator", err)
	}
	// Outside the backup namespace it reads no Secret.
	other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "not-the-tools"}}
	create(t, other)
	err = c.Get(ctx, client.ObjectKeyFromObject(other), &corev1.Secret{})
	if !apierrors.IsForbidden(err) {
		t.Errorf("the operator may read a Secret outside its namespace: %v", err)
	}
}

// TestTheOperatorUpgradesItsCRD: Helm installs a chart's crds/ once and
// never upgrades them. The operator, as its own ServiceAccount with the
// shipped roles, brings a served CRD of an earlier version (here without
// the Reason printer column) to its own, NADMigrations kept; a CRD a newer
// version applied it leaves alone.
func TestTheOperatorUpgradesItsCRD(t *testing.T) {
	ctx := context.Background()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config/operator/service_account.yaml", "config/operator/rbac.yaml"} {
		if _, stderr, err := env.Kubectl(ctx, nil, "apply", "--server-side", "-f", filepath.Join(root, f)); err != nil {
			t.Fatalf("kubectl apply %s: %v\n%s", f, err, stderr)
		}
	}
	asSA := rest.CopyConfig(env.Config)
	asSA.Impersonate = rest.ImpersonationConfig{UserName: "system:serviceaccount:netconf-migrator-system:netconf-migrator-operator",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:netconf-migrator-system", "system:authenticated"}}
	name := "nadmigrations." + v1alpha1.GroupVersion.Group
	columns := func() (int, string) {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			t.Fatal(err)
		}
		return len(crd.Spec.Versions[0].AdditionalPrinterColumns), crd.Annotations[operator.AnnotationCRDVersion]
	}
	want, _ := columns()
	// As an earlier chart left it: one column less, an earlier version.
	setServed := func(drop int, version string) {
		t.Helper()
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			t.Fatal(err)
		}
		cols := crd.Spec.Versions[0].AdditionalPrinterColumns
		crd.Spec.Versions[0].AdditionalPrinterColumns = cols[:len(cols)-drop]
		if crd.Annotations == nil {
			crd.Annotations = map[string]string{}
		}
		crd.Annotations[operator.AnnotationCRDVersion] = version
		if err := env.Client.Update(ctx, crd); err != nil {
			t.Fatal(err)
		}
	}
	create(t, newMigration("crd-upgrade-kept", v1alpha1.NADMigrationSpec{Namespaces: []string{"no-such-namespace"}}))

	// Through the wiring the binary uses (NewManager, Setup): a client of
	// the test's own proved nothing of the operator's scheme, which had no
	// CRD type, so every shipped operator failed to apply its CRD.
	upgrade := func(version string) {
		t.Helper()
		r := startOperatorAs(t, asSA, operator.Options{UpgradeCRD: true, Version: version})
		waitFor(t, "the operator of "+version+" to apply or leave its CRD", func() (bool, error) {
			if r.logged("The NADMigration CRD was not upgraded") {
				return false, fmt.Errorf("the operator of %s could not apply its CRD", version)
			}
			return r.logged("Applied the NADMigration CRD of this version") || r.logged("Leaving the NADMigration CRD as a newer version applied it"), nil
		})
		r.stop(t)
	}
	setServed(1, "v0.9.0")
	upgrade("v1.0.0")
	if n, v := columns(); n != want || v != "v1.0.0" {
		t.Errorf("after the operator of v1.0.0 started: %d printer columns (want %d), applied by %q", n, want, v)
	}
	setServed(1, "v2.0.0")
	upgrade("v1.0.0")
	if n, v := columns(); n != want-1 || v != "v2.0.0" {
		t.Errorf("a CRD v2.0.0 applied, after the operator of v1.0.0 started: %d printer columns (want %d), applied by %q", n, want-1, v)
	}
	// Put the CRD of this build back for the rest of the suite.
	upgrade("v3.0.0")
	if n, _ := columns(); n != want {
		t.Errorf("the CRD of this build was not put back: %d printer columns", n)
	}
	get(t, "crd-upgrade-kept")
}
