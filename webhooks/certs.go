package webhooks

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/harvester/netconf-migrator/internal/logging"
)

// certKeeper completes cert-controller for self-signed mode:
//   - it recreates the Secret when it is deleted, so the rotator (which
//     watches it) issues new certificates instead of failing forever;
//   - it writes the serving certificate from the Secret into the cert dir,
//     which the webhook server watches. Reading the Secret through the API
//     makes a rotation take effect at once, where a kubelet-synced volume
//     lags by up to a minute or more.
type certKeeper struct {
	client   client.Client
	key      types.NamespacedName
	dir      string
	interval time.Duration
	log      logr.Logger

	written []byte // the certificate last written, to skip rewriting it
}

const (
	certFile = "tls.crt"
	keyFile  = "tls.key"
)

// NeedLeaderElection: every replica serves, so every replica keeps its files.
func (k *certKeeper) NeedLeaderElection() bool { return false }

func (k *certKeeper) Start(ctx context.Context) error {
	t := time.NewTicker(k.interval)
	defer t.Stop()
	for {
		if err := k.sync(ctx); err != nil {
			k.log.Error(err, "Keeping the webhook certificate", logging.KeyObject, k.key.String())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (k *certKeeper) ensureSecret(ctx context.Context) error {
	s := &corev1.Secret{}
	err := k.client.Get(ctx, k.key, s)
	if err == nil || !apierrors.IsNotFound(err) {
		return client.IgnoreNotFound(err)
	}
	k.log.Info("Creating the webhook certificate Secret", logging.KeyObject, k.key.String())
	s = &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: k.key.Name, Namespace: k.key.Namespace,
		Labels: map[string]string{"app.kubernetes.io/name": "netconf-migrator"}}}
	if err := k.client.Create(ctx, s); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating Secret %s: %w", k.key, err)
	}
	return nil
}

func (k *certKeeper) sync(ctx context.Context) error {
	if err := k.ensureSecret(ctx); err != nil {
		return err
	}
	s := &corev1.Secret{}
	if err := k.client.Get(ctx, k.key, s); err != nil {
		return client.IgnoreNotFound(err)
	}
	cert, key := s.Data[certFile], s.Data[keyFile]
	if len(cert) == 0 || len(key) == 0 || bytes.Equal(cert, k.written) {
		return nil
	}
	if err := os.MkdirAll(k.dir, 0o700); err != nil {
		return fmt.Errorf("creating the cert dir: %w", err)
	}
	// Key first: the server reloads when the certificate changes.
	for _, f := range []struct {
		name string
		data []byte
	}{{keyFile, key}, {certFile, cert}} {
		if err := writeAtomic(filepath.Join(k.dir, f.name), f.data); err != nil {
			return err
		}
	}
	k.written = cert
	k.log.Info("Wrote the webhook serving certificate", logging.KeyObject, k.key.String(), "dir", k.dir)
	return nil
}

func writeAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// onlyOwnObjects hands cert-controller a manager whose config lists and
// watches only the webhook's own Secret and MutatingWebhookConfiguration.
// cert-controller (v0.16) builds its informers' cache from the manager's
// config, for every Secret of the namespace and every webhook
// configuration, and takes no selector; with the name as a field
// selector on those requests, the API server authorizes them against
// resourceNames, so the Role holds the webhook to its own certificate
// Secret. Its writes go through the manager's client, by name.
func onlyOwnObjects(mgr manager.Manager, secret types.NamespacedName, webhookConfig string) manager.Manager {
	cfg := rest.CopyConfig(mgr.GetConfig())
	cfg.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return &nameSelector{next: rt, names: map[string]string{
			"/api/v1/namespaces/" + secret.Namespace + "/secrets":                 secret.Name,
			"/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations": webhookConfig,
		}}
	})
	return &narrowedManager{Manager: mgr, cfg: cfg}
}

type narrowedManager struct {
	manager.Manager
	cfg *rest.Config
}

func (m *narrowedManager) GetConfig() *rest.Config { return m.cfg }

// nameSelector adds fieldSelector=metadata.name=<name> to the list and
// watch requests of the collections it knows (a GET on the collection's
// path, under any prefix a proxy adds).
type nameSelector struct {
	next  http.RoundTripper
	names map[string]string // collection path: the one name listed
}

func (n *nameSelector) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodGet {
		for collection, name := range n.names {
			if !strings.HasSuffix(r.URL.Path, collection) {
				continue
			}
			q := r.URL.Query()
			if q.Get("fieldSelector") == "" {
				r = r.Clone(r.Context())
				q.Set("fieldSelector", "metadata.name="+name)
				r.URL.RawQuery = q.Encode()
			}
			break
		}
	}
	return n.next.RoundTrip(r)
}
