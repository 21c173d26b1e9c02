// Package e2e proves the operator against a real etcd and kube-apiserver:
// NADMigrations run through the engine and the run Lease, with kstatus
// conditions that cli-utils reads as InProgress, Current or Failed, and the
// watch that fixes legacy NADs written behind the webhook's back.
package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

var env *testenv.Env

// backupNamespace is where the operator keeps backups by default;
// ownNamespace is where it runs, where versions up to 0.2 kept them.
const (
	backupNamespace = "netconf-migrator-backups"
	ownNamespace    = "netconf-migrator-system"
)

func TestMain(m *testing.M) {
	ctrllog.SetLogger(logr.Discard())
	klog.SetLogger(logr.Discard()) // client-go's leader election
	opts, err := envOptions()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(testenv.Main(m, opts, &env))
}

// envOptions is the control plane the operator's tests run on: Harvester's
// CRDs and ours, the namespaces the operator uses, webhooks served.
func envOptions() (testenv.Options, error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return testenv.Options{}, err
	}
	crd, err := testenv.LoadNADMigrationCRD(root)
	if err != nil {
		return testenv.Options{}, err
	}
	return testenv.Options{Webhooks: &envtest.WebhookInstallOptions{},
		CRDs: append(harvester.CRDs(), crd, harvester.AddonCRD()), Namespaces: []string{backupNamespace, ownNamespace}}, nil
}

const (
	nested = `{"cniVersion":"0.3.1","name":"%s","type":"bridge","NetConf":{"bridge":"%s-br","promiscMode":true,"vlan":100}}`
	flat   = `{"cniVersion":"0.3.1","name":"%s","type":"bridge","bridge":"%s-br","promiscMode":true,"vlan":100}`
	// truncated: only the NetConf keys survived (cni v1.2.0's marshalling).
	truncated = `{"cniVersion":"0.3.1","ipam":{},"name":"%s","type":"bridge"}`
)

func newNAD(ns, name, format string) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: strings.ReplaceAll(format, "%s", name)}}
}

func create(t testing.TB, objs ...client.Object) {
	t.Helper()
	for _, o := range objs {
		if err := env.Client.Create(context.Background(), o); err != nil {
			t.Fatalf("creating %s: %v", o.GetName(), err)
		}
	}
}

// namespace creates a fresh namespace for one test.
func namespace(t testing.TB, name string, labels map[string]string) string {
	t.Helper()
	if err := env.CreateNamespace(context.Background(), name, labels); err != nil {
		t.Fatal(err)
	}
	return name
}

// running is an operator process, built as `netconf-migrator operator`
// builds it: operator.NewManager (leader election, the trimmed cache),
// then operator.Setup.
type running struct {
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	log    *testWriter
}

// logged says whether the operator has logged a line holding s.
func (r *running) logged(s string) bool { return r.log.has(s) }

// stop stops the operator as SIGTERM does, and returns once it stopped.
func (r *running) stop(t testing.TB) {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		if err := <-r.done; err != nil {
			t.Errorf("the operator stopped with: %v", err)
		}
	})
}

func startOperator(t testing.TB, o operator.Options) *running {
	t.Helper()
	return startOperatorAs(t, env.Config, o)
}

// startOperatorAs runs the operator talking to the API server with cfg.
func startOperatorAs(t testing.TB, cfg *rest.Config, o operator.Options) *running {
	t.Helper()
	w := &testWriter{t: t}
	// The manager may log once more after it stopped (an error received
	// after its stop sequence began); the test has ended by then.
	t.Cleanup(func() { w.done.Store(true) })
	log, err := logging.New(w, logging.Options{Format: "json", Verbosity: logging.Info})
	if err != nil {
		t.Fatal(err)
	}
	if o.ProgressInterval == 0 {
		o.ProgressInterval = 100 * time.Millisecond
	}
	if o.LeaseWait == 0 {
		o.LeaseWait = time.Second
	}
	if o.ReadinessInterval == 0 {
		o.ReadinessInterval = 200 * time.Millisecond
	}
	if o.BackupNamespace == "" {
		o.BackupNamespace = backupNamespace
	}
	mgr, err := operator.NewManager(cfg, operator.ManagerOptions{
		// Its own namespace, as config/operator elects it.
		MetricsBindAddress: "0", HealthProbeBindAddress: "0", LeaderElectionNamespace: ownNamespace,
		// Each test starts its own manager in this process.
		SkipNameValidation: true,
	}, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := operator.Setup(mgr, cfg, log, o); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{cancel: cancel, done: make(chan error, 1), log: w}
	go func() { r.done <- mgr.Start(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// testWriter shows the operator's log under -v and keeps it, for tests
// that wait on what it said.
type testWriter struct {
	t    testing.TB
	done atomic.Bool
	mu   sync.Mutex
	buf  strings.Builder
}

func (w *testWriter) Write(p []byte) (int, error) {
	if testing.Verbose() && !w.done.Load() {
		w.t.Log(strings.TrimSpace(string(p)))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	return len(p), nil
}

func (w *testWriter) has(s string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Contains(w.buf.String(), s)
}

// lines counts the lines that hold every one of s.
func (w *testWriter) lines(s ...string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, l := range strings.Split(w.buf.String(), "\n") {
		all := true
		for _, x := range s {
			all = all && strings.Contains(l, x)
		}
		if all {
			n++
		}
	}
	return n
}

// kstatus reads a NADMigration the way Fleet, Argo CD and kpt do.
func kstatus(t testing.TB, name string) *status.Result {
	t.Helper()
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind(v1alpha1.Kind))
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, u); err != nil {
		t.Fatal(err)
	}
	res, err := status.Compute(u)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// waitStatus waits until kstatus reads the NADMigration as want.
func waitStatus(t testing.TB, name string, want status.Status) *v1alpha1.NADMigration {
	t.Helper()
	var last *status.Result
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 3*time.Minute, true, func(context.Context) (bool, error) {
		last = kstatus(t, name)
		return last.Status == want, nil
	})
	if err != nil {
		t.Fatalf("NADMigration %s never read %s (last: %s: %s)", name, want, last.Status, last.Message)
	}
	return get(t, name)
}

func get(t testing.TB, name string) *v1alpha1.NADMigration {
	t.Helper()
	nm := &v1alpha1.NADMigration{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: name}, nm); err != nil {
		t.Fatal(err)
	}
	return nm
}

// waitFor polls cond until it holds: the tests wait on conditions, never
// on a clock.
func waitFor(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 3*time.Minute, true, func(context.Context) (bool, error) { return cond() })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func forms(t testing.TB, ns string) map[netconf.Form]int {
	t.Helper()
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	out := map[netconf.Form]int{}
	for _, n := range list.Items {
		out[netconf.Normalize([]byte(n.Spec.Config)).Form]++
	}
	return out
}

// events returns the Events of one reason on a NAD.
func events(t testing.TB, ns, name, reason string) []corev1.Event {
	t.Helper()
	list := &corev1.EventList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

// gate is a validating webhook on NAD updates in namespaces labelled
// gate=<name>: it admits the first `open` updates, then holds every next
// one until released, so a test can act at a known point of a run.
type gate struct {
	mu       sync.Mutex
	admitted int
	open     int
	release  chan struct{}
	held     chan struct{} // gets a value each time an update is held
	srv      *http.Server
}

func startGate(t testing.TB, label string, open int) *gate {
	t.Helper()
	g := &gate{open: open, release: make(chan struct{}), held: make(chan struct{}, 1024)}
	host := env.Webhook.LocalServingHost
	port, err := testenv.FreePort(host)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(env.Webhook.LocalServingCertDir, "tls.crt"), filepath.Join(env.Webhook.LocalServingCertDir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(port)), &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	g.srv = &http.Server{Handler: http.HandlerFunc(g.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = g.srv.Serve(ln) }()
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "gate-" + label},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "gate.netconf-migrator.test",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL: ptr.To(fmt.Sprintf("https://%s/validate", net.JoinHostPort(host, fmt.Sprint(port)))), CABundle: env.Webhook.LocalServingCAData,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{"k8s.cni.cncf.io"}, APIVersions: []string{"v1"}, Resources: []string{"network-attachment-definitions"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"gate": label}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			TimeoutSeconds:          ptr.To(int32(30)),
		}},
	}
	create(t, vwc)
	t.Cleanup(func() {
		g.Release()
		_ = env.Client.Delete(context.Background(), vwc)
		_ = g.srv.Close()
	})
	return g
}

// Release lets every held and later update through.
func (g *gate) Release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	select {
	case <-g.release:
	default:
		close(g.release)
	}
}

func (g *gate) Admitted() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.admitted
}

func (g *gate) serve(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	review := &admissionv1.AdmissionReview{}
	if err := json.Unmarshal(body, review); err != nil || review.Request == nil {
		http.Error(w, "bad review", http.StatusBadRequest)
		return
	}
	g.mu.Lock()
	hold := g.admitted >= g.open && !(review.Request.DryRun != nil && *review.Request.DryRun)
	g.mu.Unlock()
	if hold {
		g.held <- struct{}{}
		<-g.release
	}
	g.mu.Lock()
	g.admitted++
	g.mu.Unlock()
	review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
	review.Request = nil
	_ = json.NewEncoder(w).Encode(review)
}

var _ = apierrors.IsNotFound
var _ = detect.FixOff

func waitForShort(t testing.TB, what string, cond func() (bool, error)) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) { return cond() })
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
