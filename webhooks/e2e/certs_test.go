package e2e

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apiserver/pkg/authentication/serviceaccount"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/test/testenv"
	"github.com/harvester/netconf-migrator/webhooks"
)

// TestSelfSignedCertificates runs the webhook with --cert-mode=self-signed
// as config/default deploys it: the Deployment's flags, its ServiceAccount
// and nothing but the shipped RBAC (through impersonation). Nothing but the
// process makes the certificates the API server trusts. It serves the
// webhook's own namespace, which the shipped configuration excludes.
func TestSelfSignedCertificates(t *testing.T) {
	ctx := context.Background()
	if err := env.CreateNamespace(ctx, ownNamespace, nil); err != nil {
		t.Fatal(err)
	}
	host := env.Webhook.LocalServingHost
	port, err := testenv.FreePort(host)
	if err != nil {
		t.Fatal(err)
	}
	dep, sa := applyShippedRBAC(t)
	flags := deploymentFlags(t, dep)
	if flags["cert-mode"] != webhooks.CertModeSelfSigned {
		t.Fatalf("the Deployment runs --cert-mode=%s", flags["cert-mode"])
	}
	removeShipped(t) // its name is the one the Deployment's flags give
	mwc := shippedMWC(t)
	if mwc.Name != flags["webhook-config-name"] {
		t.Fatalf("the Deployment injects the caBundle into %q, the shipped configuration is %q", flags["webhook-config-name"], mwc.Name)
	}
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.URL = ptr.To("https://localhost:" + itoa(port) + webhooks.Path)
		mwc.Webhooks[i].ClientConfig.CABundle = nil // the process injects it
		mwc.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ownNamespace}}
	}
	if err := env.Client.Create(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := env.Client.Delete(ctx, mwc); err != nil {
			t.Error(err)
		}
	}()
	secretKey := client.ObjectKey{Namespace: ownNamespace, Name: flags["secret-name"]}
	asSA := rest.CopyConfig(env.Config)
	asSA.Impersonate = rest.ImpersonationConfig{
		UserName: serviceaccount.MakeUsername(ownNamespace, sa),
		Groups:   serviceaccount.MakeGroupNames(ownNamespace),
	}
	w := startOursAs(t, asSA, webhooks.ServerOptions{
		Host: host, Port: port, CertDir: t.TempDir(), CertMode: webhooks.CertModeSelfSigned,
		SecretName: secretKey.Name, Namespace: ownNamespace, ServiceName: flags["service-name"],
		WebhookConfigName: flags["webhook-config-name"], ExtraDNSNames: []string{"localhost"},
		CertCheckInterval: 200 * time.Millisecond,
	})
	defer w.stop(t)

	// waitServed waits until the Secret holds a CA other than old, the
	// caBundle is that CA, and the API server gets a patch through TLS.
	waitServed := func(t *testing.T, old []byte) []byte {
		t.Helper()
		var ca []byte
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
			s := &corev1.Secret{}
			if err := env.Client.Get(ctx, secretKey, s); err != nil {
				return false, client.IgnoreNotFound(err)
			}
			ca = s.Data["ca.crt"]
			if len(ca) == 0 || len(s.Data["tls.crt"]) == 0 || len(s.Data["tls.key"]) == 0 || bytes.Equal(ca, old) {
				return false, nil
			}
			got := &admissionregistrationv1.MutatingWebhookConfiguration{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(mwc), got); err != nil {
				return false, err
			}
			if !bytes.Equal(got.Webhooks[0].ClientConfig.CABundle, ca) {
				return false, nil
			}
			nad := newNAD(ownNamespace, "", nestedProbe)
			nad.GenerateName = "self-signed-"
			if err := env.Client.Create(ctx, nad, client.DryRunAll); err != nil {
				return false, err
			}
			return nad.Annotations[webhooks.AnnotationNormalizedFrom] == "nested", nil
		})
		if err != nil {
			t.Fatalf("waiting for a self-signed certificate the API server trusts: %v", err)
		}
		return ca
	}

	var first []byte
	t.Run("certificates are issued and trusted", func(t *testing.T) {
		first = waitServed(t, nil)
	})
	// Served, as the ServiceAccount with the shipped RBAC: its informers
	// listed and watched its Secret and webhook configuration by name. It
	// reads no other Secret of its namespace, and cannot list them.
	t.Run("it reads no Secret but its own", func(t *testing.T) {
		c, err := client.New(asSA, client.Options{Scheme: env.Scheme})
		if err != nil {
			t.Fatal(err)
		}
		other := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ownNamespace, Name: "not-the-webhooks"}}
		if err := env.Client.Create(ctx, other); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatal(err)
		}
		if err := c.Get(ctx, client.ObjectKeyFromObject(other), &corev1.Secret{}); !apierrors.IsForbidden(err) {
			t.Errorf("get of another Secret in its namespace: %v, want Forbidden", err)
		}
		if err := c.List(ctx, &corev1.SecretList{}, client.InNamespace(ownNamespace)); !apierrors.IsForbidden(err) {
			t.Errorf("list of its namespace's Secrets: %v, want Forbidden", err)
		}
		own := &corev1.SecretList{}
		if err := c.List(ctx, own, client.InNamespace(ownNamespace), client.MatchingFields{"metadata.name": secretKey.Name}); err != nil || len(own.Items) != 1 {
			t.Errorf("list of its own Secret by name: %d items, %v", len(own.Items), err)
		}
		if err := c.List(ctx, &admissionregistrationv1.MutatingWebhookConfigurationList{}); !apierrors.IsForbidden(err) {
			t.Errorf("list of every MutatingWebhookConfiguration: %v, want Forbidden", err)
		}
	})
	t.Run("a deleted Secret is replaced and admissions go on", func(t *testing.T) {
		if err := env.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: secretKey.Namespace, Name: secretKey.Name}}); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		waitServed(t, first)
		// A real create too, not only dry-run.
		nad := newNAD(ownNamespace, "after-rotation", nestedProbe)
		if err := env.Client.Create(ctx, nad); err != nil {
			t.Fatal(err)
		}
		if nad.Annotations[webhooks.AnnotationNormalizedFrom] != "nested" {
			t.Errorf("the create after the rotation was not normalized: %s", nad.Spec.Config)
		}
	})
}

func itoa(i int) string { return strconv.Itoa(i) }

// applyShippedRBAC creates, for real, the ServiceAccount and RBAC objects of
// config/default, and returns its Deployment and the ServiceAccount's name.
func applyShippedRBAC(t *testing.T) (appsv1.Deployment, string) {
	t.Helper()
	// The Roles of the backup namespace go there.
	if err := env.CreateNamespace(context.Background(), backupNamespace, nil); err != nil {
		t.Fatal(err)
	}
	dep := deployments(t, "default")["netconf-migrator-webhook"]
	var rbac []string
	for _, doc := range strings.Split(string(kustomize(t, "default")), "\n---\n") {
		if strings.Contains(doc, "kind: ServiceAccount\n") || strings.Contains(doc, "apiVersion: rbac.authorization.k8s.io/v1\n") {
			rbac = append(rbac, doc)
		}
	}
	if dep.Name == "" || len(rbac) < 5 {
		t.Fatalf("config/default has no Deployment or too little RBAC (%d objects)", len(rbac))
	}
	out, errOut, err := env.Kubectl(context.Background(), []byte(strings.Join(rbac, "\n---\n")), "apply", "-f", "-")
	if err != nil {
		t.Fatalf("kubectl apply of the shipped RBAC: %v\n%s%s", err, out, errOut)
	}
	return dep, dep.Spec.Template.Spec.ServiceAccountName
}

// deploymentFlags returns the --name=value flags of the first container.
func deploymentFlags(t *testing.T, dep appsv1.Deployment) map[string]string {
	t.Helper()
	flags := map[string]string{}
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		if k, v, ok := strings.Cut(strings.TrimPrefix(a, "--"), "="); ok {
			flags[k] = v
		}
	}
	return flags
}
