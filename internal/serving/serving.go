// Package serving holds what the webhook's and the operator's processes
// serve the same way: the TLS floor, and metrics over TLS to clients the
// API server authenticates and authorizes.
package serving

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// TLSOptions applies the project's TLS floor: 1.2 at least, and HTTP/2 off
// unless asked for (HTTP/2 rapid-reset exposure, CVE-2023-44487).
func TLSOptions(enableHTTP2 bool) func(*tls.Config) {
	return func(c *tls.Config) {
		c.MinVersion = tls.VersionTLS12
		if !enableHTTP2 {
			c.NextProtos = []string{"http/1.1"}
		}
	}
}

// MetricsOptions serves the metrics on bindAddress ("0": none). Secure
// serves them over TLS (controller-runtime's secure serving) to clients
// the API server authenticates and authorizes (TokenReview, then a
// SubjectAccessReview for GET on the path); certDir, when set, holds the
// tls.crt and tls.key it serves (else controller-runtime makes a
// self-signed one in memory).
func MetricsOptions(bindAddress string, secure, enableHTTP2 bool, certDir string) metricsserver.Options {
	o := metricsserver.Options{BindAddress: bindAddress}
	if secure {
		o.SecureServing = true
		o.FilterProvider = metricsAuth
		o.TLSOpts = []func(*tls.Config){TLSOptions(enableHTTP2)}
		if certDir != "" {
			files := &FileCertificate{Dir: certDir}
			o.TLSOpts = append(o.TLSOpts, func(c *tls.Config) { c.GetCertificate = files.GetCertificate })
		}
	}
	return o
}

// FileCertificate serves the key pair in Dir (tls.crt, tls.key), read at
// each handshake and parsed again when it changed: the files may appear
// after the server starts (the webhook's self-signed mode writes them once
// the rotator issued them, a mounted Secret fills in later) and change on
// rotation. Until they exist, handshakes fail; a pair caught between its
// two writes keeps the last good one.
type FileCertificate struct {
	Dir string

	mu   sync.Mutex
	raw  []byte // tls.crt and tls.key as last parsed
	cert *tls.Certificate
}

// GetCertificate is for tls.Config.GetCertificate.
func (f *FileCertificate) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	crt, err := os.ReadFile(filepath.Join(f.Dir, "tls.crt"))
	if err != nil {
		return f.last(fmt.Errorf("reading the serving certificate: %w", err))
	}
	key, err := os.ReadFile(filepath.Join(f.Dir, "tls.key"))
	if err != nil {
		return f.last(fmt.Errorf("reading the serving key: %w", err))
	}
	raw := append(append([]byte{}, crt...), key...)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cert != nil && bytes.Equal(raw, f.raw) {
		return f.cert, nil
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		if f.cert != nil {
			return f.cert, nil
		}
		return nil, fmt.Errorf("loading the serving key pair from %s: %w", f.Dir, err)
	}
	f.raw, f.cert = raw, &pair
	return f.cert, nil
}

func (f *FileCertificate) last(err error) (*tls.Certificate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cert != nil {
		return f.cert, nil
	}
	return nil, err
}
