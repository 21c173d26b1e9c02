package serving

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func writePair(t *testing.T, dir, cn string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kd, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func servedCN(t *testing.T, f *FileCertificate) string {
	t.Helper()
	c, err := f.GetCertificate(&tls.ClientHelloInfo{})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

// The metrics serve the certificate of the files, from the moment they
// appear, and the new one once it is rotated; a broken pair in between
// keeps the last good one.
func TestFileCertificateFollowsTheFiles(t *testing.T) {
	dir := t.TempDir()
	f := &FileCertificate{Dir: dir}
	if _, err := f.GetCertificate(&tls.ClientHelloInfo{}); err == nil {
		t.Fatal("no files yet, but a certificate was served")
	}
	writePair(t, dir, "first")
	if cn := servedCN(t, f); cn != "first" {
		t.Fatalf("served %q, want first", cn)
	}
	writePair(t, dir, "rotated")
	if cn := servedCN(t, f); cn != "rotated" {
		t.Fatalf("served %q after the rotation, want rotated", cn)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), []byte("half written"), 0o600); err != nil {
		t.Fatal(err)
	}
	if cn := servedCN(t, f); cn != "rotated" {
		t.Fatalf("served %q from a broken pair, want the last good one", cn)
	}
}
