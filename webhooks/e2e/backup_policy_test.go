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

// TestOnlyTheToolWritesItsBackups applies config/default's RBAC and its
// admission policy for the backup namespace for real, then writes through
// the API server as each identity. The webhook's ServiceAccount may create
// Secrets there (its certificate's: a create cannot be narrowed by name),
// yet it can plant neither a signing key, nor a backup, nor a report: a
// planted key would sign a backup, and a run would create the NAD it names.
// Its own certificate it still writes. The operator's ServiceAccount writes
// all three, and so does a cluster administrator (journals adopt).
func TestOnlyTheToolWritesItsBackups(t *testing.T) {
	ctx := context.Background()
	if err := env.CreateNamespace(ctx, ownNamespace, nil); err != nil {
		t.Fatal(err)
	}
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
	secret := func(name string, typ corev1.SecretType, labels map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ownNamespace, Name: name, Labels: labels}, Type: typ,
			Data: map[string][]byte{"key": []byte(strings.Repeat("k", 32))}}
	}
	planted := map[string]*corev1.Secret{
		"the signing key":                secret(replace.KeySecretName, replace.KeySecretType, nil),
		"the signing key's name, Opaque": secret(replace.KeySecretName, corev1.SecretTypeOpaque, nil),
		"a backup":                       secret(replace.JournalName("0000-planted"), replace.JournalSecretType, map[string]string{replace.LabelJournal: "true"}),
		"a look-alike backup, Opaque":    secret("planted", corev1.SecretTypeOpaque, map[string]string{replace.LabelJournal: "true"}),
		"a report":                       secret("nadmigration-planted-1", report.SecretType, nil),
	}
	// The API server loads a new policy within a moment.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		err := webhook.Create(ctx, planted["the signing key"].DeepCopy(), client.DryRunAll)
		return apierrors.IsForbidden(err) && strings.Contains(err.Error(), "only netconf-migrator"), nil
	}); err != nil {
		t.Fatalf("the backup policy never refused the webhook's ServiceAccount a signing key: %v", err)
	}
	for what, s := range planted {
		err := webhook.Create(ctx, s.DeepCopy())
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "only netconf-migrator") || !strings.Contains(err.Error(), "netconf-migrator-webhook may not") {
			t.Errorf("the webhook's ServiceAccount creating %s: %v, want the policy's refusal", what, err)
		}
		if err := operator.Create(ctx, s.DeepCopy(), client.DryRunAll); err != nil {
			t.Errorf("the operator's ServiceAccount creating %s: %v", what, err)
		}
		if err := env.Client.Create(ctx, s.DeepCopy(), client.DryRunAll); err != nil {
			t.Errorf("a cluster administrator creating %s: %v", what, err)
		}
	}
	// Its own certificate (and any Secret not the tool's) it still writes.
	cert := secret("netconf-migrator-webhook-cert", corev1.SecretTypeOpaque, nil)
	if err := webhook.Create(ctx, cert, client.DryRunAll); err != nil {
		t.Errorf("the webhook's ServiceAccount creating its certificate's Secret: %v", err)
	}
}
