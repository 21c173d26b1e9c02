package chartrender

import (
	"context"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	kubefake "helm.sh/helm/v3/pkg/kube/fake"
	"helm.sh/helm/v3/pkg/storage"
	"helm.sh/helm/v3/pkg/storage/driver"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/test/testenv"
)

const crdName = "nadmigrations.netconf-migrator.harvesterhci.io"

// The NADMigration CRD follows the chart, as a template (crds.enabled),
// with Helm's own install, upgrade and uninstall against a real API
// server: a first install creates it and the chart's NADMigration (a hook,
// since Helm maps every object of a release before it creates any); helm
// upgrade alone gives the served CRD the next version's printer column
// (Helm installs a chart's crds/ once and never upgrades them);
// uninstalling keeps it and the NADMigration (crds.keep); installed again
// with crds.keep=false, the release adopts the CRD it left, and
// uninstalling then deletes it.
func TestTheCRDUpgradesWithTheChart(t *testing.T) {
	ns := "netconf-migrator-system"
	env := testenv.StartT(t, testenv.Options{Namespaces: []string{ns}})
	ctx := context.Background()
	first, err := loader.Load(filepath.Join("..", "..", "config", "chart", "netconf-migrator"))
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]any{"operator": map[string]any{"nadMigration": map[string]any{"create": true}}}

	install := action.NewInstall(helmConfig(t, env, ns))
	install.ReleaseName, install.Namespace = "netconf-migrator", ns
	rel, err := install.Run(first, values)
	if err != nil {
		t.Fatalf("helm install with the CRD and a NADMigration: %v", err)
	}
	if !strings.Contains(rel.Manifest, "kind: CustomResourceDefinition") {
		t.Errorf("the release does not hold the CRD:\n%s", rel.Manifest)
	}
	crd := servedCRD(t, env)
	if crd.Annotations["helm.sh/resource-policy"] != "keep" || crd.Annotations["meta.helm.sh/release-name"] != "netconf-migrator" {
		t.Errorf("the installed CRD's annotations: %v, want the release's and resource-policy keep", crd.Annotations)
	}
	installed := columns(servedCRD(t, env))
	m := migrations(t, env)
	if len(m) != 1 {
		t.Fatalf("NADMigrations after install: %v, want the chart's one", m)
	}

	// The next version: a copy of the chart whose CRD gains a column. No
	// operator runs: Helm upgrades the CRD.
	next, _ := withPrinterColumn(t, first, "Test", ".metadata.uid")
	// A configuration of its own, as each helm command has: one kept from
	// the install would remember the API server as it was then.
	upgrade := action.NewUpgrade(helmConfig(t, env, ns))
	upgrade.Namespace = ns
	if _, err := upgrade.Run("netconf-migrator", next, values); err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	want := strings.Join(append(installed, "Test"), ",")
	if got := columns(servedCRD(t, env)); strings.Join(got, ",") != want {
		t.Errorf("after helm upgrade the served CRD's columns are %v, want %s", got, want)
	}
	// The same spec and appVersion: the same NADMigration, not made anew
	// (a new one would run again).
	if after := migrations(t, env); strings.Join(after, ",") != strings.Join(m, ",") {
		t.Errorf("NADMigrations after an upgrade that changed neither spec nor version: %v, were %v", after, m)
	}

	// An operator newer than the chart (its image pinned ahead) applies
	// its CRD, one more column; a helm upgrade that changes another value
	// renders the CRD as served and takes nothing away from it.
	_, newer := withPrinterColumn(t, next, "Newer", ".metadata.name")
	startOperator(t, env, ns, operator.Options{UpgradeCRD: true, Version: "v9.9.9", CRDManifest: newer})
	want = strings.Join(append(installed, "Test", "Newer"), ",")
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		return strings.Join(columns(servedCRD(t, env)), ",") == want, nil
	})
	if err != nil {
		t.Fatalf("the newer operator's CRD is not served: %v, want %s", columns(servedCRD(t, env)), want)
	}
	replicas := action.NewUpgrade(helmConfig(t, env, ns))
	replicas.Namespace = ns
	if _, err := replicas.Run("netconf-migrator", next, map[string]any{"operator": values["operator"], "replicas": 3}); err != nil {
		t.Fatalf("helm upgrade of replicas: %v", err)
	}
	if got := columns(servedCRD(t, env)); strings.Join(got, ",") != want {
		t.Errorf("a helm upgrade took the newer operator's CRD back: columns %v, want %s", got, want)
	}

	if _, err := action.NewUninstall(helmConfig(t, env, ns)).Run("netconf-migrator"); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	if got := columns(servedCRD(t, env)); strings.Join(got, ",") != want {
		t.Errorf("after uninstall, the CRD's columns are %v", got)
	}
	if m := migrations(t, env); len(m) != 1 {
		t.Errorf("NADMigrations after uninstall: %v, want the chart's one kept", m)
	}

	// crds.keep=false: the same release again adopts the CRD it kept, and
	// takes it when it goes.
	again := action.NewInstall(helmConfig(t, env, ns))
	again.ReleaseName, again.Namespace = "netconf-migrator", ns
	if rel, err := again.Run(next, map[string]any{"crds": map[string]any{"keep": false}}); err != nil || !strings.Contains(rel.Manifest, "kind: CustomResourceDefinition") {
		t.Fatalf("helm install again with crds.keep=false: %v, want the kept CRD adopted", err)
	}
	if _, err := action.NewUninstall(helmConfig(t, env, ns)).Run("netconf-migrator"); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		return apierrors.IsNotFound(env.Client.Get(ctx, client.ObjectKey{Name: crdName}, &apiextensionsv1.CustomResourceDefinition{})), nil
	})
	if err != nil {
		t.Errorf("uninstalled with crds.keep=false, the CRD is still served")
	}
}

// A CRD the release did not install (an earlier version's crds/, which
// Helm installed with no release, or another tool) is left alone: Helm
// would refuse to import it and fail the install. The operator, wired as
// the binary wires it (NewManager, then Setup), keeps it at its version.
// crds.enabled=false renders no CRD at all.
func TestTheChartLeavesACRDItDidNotInstall(t *testing.T) {
	ns := "netconf-migrator-system"
	env := testenv.StartT(t, testenv.Options{Namespaces: []string{ns}})
	ctx := context.Background()
	ch, err := loader.Load(filepath.Join("..", "..", "config", "chart", "netconf-migrator"))
	if err != nil {
		t.Fatal(err)
	}
	if out, err := Render(filepath.Join("..", "..", "config", "chart", "netconf-migrator"), ns, map[string]any{"crds": map[string]any{"enabled": false}}); err != nil || strings.Contains(string(out), "kind: CustomResourceDefinition") {
		t.Errorf("rendered with crds.enabled=false: %v, want no CRD", err)
	}
	// As 0.2's crds/ left it: the chart's CRD, no release's metadata.
	old := &apiextensionsv1.CustomResourceDefinition{}
	if err := yaml.Unmarshal(crdFile(t, ch), old); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, old); err != nil {
		t.Fatal(err)
	}
	installed := columns(servedCRD(t, env))

	next, crdManifest := withPrinterColumn(t, ch, "Test", ".metadata.uid")
	install := action.NewInstall(helmConfig(t, env, ns))
	install.ReleaseName, install.Namespace = "netconf-migrator", ns
	rel, err := install.Run(next, nil)
	if err != nil {
		t.Fatalf("helm install beside a CRD no release owns: %v", err)
	}
	if strings.Contains(rel.Manifest, "kind: CustomResourceDefinition") {
		t.Errorf("the release took over a CRD it did not install")
	}
	if got := columns(servedCRD(t, env)); strings.Join(got, ",") != strings.Join(installed, ",") {
		t.Fatalf("helm install changed a CRD it did not install: %v, was %v", got, installed)
	}
	// The release's operator starts, and applies its CRD.
	startOperator(t, env, ns, operator.Options{UpgradeCRD: true, Version: "v9.9.9", CRDManifest: crdManifest})
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		got := columns(servedCRD(t, env))
		return len(got) == len(installed)+1 && got[len(got)-1] == "Test", nil
	})
	if err != nil {
		t.Errorf("after the operator started, the served CRD's columns are %v, want %v and Test", columns(servedCRD(t, env)), installed)
	}
}

// servedCRD is the NADMigration CRD the API server serves.
func servedCRD(t *testing.T, env *testenv.Env) *apiextensionsv1.CustomResourceDefinition {
	t.Helper()
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Name: crdName}, crd); err != nil {
		t.Fatalf("the served CRD: %v", err)
	}
	return crd
}

func columns(crd *apiextensionsv1.CustomResourceDefinition) []string {
	var names []string
	for _, c := range crd.Spec.Versions[0].AdditionalPrinterColumns {
		names = append(names, c.Name)
	}
	return names
}

// migrations names every NADMigration as name/uid.
func migrations(t *testing.T, env *testenv.Env) []string {
	t.Helper()
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("netconf-migrator.harvesterhci.io/v1alpha1")
	list.SetKind("NADMigrationList")
	if err := env.Client.List(context.Background(), list); err != nil {
		t.Fatalf("listing NADMigrations: %v", err)
	}
	var names []string
	for _, u := range list.Items {
		names = append(names, u.GetName()+"/"+string(u.GetUID()))
	}
	return names
}

// crdFile is the chart's NADMigration CRD, as make generate writes it.
func crdFile(t *testing.T, ch *chart.Chart) []byte {
	t.Helper()
	for _, f := range ch.Files {
		if f.Name == crdPath {
			return f.Data
		}
	}
	t.Fatalf("the chart has no %s", crdPath)
	return nil
}

// crdPath is where the chart keeps the CRD its template renders.
const crdPath = "files/nadmigrations-crd.yaml"

// withPrinterColumn returns a copy of ch, one patch version on, whose
// NADMigration CRD has one more printer column, and that CRD.
func withPrinterColumn(t *testing.T, ch *chart.Chart, name, path string) (*chart.Chart, []byte) {
	t.Helper()
	next := *ch
	meta := *ch.Metadata
	meta.Version += "-next"
	next.Metadata = &meta
	next.Files = nil
	var manifest []byte
	for _, f := range ch.Files {
		data := f.Data
		if f.Name == crdPath {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := yaml.Unmarshal(data, crd); err != nil {
				t.Fatal(err)
			}
			v := &crd.Spec.Versions[0]
			v.AdditionalPrinterColumns = append(v.AdditionalPrinterColumns, apiextensionsv1.CustomResourceColumnDefinition{Name: name, Type: "string", JSONPath: path})
			var err error
			if data, err = yaml.Marshal(crd); err != nil {
				t.Fatal(err)
			}
			manifest = data
		}
		next.Files = append(next.Files, &chart.File{Name: f.Name, Data: data})
	}
	if manifest == nil {
		t.Fatalf("the chart has no %s", crdPath)
	}
	return &next, manifest
}

// startOperator runs the operator in this process as the operator command
// builds it, electing its leader in ns, until the test ends.
func startOperator(t *testing.T, env *testenv.Env, ns string, o operator.Options) {
	t.Helper()
	log := testr.New(t)
	mgr, err := operator.NewManager(env.Config, operator.ManagerOptions{MetricsBindAddress: "0", HealthProbeBindAddress: "0",
		LeaderElectionNamespace: ns, SkipNameValidation: true}, log)
	if err != nil {
		t.Fatal(err)
	}
	if o.BackupNamespace == "" {
		o.BackupNamespace = ns
	}
	if err := operator.Setup(mgr, env.Config, log, o); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the operator stopped with: %v", err)
		}
	})
}

// helmConfig is Helm's action configuration for releases in ns.
func helmConfig(t *testing.T, env *testenv.Env, ns string) *action.Configuration {
	t.Helper()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &env.KubeconfigPath
	flags.Namespace = &ns
	cfg := &action.Configuration{}
	if err := cfg.Init(flags, ns, "secret", t.Logf); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Moving from a plain install to Harvester's Addon (another release name
// and namespace), or into an umbrella chart, meets the backup namespace
// the first release kept on uninstall, with what it holds; so does an
// install after the upgrade pre-hook created that namespace. Helm refused
// both ("cannot be imported into the current release"): the chart now
// makes the namespace only where it is absent or its own, and a backup in
// it outlives every step.
func TestInstallingUnderAnotherNameKeepsTheBackupNamespace(t *testing.T) {
	env := testenv.StartT(t, testenv.Options{Namespaces: []string{"netconf-migrator-system", "harvester-addons"}})
	ctx := context.Background()
	ch, err := loader.Load(filepath.Join("..", "..", "config", "chart", "netconf-migrator"))
	if err != nil {
		t.Fatal(err)
	}
	const backups = "netconf-migrator-backups"
	backup := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: backups, Name: "netconf-migrator-backup-kept",
		Labels: map[string]string{"netconf-migrator.harvesterhci.io/backup": "true"}}}

	first := action.NewInstall(helmConfig(t, env, "netconf-migrator-system"))
	first.ReleaseName, first.Namespace = "netconf-migrator", "netconf-migrator-system"
	if _, err := first.Run(ch, nil); err != nil {
		t.Fatalf("helm install: %v", err)
	}
	// A replacement's backup, as the tool would write it.
	if err := env.Client.Create(ctx, backup); err != nil {
		t.Fatal(err)
	}
	// An upgrade of the same release keeps managing the namespace.
	upgrade := action.NewUpgrade(helmConfig(t, env, "netconf-migrator-system"))
	upgrade.Namespace = "netconf-migrator-system"
	rel, err := upgrade.Run("netconf-migrator", ch, nil)
	if err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	if !strings.Contains(rel.Manifest, "name: "+backups+"\n") {
		t.Errorf("the upgraded release no longer makes the backup namespace it made")
	}
	if _, err := action.NewUninstall(helmConfig(t, env, "netconf-migrator-system")).Run("netconf-migrator"); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}

	// The Addon's release: another name, another namespace.
	addon := action.NewInstall(helmConfig(t, env, "harvester-addons"))
	addon.ReleaseName, addon.Namespace = "netconf-migrator-addon", "harvester-addons"
	if _, err := addon.Run(ch, map[string]any{"fullnameOverride": "nm"}); err != nil {
		t.Fatalf("helm install under another name, after the first release was uninstalled: %v", err)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(backup), &corev1.Secret{}); err != nil {
		t.Errorf("the backup the first release's tool kept: %v", err)
	}
	// The CRD the first release kept (crds.keep) is another release's: the
	// Addon's leaves it (Helm would refuse to import it), and the
	// NADMigrations in it stay.
	if crd := servedCRD(t, env); crd.Annotations["meta.helm.sh/release-name"] != "netconf-migrator" {
		t.Errorf("the kept CRD changed hands: %v", crd.Annotations)
	}
	ns := &corev1.Namespace{}
	if err := env.Client.Get(ctx, client.ObjectKey{Name: backups}, ns); err != nil || ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("the backup namespace: %v %v", err, ns.Labels)
	}
}

// A backup namespace the upgrade pre-hook created (kubectl create
// namespace, no Helm metadata) is used as it is by a later install.
func TestInstallingBesideABackupNamespaceThePreHookMade(t *testing.T) {
	env := testenv.StartT(t, testenv.Options{Namespaces: []string{"netconf-migrator-system", "netconf-migrator-backups"}})
	ch, err := loader.Load(filepath.Join("..", "..", "config", "chart", "netconf-migrator"))
	if err != nil {
		t.Fatal(err)
	}
	install := action.NewInstall(helmConfig(t, env, "netconf-migrator-system"))
	install.ReleaseName, install.Namespace = "netconf-migrator", "netconf-migrator-system"
	rel, err := install.Run(ch, nil)
	if err != nil {
		t.Fatalf("helm install beside the pre-hook's backup namespace: %v", err)
	}
	if strings.Contains(rel.Manifest, "kind: Namespace") {
		t.Errorf("the release took over a namespace it did not make:\n%s", rel.Manifest)
	}
}

// helm upgrade --reuse-values renders with the values the release was
// made with: from a chart without the crds values (0.2 and before), each
// defaults to true on its own, so the CRD is rendered and kept, not
// refused with a nil pointer nor rendered without keep. Helm's memory
// storage and a printing client: no API server.
func TestReuseValuesFromAChartWithoutCRDValues(t *testing.T) {
	cur, err := loader.Load(filepath.Join("..", "..", "config", "chart", "netconf-migrator"))
	if err != nil {
		t.Fatal(err)
	}
	old, err := loader.Load(filepath.Join("..", "..", "config", "chart", "netconf-migrator"))
	if err != nil {
		t.Fatal(err)
	}
	delete(old.Values, "crds")
	var tpls []*chart.File
	for _, f := range old.Templates {
		if f.Name != "templates/crds.yaml" {
			tpls = append(tpls, f)
		}
	}
	old.Templates = tpls
	// The Kubernetes of Harvester v1.6 (Helm as a library assumes 1.20,
	// older than the chart's kubeVersion).
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: "v1.33.1", Major: "1", Minor: "33"}
	cfg := &action.Configuration{Releases: storage.Init(driver.NewMemory()), KubeClient: &kubefake.PrintingKubeClient{Out: io.Discard},
		Capabilities: caps, Log: t.Logf}
	in := action.NewInstall(cfg)
	in.ReleaseName, in.Namespace = "netconf-migrator", "netconf-migrator-system"
	if _, err := in.Run(old, map[string]any{"replicas": 3}); err != nil {
		t.Fatalf("installing a chart without the crds values: %v", err)
	}
	up := action.NewUpgrade(cfg)
	up.Namespace, up.ReuseValues = "netconf-migrator-system", true
	rel, err := up.Run("netconf-migrator", cur, nil)
	if err != nil {
		t.Fatalf("helm upgrade --reuse-values onto this chart: %v", err)
	}
	if !strings.Contains(rel.Manifest, "kind: CustomResourceDefinition") || !strings.Contains(rel.Manifest, "helm.sh/resource-policy: keep") {
		t.Errorf("upgraded with --reuse-values, the release's CRD is not rendered and kept:\n%s", rel.Manifest)
	}
}

// earlierChart is the chart as commit left it, from this repository's
// history.
func earlierChart(t *testing.T, commit string) *chart.Chart {
	t.Helper()
	dir := t.TempDir()
	archive := exec.Command("git", "-C", filepath.Join("..", ".."), "archive", commit, "config/chart/netconf-migrator")
	extract := exec.Command("tar", "-x", "-C", dir)
	pipe, err := archive.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	extract.Stdin = pipe
	if err := extract.Start(); err != nil {
		t.Fatal(err)
	}
	if err := archive.Run(); err != nil {
		t.Fatalf("git archive %s (this test needs the repository's history): %v", commit, err)
	}
	if err := extract.Wait(); err != nil {
		t.Fatal(err)
	}
	ch, err := loader.Load(filepath.Join(dir, "config", "chart", "netconf-migrator"))
	if err != nil {
		t.Fatal(err)
	}
	return ch
}

// helm upgrade --reuse-values renders this chart with an earlier release's
// values, which lack every value added since. From the chart before
// issue 36 (04b2c44) it upgrades; a value it lacked (metrics.rancherMonitoring)
// stopped the render on a nil pointer. From 0.2 (a1d0efa), whose values keep
// netconf-migrator-system as the backup namespace, it stops and says to use
// --reset-then-reuse-values, which then upgrades with this chart's defaults
// (Linux nodes) under the values the user gave.
func TestReuseValuesFromEarlierReleases(t *testing.T) {
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = chartutil.KubeVersion{Version: "v1.33.1", Major: "1", Minor: "33"}
	// A fresh load per upgrade: --reuse-values sets the chart's defaults to
	// the old release's in the chart it is handed.
	current := func() *chart.Chart {
		cur, err := loader.Load(filepath.Join("..", "..", "config", "chart", "netconf-migrator"))
		if err != nil {
			t.Fatal(err)
		}
		return cur
	}
	for _, tc := range []struct {
		commit, refused string
	}{
		{commit: "04b2c44"},
		{commit: "a1d0efa", refused: "--reset-then-reuse-values"},
	} {
		t.Run(tc.commit, func(t *testing.T) {
			cfg := &action.Configuration{Releases: storage.Init(driver.NewMemory()), KubeClient: &kubefake.PrintingKubeClient{Out: io.Discard},
				Capabilities: caps, Log: t.Logf}
			in := action.NewInstall(cfg)
			in.ReleaseName, in.Namespace = "netconf-migrator", "netconf-migrator-system"
			if _, err := in.Run(earlierChart(t, tc.commit), map[string]any{"replicas": 3}); err != nil {
				t.Fatalf("installing the chart of %s: %v", tc.commit, err)
			}
			up := action.NewUpgrade(cfg)
			up.Namespace, up.ReuseValues = "netconf-migrator-system", true
			rel, err := up.Run("netconf-migrator", current(), nil)
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("helm upgrade --reuse-values from %s: %v", tc.commit, err)
			case tc.refused != "":
				if err == nil || !strings.Contains(err.Error(), tc.refused) {
					t.Fatalf("helm upgrade --reuse-values from %s: %v, want it refused naming %s", tc.commit, err, tc.refused)
				}
				up = action.NewUpgrade(cfg)
				up.Namespace, up.ResetThenReuseValues = "netconf-migrator-system", true
				if rel, err = up.Run("netconf-migrator", current(), nil); err != nil {
					t.Fatalf("helm upgrade --reset-then-reuse-values from %s: %v", tc.commit, err)
				}
				if !strings.Contains(rel.Manifest, "kubernetes.io/os: linux") || !strings.Contains(rel.Manifest, "replicas: 3") {
					t.Errorf("after --reset-then-reuse-values from %s, this chart's defaults or the user's replicas are missing", tc.commit)
				}
			}
		})
	}
}
