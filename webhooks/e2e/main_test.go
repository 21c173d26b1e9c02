// Package e2e proves the webhook against a real etcd and kube-apiserver: the
// API server calls it over TLS through the MutatingWebhookConfiguration
// shipped in config/webhook, beside stand-ins for each Harvester release's
// network webhooks (test/harvester).
package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
	"github.com/harvester/netconf-migrator/webhooks"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	// envtest only makes the serving certificate and picks the port here;
	// the suites register the shipped configuration themselves so they can
	// remove it for the runs without our webhook.
	os.Exit(testenv.Main(m, testenv.Options{Webhooks: &envtest.WebhookInstallOptions{}, CRDs: harvester.CRDs(), Namespaces: []string{ownNamespace, backupNamespace}}, &env))
}

const (
	// ownNamespace is where config/ installs the webhook; the shipped
	// configuration never intercepts it.
	ownNamespace = "netconf-migrator-system"
	// backupNamespace is where config/ keeps the tool's backups, their key
	// and its reports, and nothing else: the webhook has no rights there.
	backupNamespace = "netconf-migrator-backups"
	// probeNamespace holds the dry-run creates that tell when the API server
	// has picked up a change of webhook configuration.
	probeNamespace = "webhook-probe"
	nestedProbe    = `{"cniVersion":"0.3.1","type":"bridge","NetConf":{"bridge":"probe-br"}}`
)

// shippedMWC reads config/webhook/manifests.yaml and points it at the local
// server with envtest's CA, the way a Service and a caBundle would.
func shippedMWC(t testing.TB) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	mwc, err := testenv.ShippedWebhookConfiguration("https://"+net.JoinHostPort(env.Webhook.LocalServingHost, fmt.Sprint(env.Webhook.LocalServingPort)), env.Webhook.LocalServingCAData)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range mwc.Webhooks {
		if !strings.HasSuffix(*w.ClientConfig.URL, webhooks.Path) {
			t.Fatalf("webhook %s does not call %s through a Service", w.Name, webhooks.Path)
		}
	}
	return mwc
}

// installShipped registers the shipped configuration and waits until the
// API server calls it.
func installShipped(t testing.TB) {
	t.Helper()
	ctx := context.Background()
	mwc := shippedMWC(t)
	if err := env.Client.Create(ctx, mwc); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	waitWebhook(t, true)
}

// removeShipped deletes the shipped configuration and waits until the API
// server stops calling it.
func removeShipped(t testing.TB) {
	t.Helper()
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: shippedMWC(t).Name}}
	if err := env.Client.Delete(context.Background(), mwc); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	waitWebhook(t, false)
}

// waitWebhook polls with server-side dry-run creates until the API server
// does (or no longer does) rewrite a nested config: webhook configurations
// reach the admission chain through an informer, a moment after the write.
func waitWebhook(t testing.TB, active bool) {
	t.Helper()
	ctx := context.Background()
	if err := env.CreateNamespace(ctx, probeNamespace, nil); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		nad := newNAD(probeNamespace, "", nestedProbe)
		nad.GenerateName = "probe-"
		if err := env.Client.Create(ctx, nad, client.DryRunAll); err != nil {
			return false, err
		}
		return (nad.Annotations[webhooks.AnnotationNormalizedFrom] != "") == active, nil
	})
	if err != nil {
		t.Fatalf("waiting for the webhook to be active=%v: %v", active, err)
	}
}

// ours is a running webhook process (the manager NewManager builds).
type ours struct {
	cancel  context.CancelFunc
	done    chan error
	logs    *syncBuffer
	probes  string // host:port of /healthz and /readyz
	metrics string // host:port of /metrics
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startOurs runs the webhook on envtest's port with envtest's certificate
// (--cert-mode=external) and waits until /readyz answers.
func startOurs(t testing.TB, o webhooks.ServerOptions) *ours {
	t.Helper()
	return startOursAs(t, env.Config, o)
}

// startOursAs is startOurs talking to the API server with cfg.
func startOursAs(t testing.TB, cfg *rest.Config, o webhooks.ServerOptions) *ours {
	t.Helper()
	host := env.Webhook.LocalServingHost
	probePort, err := testenv.FreePort(host)
	if err != nil {
		t.Fatal(err)
	}
	metricsPort, err := testenv.FreePort(host)
	if err != nil {
		t.Fatal(err)
	}
	if o.Port == 0 {
		o.Host, o.Port, o.CertDir, o.CertMode = host, env.Webhook.LocalServingPort, env.Webhook.LocalServingCertDir, webhooks.CertModeExternal
	}
	w := &ours{done: make(chan error, 1), logs: &syncBuffer{},
		probes: net.JoinHostPort(host, fmt.Sprint(probePort)), metrics: net.JoinHostPort(host, fmt.Sprint(metricsPort))}
	o.HealthProbeBindAddress, o.MetricsBindAddress = w.probes, w.metrics
	log, err := logging.New(io.MultiWriter(w.logs, testWriter{}), logging.Options{Format: "json", Verbosity: logging.Info})
	if err != nil {
		t.Fatal(err)
	}
	setGlobalLogger.Do(func() {
		// controller-runtime and cert-controller log through the global
		// logger; shown with -v.
		l, _ := logging.New(testWriter{}, logging.Options{Format: "json"})
		ctrl.SetLogger(l)
	})
	mgr, err := webhooks.NewManager(cfg, o, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w.cancel = cancel
	go func() { w.done <- mgr.Start(ctx) }()
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		select {
		case err := <-w.done:
			return false, fmt.Errorf("the webhook stopped: %w", err)
		default:
		}
		resp, err := http.Get("http://" + w.probes + "/readyz")
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	if err != nil {
		cancel()
		t.Fatalf("waiting for /readyz: %v", err)
	}
	return w
}

func (w *ours) stop(t testing.TB) {
	t.Helper()
	w.cancel()
	if err := <-w.done; err != nil {
		t.Errorf("the webhook stopped with an error: %v", err)
	}
}

var setGlobalLogger sync.Once

// testWriter shows logs on stderr with go test -v.
type testWriter struct{}

func (testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() {
		return os.Stderr.Write(p)
	}
	return len(p), nil
}

func newNAD(ns, name, config string) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
}

// warningClient is a client that records the API server's warnings.
type warnings struct {
	mu   sync.Mutex
	msgs []string
}

func (w *warnings) HandleWarningHeader(_ int, _ string, text string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, text)
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}

func warningClient(t testing.TB) (client.Client, *warnings) {
	t.Helper()
	w := &warnings{}
	cfg := rest.CopyConfig(env.Config)
	cfg.WarningHandler = w
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c, w
}

// tlsDial checks what the webhook's TLS listener accepts.
func tlsDial(cfg *tls.Config) (*tls.ConnectionState, error) {
	cfg.RootCAs = nil
	cfg.InsecureSkipVerify = true // only the protocol is under test here
	conn, err := tls.Dial("tcp", net.JoinHostPort(env.Webhook.LocalServingHost, fmt.Sprint(env.Webhook.LocalServingPort)), cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	st := conn.ConnectionState()
	return &st, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// deleteWebhookConfiguration deletes a webhook configuration of kind by name.
func deleteWebhookConfiguration(t testing.TB, kind, name string) {
	t.Helper()
	if err := env.DeleteWebhookConfiguration(context.Background(), kind, name); err != nil {
		t.Error(err)
	}
}
