package e2e

import (
	"bytes"
	"context"
	"strconv"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/internal/testenv"
	"github.com/harvester/netconf-migrator/webhooks"
)

// TestSelfSignedCertificates runs the webhook with --cert-mode=self-signed:
// nothing but the process makes the certificates the API server trusts. It
// serves the webhook's own namespace, which the shipped configuration
// excludes, so the two never both answer for one NAD.
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
	mwc := shippedMWC(t)
	mwc.Name = "netconf-migrator-self-signed"
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
	secretKey := client.ObjectKey{Namespace: ownNamespace, Name: "netconf-migrator-webhook-cert"}
	w := startOurs(t, webhooks.ServerOptions{
		Host: host, Port: port, CertDir: t.TempDir(), CertMode: webhooks.CertModeSelfSigned,
		SecretName: secretKey.Name, Namespace: ownNamespace, ServiceName: "netconf-migrator-webhook",
		WebhookConfigName: mwc.Name, ExtraDNSNames: []string{"localhost"},
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
