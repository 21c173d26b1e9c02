package chartrender

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/migration/operator"
	"github.com/harvester/netconf-migrator/test/testenv"
)

const crdName = "nadmigrations.netconf-migrator.harvesterhci.io"

// The NADMigration CRD follows the chart: Helm (helm install, upgrade and
// uninstall, with Helm's own action package against a real API server)
// installs crds/ once and leaves them on upgrade, as it documents; the
// operator of the upgraded release, starting, applies its CRD, so the
// served CRD gains the later version's printer column; uninstalling keeps
// the CRD and the chart's NADMigration.
func TestTheCRDUpgradesWithTheChart(t *testing.T) {
	env := testenv.StartT(t, testenv.Options{Namespaces: []string{"netconf-migrator-system"}})
	ctx := context.Background()
	flags := genericclioptions.NewConfigFlags(false)
	flags.KubeConfig = &env.KubeconfigPath
	ns := "netconf-migrator-system"
	flags.Namespace = &ns
	cfg := &action.Configuration{}
	if err := cfg.Init(flags, ns, "secret", t.Logf); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join("..", "..", "config", "chart", "netconf-migrator")
	first, err := loader.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	values := map[string]any{"operator": map[string]any{"nadMigration": map[string]any{"create": true}}}

	install := action.NewInstall(cfg)
	install.ReleaseName, install.Namespace = "netconf-migrator", ns
	if _, err := install.Run(first, values); err != nil {
		t.Fatalf("helm install: %v", err)
	}
	columns := func() []string {
		t.Helper()
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := env.Client.Get(ctx, client.ObjectKey{Name: crdName}, crd); err != nil {
			t.Fatalf("the served CRD: %v", err)
		}
		var names []string
		for _, c := range crd.Spec.Versions[0].AdditionalPrinterColumns {
			names = append(names, c.Name)
		}
		return names
	}
	installed := columns()
	migrations := func() []string {
		t.Helper()
		list := &unstructured.UnstructuredList{}
		list.SetAPIVersion("netconf-migrator.harvesterhci.io/v1alpha1")
		list.SetKind("NADMigrationList")
		if err := env.Client.List(ctx, list); err != nil {
			t.Fatalf("listing NADMigrations: %v", err)
		}
		var names []string
		for _, u := range list.Items {
			names = append(names, u.GetName())
		}
		return names
	}
	if m := migrations(); len(m) != 1 {
		t.Fatalf("NADMigrations after install: %v, want the chart's one", m)
	}

	// The next version: a copy of the chart whose CRD gains a column.
	next, crdManifest := withPrinterColumn(t, first, "Test", ".metadata.uid")
	upgrade := action.NewUpgrade(cfg)
	upgrade.Namespace = ns
	if _, err := upgrade.Run("netconf-migrator", next, values); err != nil {
		t.Fatalf("helm upgrade: %v", err)
	}
	if got := columns(); strings.Join(got, ",") != strings.Join(installed, ",") {
		t.Fatalf("helm upgrade changed the served CRD (%v, was %v): Helm is documented not to", got, installed)
	}
	// The upgraded operator starts, built as the operator command builds
	// it (NewManager, then Setup), and applies its CRD.
	startOperator(t, env, ns, operator.Options{UpgradeCRD: true, Version: "v9.9.9", CRDManifest: crdManifest})
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		got := columns()
		return len(got) == len(installed)+1 && got[len(got)-1] == "Test", nil
	})
	if err != nil {
		t.Errorf("after the upgraded operator started, the served CRD's columns are %v, want %v and Test", columns(), installed)
	}

	uninstall := action.NewUninstall(cfg)
	if _, err := uninstall.Run("netconf-migrator"); err != nil {
		t.Fatalf("helm uninstall: %v", err)
	}
	if got := columns(); len(got) != len(installed)+1 {
		t.Errorf("after uninstall, the CRD's columns are %v", got)
	}
	if m := migrations(); len(m) != 1 {
		t.Errorf("NADMigrations after uninstall: %v, want the chart's one kept", m)
	}
}

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
		if strings.HasPrefix(f.Name, "crds/") && strings.Contains(string(data), crdName) {
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
		t.Fatal("the chart has no NADMigration CRD in crds/")
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
