package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// TestOnlyTheToolWritesItsBackups applies config/default's namespaces, RBAC
// and admission policy for real, then acts through the API server as each
// identity:
//   - In the backup namespace (netconf-migrator-backups) the webhook's
//     ServiceAccount may do nothing with Secrets: RBAC refuses it before
//     any policy. The operator's writes a signing key, a backup and a
//     report; so does a cluster administrator (backups adopt).
//   - In the webhook's own namespace, where versions up to 0.2 kept backups
//     (and runs still move them from), the webhook may create Secrets (its
//     certificate's: a create cannot be narrowed by name), yet the policy
//     keeps it from planting a key, a backup or a report there: a planted
//     key would sign a backup that the next move carries into the backup
//     namespace.
//   - Finding 10: the operator's Secret rights no longer reach the
//     webhook's TLS key: in the webhook's namespace it lists no Secret and
//     reads none but the earlier signing key, by name.
func TestOnlyTheToolWritesItsBackups(t *testing.T) {
	ctx := context.Background()
	applyShippedRBAC(t)
	var policy []string
	for _, doc := range strings.Split(string(kustomize(t, "default")), "\n---\n") {
		if strings.Contains(doc, "kind: ValidatingAdmissionPolicy") {
			policy = append(policy, doc)
		}
	}
	if len(policy) != 2 {
		t.Fatalf("config/default has %d policy objects, want the policy and its binding", len(policy))
	}
	manifest := []byte(strings.Join(policy, "\n---\n"))
	if out, errOut, err := env.Kubectl(ctx, manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply of the backup policy: %v\n%s%s", err, out, errOut)
	}
	t.Cleanup(func() { _, _, _ = env.Kubectl(ctx, manifest, "delete", "-f", "-") })

	as := func(sa string) client.Client {
		cfg := rest.CopyConfig(env.Config)
		cfg.Impersonate = rest.ImpersonationConfig{UserName: serviceaccount.MakeUsername(ownNamespace, sa), Groups: serviceaccount.MakeGroupNames(ownNamespace)}
		c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	webhook, operator := as("netconf-migrator-webhook"), as("netconf-migrator-operator")
	secret := func(ns, name string, typ corev1.SecretType, labels map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels}, Type: typ,
			Data: map[string][]byte{"key": []byte(strings.Repeat("k", 32))}}
	}
	planted := func(ns string) map[string]*corev1.Secret {
		return map[string]*corev1.Secret{
			"the signing key":                secret(ns, replace.KeySecretName, replace.KeySecretType, nil),
			"the signing key's name, Opaque": secret(ns, replace.KeySecretName, corev1.SecretTypeOpaque, nil),
			"the key's earlier name":         secret(ns, replace.EarlierKeySecretName, replace.EarlierKeySecretType, nil),
			"the key's earlier name, Opaque": secret(ns, replace.EarlierKeySecretName, corev1.SecretTypeOpaque, nil),
			"a backup":                       secret(ns, replace.BackupName("0000-planted"), replace.BackupSecretType, map[string]string{replace.LabelBackup: "true"}),
			"a look-alike backup, Opaque":    secret(ns, "planted", corev1.SecretTypeOpaque, map[string]string{replace.LabelBackup: "true"}),
			"a report":                       secret(ns, "nadmigration-planted-1", report.SecretType, nil),
		}
	}
	// The API server loads a new policy within a moment.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		err := webhook.Create(ctx, planted(ownNamespace)["the signing key"].DeepCopy(), client.DryRunAll)
		return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "only netconf-migrator"), nil
	}); err != nil {
		t.Fatalf("the backup policy never refused the webhook's ServiceAccount a signing key: %v", err)
	}

	// The backup namespace: the webhook has no rights at all.
	for what, s := range planted(backupNamespace) {
		err := webhook.Create(ctx, s.DeepCopy())
		if !apierrors.IsForbidden(err) || strings.Contains(err.Error(), "only netconf-migrator") {
			t.Errorf("the webhook's ServiceAccount creating %s in %s: %v, want RBAC's refusal", what, backupNamespace, err)
		}
		if err := operator.Create(ctx, s.DeepCopy(), client.DryRunAll); err != nil {
			t.Errorf("the operator's ServiceAccount creating %s in %s: %v", what, backupNamespace, err)
		}
		if err := env.Client.Create(ctx, s.DeepCopy(), client.DryRunAll); err != nil {
			t.Errorf("a cluster administrator creating %s in %s: %v", what, backupNamespace, err)
		}
	}
	if err := webhook.List(ctx, &corev1.SecretList{}, client.InNamespace(backupNamespace)); !apierrors.IsForbidden(err) {
		t.Errorf("the webhook's ServiceAccount listing the Secrets of %s: %v, want Forbidden", backupNamespace, err)
	}
	for _, name := range []string{replace.KeySecretName, replace.EarlierKeySecretName} {
		if err := webhook.Get(ctx, client.ObjectKey{Namespace: backupNamespace, Name: name}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
			t.Errorf("the webhook's ServiceAccount reading the signing key %s: %v, want Forbidden", name, err)
		}
	}

	// The webhook's own namespace: its certificate yes, the tool's no.
	for what, s := range planted(ownNamespace) {
		err := webhook.Create(ctx, s.DeepCopy())
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "only netconf-migrator") || !strings.Contains(err.Error(), "netconf-migrator-webhook may not") {
			t.Errorf("the webhook's ServiceAccount creating %s in %s: %v, want the policy's refusal", what, ownNamespace, err)
		}
	}
	cert := secret(ownNamespace, "netconf-migrator-webhook-cert", corev1.SecretTypeOpaque, nil)
	if err := webhook.Create(ctx, cert.DeepCopy(), client.DryRunAll); err != nil {
		t.Errorf("the webhook's ServiceAccount creating its certificate's Secret: %v", err)
	}

	// Finding 10: the operator reads no Secret beside the webhook but the
	// earlier signing key, by name.
	if err := env.Client.Create(ctx, cert); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	// 0.2 named it netconf-migrator-journal-key.
	earlierKey := planted(ownNamespace)["the key's earlier name"]
	if err := env.Client.Create(ctx, earlierKey); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, cert); _ = env.Client.Delete(ctx, earlierKey) })
	if err := operator.Get(ctx, client.ObjectKeyFromObject(cert), &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("the operator's ServiceAccount reading the webhook's certificate Secret: %v, want Forbidden", err)
	}
	if err := operator.List(ctx, &corev1.SecretList{}, client.InNamespace(ownNamespace)); !apierrors.IsForbidden(err) {
		t.Errorf("the operator's ServiceAccount listing the Secrets beside the webhook: %v, want Forbidden", err)
	}
	if err := operator.Get(ctx, client.ObjectKeyFromObject(earlierKey), &corev1.Secret{}); err != nil {
		t.Errorf("the operator's ServiceAccount reading the earlier signing key by name: %v", err)
	}
	if err := operator.Create(ctx, planted(ownNamespace)["a backup"].DeepCopy(), client.DryRunAll); !apierrors.IsForbidden(err) {
		t.Errorf("the operator's ServiceAccount creating a backup beside the webhook: %v, want Forbidden", err)
	}
}
