// Package testenv starts a real etcd and kube-apiserver (controller-runtime's
// envtest) with the NetworkAttachmentDefinition CRD installed, for the
// webhook and migration suites. The binaries come from
// hack/setup-test-assets.sh; when they are missing the suite fails, it
// never skips.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
)

// Env is a running control plane.
type Env struct {
	// Config is an admin (system:masters) REST config.
	Config *rest.Config
	// Client is an uncached client whose scheme knows core types, CRDs and NADs.
	Client client.Client
	Scheme *runtime.Scheme
	// KubeconfigPath is an admin kubeconfig file for kubectl and --kubeconfig.
	KubeconfigPath string
	// Webhook holds the serving address and certificates envtest made when
	// Options.Webhooks was set.
	Webhook *envtest.WebhookInstallOptions

	env *envtest.Environment
	dir string
	// apiserver is the kube-apiserver RestartAPIServer started, if any.
	apiserver restarted
}

// Options shape the control plane.
type Options struct {
	// Webhooks are registered with the API server, pointing at a local port
	// with serving certificates that envtest writes (see Env.Webhook).
	Webhooks *envtest.WebhookInstallOptions
	// ShowOutput attaches the control plane's output to this process.
	ShowOutput bool
	// WithoutNADCRD leaves the NAD CRD out, as on a cluster without Multus.
	WithoutNADCRD bool
	// APIServerFlags are set on kube-apiserver's command line.
	APIServerFlags map[string]string
	// CRDs are installed beside the NAD CRD (the Harvester stand-ins' kinds).
	CRDs []*apiextensionsv1.CustomResourceDefinition
	// PreserveUnknownNADFields lets the NAD CRD store fields under spec
	// that our NAD type lacks, as a CRD of a later Multus might.
	PreserveUnknownNADFields bool
	// Namespaces are created once the control plane is up (the tool's own
	// namespace, as an install has it).
	Namespaces []string
}

// RepoRoot finds the repository's root from the working directory: the
// directory of the product's go.mod (the tooling module in hack/ has its
// own, which is passed by).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("finding the repository root: %w", err)
	}
	for {
		if mod, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.HasPrefix(mod, []byte("module github.com/harvester/netconf-migrator\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("finding the repository root: no go.mod above the working directory")
		}
		dir = parent
	}
}

// CacheDir is where the hack/setup-*.sh scripts keep what they build:
// NETCONF_MIGRATOR_CACHE, else netconf-migrator in the user's cache.
func CacheDir() (string, error) {
	if cache := os.Getenv("NETCONF_MIGRATOR_CACHE"); cache != "" {
		return cache, nil
	}
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding the cache directory: %w", err)
	}
	return filepath.Join(base, "netconf-migrator"), nil
}

// Forward accepts connections on ln until it is closed and passes each,
// byte for byte, to the connection dial gives; a failed dial closes it.
// It stands for kube-proxy and for a route into a network namespace.
func Forward(ln net.Listener, dial func() (net.Conn, error)) {
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				up, err := dial()
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c) }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
}

// AssetsDir returns the directory holding etcd and kube-apiserver:
// KUBEBUILDER_ASSETS when set, else the cache hack/setup-test-assets.sh fills.
func AssetsDir(root string) (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		mod, err := os.ReadFile(filepath.Join(root, "go.mod"))
		if err != nil {
			return "", fmt.Errorf("reading go.mod: %w", err)
		}
		m := regexp.MustCompile(`(?m)^\s*k8s\.io/apimachinery v0\.(\d+)\.(\d+)`).FindSubmatch(mod)
		if m == nil {
			return "", errors.New("go.mod names no k8s.io/apimachinery v0.x version")
		}
		cache, err := CacheDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(cache, "k8s", fmt.Sprintf("v1.%s.%s", m[1], m[2]))
	}
	for _, bin := range []string{"etcd", "kube-apiserver"} {
		if os.Getenv("TEST_ASSET_"+map[string]string{"etcd": "ETCD", "kube-apiserver": "KUBE_APISERVER"}[bin]) != "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s is missing from %s: run hack/setup-test-assets.sh (make test does) to install etcd and build kube-apiserver", bin, dir)
		}
	}
	return dir, nil
}

// LoadCRD reads the NAD CRD shipped in config/crd.
func LoadCRD(root string) (*apiextensionsv1.CustomResourceDefinition, error) {
	return loadCRD(filepath.Join(root, "config", "crd", "bases", "k8s.cni.cncf.io_network-attachment-definitions.yaml"))
}

// LoadNADMigrationCRD reads the NADMigration CRD make generate writes.
func LoadNADMigrationCRD(root string) (*apiextensionsv1.CustomResourceDefinition, error) {
	return loadCRD(filepath.Join(root, "config", "crd", "bases", "netconf-migrator.harvesterhci.io_nadmigrations.yaml"))
}

// loadCRD decodes one CRD. A file without one (empty, or read while it was
// being written) is an error here, naming it, and not a CRD without a name
// that envtest then fails to look up.
func loadCRD(path string) (*apiextensionsv1.CustomResourceDefinition, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading a CRD: %w", err)
	}
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.UnmarshalStrict(raw, crd); err != nil {
		return nil, fmt.Errorf("decoding %s: %w", path, err)
	}
	if crd.Kind != "CustomResourceDefinition" || crd.Name == "" {
		return nil, fmt.Errorf("%s holds no named CustomResourceDefinition (%d bytes)", path, len(raw))
	}
	return crd, nil
}

// NewScheme returns a scheme with core types, CRDs, NADs and NADMigrations.
func NewScheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme, nadv1.AddToScheme, v1alpha1.AddToScheme} {
		if err := add(s); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Start starts etcd and kube-apiserver, installs the NAD CRD and waits until
// it is Established.
func Start(opts Options) (*Env, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets, err := AssetsDir(root)
	if err != nil {
		return nil, err
	}
	crd, err := LoadCRD(root)
	if err != nil {
		return nil, err
	}
	scheme, err := NewScheme()
	if err != nil {
		return nil, err
	}
	te := &envtest.Environment{
		Scheme:                   scheme,
		BinaryAssetsDirectory:    assets,
		AttachControlPlaneOutput: opts.ShowOutput || os.Getenv("KUBEBUILDER_ATTACH_CONTROL_PLANE_OUTPUT") == "true",
		ControlPlaneStartTimeout: 2 * time.Minute, // a loaded 2-core machine starts slowly
	}
	for k, v := range opts.APIServerFlags {
		te.ControlPlane.GetAPIServer().Configure().Set(k, v)
	}
	crds := opts.CRDs
	if opts.PreserveUnknownNADFields {
		for i := range crd.Spec.Versions {
			if sch := crd.Spec.Versions[i].Schema; sch != nil && sch.OpenAPIV3Schema != nil {
				spec := sch.OpenAPIV3Schema.Properties["spec"]
				spec.XPreserveUnknownFields = ptr.To(true)
				sch.OpenAPIV3Schema.Properties["spec"] = spec
			}
		}
	}
	if !opts.WithoutNADCRD {
		crds = append([]*apiextensionsv1.CustomResourceDefinition{crd}, crds...)
	}
	te.CRDInstallOptions = envtest.CRDInstallOptions{CRDs: crds}
	if opts.Webhooks != nil {
		te.WebhookInstallOptions = *opts.Webhooks
	}
	cfg, err := te.Start()
	if err != nil {
		return nil, fmt.Errorf("starting etcd and kube-apiserver from %s: %w", assets, err)
	}
	e := &Env{Config: cfg, Scheme: scheme, env: te}
	if opts.Webhooks != nil {
		e.Webhook = &te.WebhookInstallOptions
	}
	fail := func(err error) (*Env, error) { return nil, errors.Join(err, e.Stop()) }
	if e.Client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
		return fail(fmt.Errorf("creating a client: %w", err))
	}
	for _, c := range crds {
		if err := WaitEstablished(context.Background(), e.Client, c.Name); err != nil {
			return fail(err)
		}
	}
	if e.dir, err = os.MkdirTemp("", "netconf-migrator-testenv-"); err != nil {
		return fail(err)
	}
	e.KubeconfigPath = filepath.Join(e.dir, "kubeconfig")
	if err := os.WriteFile(e.KubeconfigPath, te.KubeConfig, 0o600); err != nil {
		return fail(fmt.Errorf("writing the kubeconfig: %w", err))
	}
	for _, ns := range opts.Namespaces {
		if err := e.CreateNamespace(context.Background(), ns, nil); err != nil {
			return fail(err)
		}
	}
	return e, nil
}

// WaitEstablished waits until the named CRD reports Established.
func WaitEstablished(ctx context.Context, c client.Client, name string) error {
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, crd); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for CRD %s to be Established: %w", name, err)
	}
	return nil
}

// Stop stops the control plane and removes its files.
func (e *Env) Stop() error {
	err := errors.Join(e.stopRestarted(), e.env.Stop())
	if e.dir != "" {
		err = errors.Join(err, os.RemoveAll(e.dir))
	}
	return err
}

// Main is a TestMain body: it starts the control plane once for a package's
// tests, stores it in *env, runs them and stops it. A control plane that
// does not start fails the package.
func Main(m *testing.M, opts Options, env **Env) int {
	e, err := Start(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL: the test control plane did not start:", err)
		return 1
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "Stopping the test control plane:", err)
	}
	return code
}

// StartT starts a control plane of the test's own, stopped when the test
// ends, after the cleanups the test registers later (which may still need
// it).
func StartT(t testing.TB, opts Options) *Env {
	t.Helper()
	e, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Error(err)
		}
	})
	return e
}

// Kubectl runs kubectl against the control plane with the admin kubeconfig.
func (e *Env) Kubectl(ctx context.Context, stdin []byte, args ...string) (stdout, stderr string, err error) {
	cmd := exec.CommandContext(ctx, "kubectl", append([]string{"--kubeconfig", e.KubeconfigPath}, args...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	err = cmd.Run()
	return out.String(), errOut.String(), err
}

// CreateNamespace creates a namespace, tolerating one that exists.
func (e *Env) CreateNamespace(ctx context.Context, name string, labels map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if err := e.Client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// AddUser returns a REST config for a user with the given groups, so tests
// can exercise RBAC (the API server runs with RBAC authorization).
func (e *Env) AddUser(name string, groups ...string) (*rest.Config, error) {
	u, err := e.env.AddUser(envtest.User{Name: name, Groups: groups}, e.Config)
	if err != nil {
		return nil, fmt.Errorf("adding user %s: %w", name, err)
	}
	return u.Config(), nil
}

// EtcdURL is where etcd serves clients (and, in etcd 3.4, its JSON
// gateway), for tests that act on etcd below the API server.
func (e *Env) EtcdURL() string {
	return e.env.ControlPlane.Etcd.URL.String()
}

// DeleteWebhookConfiguration deletes a Mutating- or
// ValidatingWebhookConfiguration by name; one already gone is no error.
func (e *Env) DeleteWebhookConfiguration(ctx context.Context, kind, name string) error {
	err := e.Client.Delete(ctx, &metav1.PartialObjectMetadata{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: kind},
		ObjectMeta: metav1.ObjectMeta{Name: name},
	})
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// FreePort asks the kernel for a free TCP port on host.
func FreePort(host string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// UnlimitedClient is a client of the control plane that no client-side
// rate limit holds back: what measures the API server rather than
// client-go's throttling, and what stands for a component that reads
// caches (Harvester's webhook) or writes as fast as a busy cluster does.
func (e *Env) UnlimitedClient() (client.Client, error) {
	return client.New(e.UnlimitedConfig(), client.Options{Scheme: e.Scheme})
}

// UnlimitedConfig is the control plane's config without a client-side
// rate limit: UnlimitedClient's, and the informers of the stand-ins and of
// the replacement benchmark's floor.
func (e *Env) UnlimitedConfig() *rest.Config {
	cfg := rest.CopyConfig(e.Config)
	cfg.QPS, cfg.Burst = -1, 0
	return cfg
}

// CreateMany creates objs from 16 writers with a client no rate limit
// holds back, as a busy cluster's controllers and GitOps tools write, and
// returns the first error, naming its object.
func (e *Env) CreateMany(ctx context.Context, objs []client.Object) error {
	c, err := e.UnlimitedClient()
	if err != nil {
		return err
	}
	ch := make(chan client.Object)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var firstErr error
	for range 16 {
		wg.Go(func() {
			for o := range ch {
				if err := c.Create(ctx, o); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = fmt.Errorf("creating %s/%s: %w", o.GetNamespace(), o.GetName(), err)
					}
					mu.Unlock()
				}
			}
		})
	}
	for _, o := range objs {
		ch <- o
	}
	close(ch)
	wg.Wait()
	return firstErr
}

// BuildBinary builds cmd/netconf-migrator into the test's temp dir, so a
// test can run it as a separate process: signal it, kill it.
func BuildBinary(t testing.TB) string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "netconf-migrator")
	// The go command's defaults, not the image's static build: the demo and
	// the benchmarks compile the same packages that way, so this links what
	// the build cache already holds instead of compiling client-go and
	// controller-runtime once more (CI's time is CPU on two cores). No test
	// here depends on the binary being static.
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/netconf-migrator")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}
