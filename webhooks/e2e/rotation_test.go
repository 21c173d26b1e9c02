package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/test/testenv"
	"github.com/harvester/netconf-migrator/webhooks"
)

// caChain stands for what cert-manager's CA chain gives the webhook: one
// CA, and serving certificates it signs, renewed with new keys.
type caChain struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCAChain(t *testing.T) *caChain {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "netconf-migrator-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &caChain{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

// issue writes a new serving certificate, with a new key, for the local
// serving address into dir as the mounted Secret would hold it.
func (c *caChain) issue(t *testing.T, dir string, serial int64) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "netconf-migrator-webhook"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP(env.Webhook.LocalServingHost)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, c.cert, &key.PublicKey, c.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
	} {
		// Written next to the file and renamed over it, as the kubelet
		// swaps a mounted Secret's files at once.
		tmp := filepath.Join(dir, "."+name)
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
}

// startWithCA runs the webhook in external mode on a free port, serving a
// certificate (serial 2) that the returned chain signs, from certDir.
func startWithCA(t *testing.T, drain time.Duration) (w *ours, ca *caChain, certDir, addr string) {
	t.Helper()
	ca = newCAChain(t)
	certDir = t.TempDir()
	ca.issue(t, certDir, 2)
	port, err := testenv.FreePort(env.Webhook.LocalServingHost)
	if err != nil {
		t.Fatal(err)
	}
	w = startOurs(t, webhooks.ServerOptions{Host: env.Webhook.LocalServingHost, Port: port, CertDir: certDir,
		CertMode: webhooks.CertModeExternal, DrainPeriod: drain})
	return w, ca, certDir, net.JoinHostPort(env.Webhook.LocalServingHost, fmt.Sprint(port))
}

// registerCAChain puts in the shipped configuration's place one named name
// that calls the webhook at addr with the chain's CA as its caBundle, as
// cert-manager's CA injector would, until the test ends.
func registerCAChain(t *testing.T, name, addr string, ca *caChain) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	removeShipped(t)
	mwc := shippedMWC(t)
	mwc.Name = name
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.URL = ptr.To("https://" + addr + webhooks.Path)
		mwc.Webhooks[i].ClientConfig.CABundle = ca.pem
	}
	if err := env.Client.Create(context.Background(), mwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { deleteWebhookConfiguration(t, "MutatingWebhookConfiguration", name) })
	return mwc
}

// servedSerial is the serial number of the certificate addr serves, or 0
// when it does not answer.
func servedSerial(addr string) int64 {
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return 0
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

// TestRotationUnderTheSameCA serves the webhook in external mode from a
// certificate signed by a CA, as config/cert-manager's CA chain issues it,
// with the CA as the configuration's caBundle; then renews the serving
// certificate with a new key: the webhook serves the new one, admissions
// keep working, and the caBundle never changes.
func TestRotationUnderTheSameCA(t *testing.T) {
	ctx := context.Background()
	w, ca, certDir, addr := startWithCA(t, 0)
	defer w.stop(t)
	mwc := registerCAChain(t, "00-netconf-migrator-ca-chain", addr, ca)
	const ns = "ca-chain"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	rewritten := func(name string) bool {
		nad := newNAD(ns, name, nestedProbe)
		return env.Client.Create(ctx, nad, client.DryRunAll) == nil && nad.Annotations[nadv1.AnnotationNormalizedFrom] != ""
	}
	waitRewritten := func(what string) {
		t.Helper()
		if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
			return rewritten("probe"), nil
		}); err != nil {
			t.Fatalf("%s: the API server's calls do not reach the webhook: %v", what, err)
		}
	}
	served := func() int64 { return servedSerial(addr) }
	waitRewritten("before the renewal")

	ca.issue(t, certDir, 3)
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return served() == 3, nil
	}); err != nil {
		t.Fatalf("the webhook did not pick up the renewed certificate (serves serial %d)", served())
	}
	for i := range 20 {
		if !rewritten(fmt.Sprintf("after-%d", i)) {
			t.Fatalf("admission %d after the renewal failed", i)
		}
	}
	got := mwc.DeepCopy()
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(mwc), got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Webhooks[0].ClientConfig.CABundle, ca.pem) {
		t.Error("the caBundle changed")
	}
}
