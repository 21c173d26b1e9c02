package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

var (
	rehearsalCalm = flag.Duration("rehearsal-calm", 2*time.Second, "how long TestRehearsal's writers and GitOps re-applier run at each release before its faults (make rehearsal: longer)")
	rehearsalNADs = flag.Int("rehearsal-nads", 10, "nested NADs TestRehearsal seeds beside the population of every form (make rehearsal: more)")
	// A kube-apiserver stopped with SIGTERM waits for its watches to end
	// (every informer's, reconnecting as they go) until a kubelet kills it,
	// 30 s later (RestartAPIServer's grace): each restart is a 30 s outage.
	// make rehearsal keeps that (0s, kube-apiserver's default); the short
	// run gives the watches 2 s, and the restart takes about 4 s.
	rehearsalWatchGrace = flag.Duration("rehearsal-watch-grace", 2*time.Second, "TestRehearsal's kube-apiserver --shutdown-watch-termination-grace-period (0: its default; make rehearsal: 0)")
)

// upgradeImage is, for each release a cluster is upgraded to, the tag of
// harvester/harvester whose package/upgrade/upgrade_manifests.sh the
// upgrade runs, from the Go module proxy, and the exact previous version
// the upgrade passes to it (UPGRADE_PREVIOUS_VERSION). The proxy serves
// v1.5.0, v1.6.0, v1.8.0 and v1.8.1, not v1.7.x or v1.9: the step to v1.7
// runs v1.6.0's script and the step to v1.9 v1.8.1's, the nearest ones
// served (their pre_upgrade_manifest is the same as the release's own as
// far as the pre-hook is concerned: it sources the file; v1.8 added the
// rke2-multus check after it).
var upgradeImage = map[harvester.Release]struct{ tag, previous, why string }{
	harvester.V16: {"v1.6.0", "v1.5.0", ""},
	harvester.V17: {"v1.6.0", "v1.6.0", "v1.7.x is not served by the module proxy: the nearest earlier tag"},
	harvester.V18: {"v1.8.0", "v1.7.0", ""},
	harvester.V19: {"v1.8.1", "v1.8.0", "v1.9 is not served by the module proxy: the nearest earlier tag"},
}

// harvesterModule returns the directory of github.com/harvester/harvester
// at tag in the module cache, downloading it from the module proxy.
func harvesterModule(t *testing.T, tag string) string {
	t.Helper()
	cmd := exec.Command("go", "mod", "download", "-json", "github.com/harvester/harvester@"+tag)
	cmd.Dir = t.TempDir()
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod download github.com/harvester/harvester@%s: %v\n%s", tag, err, out)
	}
	var mod struct{ Dir, Error string }
	if err := json.Unmarshal(out, &mod); err != nil || mod.Dir == "" {
		t.Fatalf("go mod download github.com/harvester/harvester@%s: %v %s", tag, err, mod.Error)
	}
	return mod.Dir
}

// shellFunction returns the definition of the bash function name in
// script, from its `name() {` line to the `}` that closes it at the start
// of a line.
func shellFunction(t *testing.T, script, name string) string {
	t.Helper()
	var b strings.Builder
	in := false
	sc := bufio.NewScanner(strings.NewReader(script))
	for sc.Scan() {
		line := sc.Text()
		if !in && strings.HasPrefix(line, name+"() {") {
			in = true
		}
		if in {
			b.WriteString(line + "\n")
			if line == "}" {
				return b.String()
			}
		}
	}
	t.Fatalf("upgrade_manifests.sh defines no function %s", name)
	return ""
}

// harvesterUpgrade is the part of Harvester's upgrade Job that runs
// before the charts change, taken from upgrade_manifests.sh at tag:
// pre_upgrade_manifest (and, from v1.8, the rke2-multus check it calls),
// run under `bash -e` as the Job runs the script, with the migrations
// directory the upgrade image copies to /usr/local/share under root and
// netconf-migrator's pre-hook shipped as the previous version's
// pre-hook.sh.
func harvesterUpgrade(t *testing.T, dir, tag, previous string) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, "package", "upgrade", "upgrade_manifests.sh"))
	if err != nil {
		t.Fatal(err)
	}
	script := string(raw)
	pre := shellFunction(t, script, "pre_upgrade_manifest")
	if !strings.Contains(pre, `source "/usr/local/share/migrations/upgrade_manifests/${UPGRADE_PREVIOUS_VERSION}/pre-hook.sh"`) {
		t.Fatalf("pre_upgrade_manifest at %s no longer sources the previous version's pre-hook.sh:\n%s", tag, pre)
	}
	var funcs []string
	if strings.Contains(pre, "patch_rke2_multus_config") {
		funcs = append(funcs, shellFunction(t, script, "patch_rke2_multus_config"))
	}
	funcs = append(funcs, pre)
	root := t.TempDir()
	hookDir := filepath.Join(root, "usr", "local", "share", "migrations", "upgrade_manifests", previous)
	if err := os.MkdirAll(hookDir, 0o755); err != nil {
		t.Fatal(err)
	}
	repo, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	hook, err := os.ReadFile(filepath.Join(repo, "config", "harvester-upgrade", "pre-hook.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(hookDir, "pre-hook.sh"), hook, 0o644); err != nil {
		t.Fatal(err)
	}
	body := strings.ReplaceAll(strings.Join(funcs, "\n"), "/usr/local/share/", root+"/usr/local/share/")
	path := filepath.Join(root, "upgrade_manifests.sh")
	s := "#!/bin/bash -e\n" +
		fmt.Sprintf("UPGRADE_TMP_DIR=%s/tmp\nUPGRADE_PREVIOUS_VERSION=%s\n", root, previous) +
		body + "\npre_upgrade_manifest\n" +
		"case $- in *e*) ;; *) echo \"the pre-hook turned errexit off\" >&2; exit 3 ;; esac\n" +
		"echo \"Upgrading charts\"\n"
	if err := os.WriteFile(path, []byte(s), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

// nadEvents records, from a watch of every NAD, when each NAD was gone
// and when it was back: how long a replacement left it absent.
type nadEvents struct {
	mu      sync.Mutex
	goneAt  map[string]time.Time
	absence []time.Duration
}

func watchNADs(t *testing.T, env *testenv.Env) *nadEvents {
	t.Helper()
	ev := &nadEvents{goneAt: map[string]time.Time{}}
	c, err := cache.New(env.Config, cache.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	inf, err := c.GetInformer(context.Background(), &nadv1.NetworkAttachmentDefinition{})
	if err != nil {
		t.Fatal(err)
	}
	key := func(obj any) string {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			return d.Key
		}
		n := obj.(*nadv1.NetworkAttachmentDefinition)
		return n.Namespace + "/" + n.Name
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			ev.mu.Lock()
			defer ev.mu.Unlock()
			// Only the tool's replacements count: a create of the tool's
			// carries the uid it replaces (a writer's delete and create
			// again, or a person's kubectl replace --force, are not).
			if at, ok := ev.goneAt[key(obj)]; ok && obj.(*nadv1.NetworkAttachmentDefinition).Annotations[replace.AnnotationReplaces] != "" {
				ev.absence = append(ev.absence, time.Since(at))
			}
			delete(ev.goneAt, key(obj))
		},
		DeleteFunc: func(obj any) {
			ev.mu.Lock()
			defer ev.mu.Unlock()
			ev.goneAt[key(obj)] = time.Now()
		},
	}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = c.Start(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	if !c.WaitForCacheSync(ctx) {
		t.Fatal("the NAD watch did not sync")
	}
	return ev
}

// take returns the absences recorded since the last call.
func (e *nadEvents) take() []time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := e.absence
	e.absence = nil
	return out
}

func quantiles(d []time.Duration) string {
	if len(d) == 0 {
		return "none"
	}
	s := slices.Clone(d)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return fmt.Sprintf("%d: p50 %s, p99 %s, max %s", len(s), at(0.5).Round(time.Millisecond), at(0.99).Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// seeded is a NAD of the population and what may happen to it.
type seeded struct {
	ns, name, config string
	labels           map[string]string
	annotations      map[string]string
	// usedBy: a VM references it; running: its VMI runs too.
	usedBy  string
	running bool
	setting bool
}

func (s seeded) ref() string { return s.ns + "/" + s.name }

// fixableOn says whether the tool can fix the NAD on release r, as
// docs/harvester.md's table says, given whether a double-encoded NAD is
// still stored on its cluster network.
func (s seeded) fixableOn(r harvester.Release, form netconf.Form, blockedCN bool) bool {
	switch {
	case form == netconf.FormTruncated || form == netconf.FormInvalid || s.running:
		return false
	case !r.AtLeast(harvester.V16):
		return true
	case s.setting || s.usedBy != "" || form == netconf.FormDoubleEncoded:
		return false
	case r.AtLeast(harvester.V17) && blockedCN:
		return false
	}
	return true
}

// TestRehearsal takes one control plane through the path Harvester
// supports, one minor release at a time (v1.5, v1.6, v1.7, v1.8, v1.9),
// as Harvester upgrades it, with netconf-migrator installed all along:
// first 0.2 (commit02), then this build over it. Each is installed from its
// own chart (operator.fixLegacy=Replace; this build's with
// operator.replaceBudgetSeconds=10), and its webhook and operator run as
// processes with the rendered arguments (addresses and certificate
// directory aside), the Pod's downward API, and a kubeconfig that acts as
// the chart's ServiceAccount under the chart's RBAC. At each step:
//
//   - Harvester's upgrade Job's pre_upgrade_manifest, taken from
//     upgrade_manifests.sh of the release's upgrade image (the module
//     proxy's nearest tag), sources netconf-migrator's pre-hook as the
//     previous version's pre-hook.sh, under bash -e, as the Job's
//     ServiceAccount (harvester, bound to cluster-admin by Harvester's
//     chart), while the previous release's webhooks and controllers serve;
//   - then the charts change: the stand-ins of the previous release stop
//     (from v1.6: its agent first, then the rest: the window in which a
//     deleted NAD keeps the agent's finalizer), Harvester's CRDs of the new
//     release are applied, and the new release's webhooks and controllers
//     start;
//   - writers create and delete NADs, a GitOps controller re-applies its
//     nested manifest, our webhook goes down for a moment (NADs stored
//     behind its back), the operator is SIGKILLed while a replacement is
//     open and its container restarts, the kube-apiserver restarts and
//     etcd stalls;
//   - once the new release runs, NADs it does not let the tool fix are
//     stored in a namespace of the step's own (a running VM's and a
//     stopped VM's nested NADs, a double-encoded one on a cluster network
//     it blocks from v1.7, a truncated one), and before the step ends
//     their advice, as this release's NADMigration gives it, is followed
//     on this release, and each of them is flat after.
//
// Checked at the end of every step: no NAD is lost or comes back after a
// writer deleted it, none is left terminating, every NAD the release lets
// the tool fix is flat, every one it does not is reported by the
// pre-hook's NADMigration with advice, no backup is open, the missing-NAD
// gauge reads 0, the GitOps controller's NAD is flat and its re-applies
// change nothing. At the end, the tenant's own such NADs, kept legacy
// through every release, get the last release's advice followed (a
// running VM stopped, a stopped VM's network taken out and put back, a
// double-encoded NAD replaced with Harvester's webhook stopped, a
// truncated one written again) and are fixed. Each step's row of the
// timeline is logged as REHEARSAL, with where its time went and what the
// invariants waited on (make rehearsal prints them).
func TestRehearsal(t *testing.T) {
	ctx := context.Background()
	opts, err := envOptions()
	if err != nil {
		t.Fatal(err)
	}
	helmChartConfig := &apiextensionsv1.CustomResourceDefinition{
		ObjectMeta: metav1.ObjectMeta{Name: "helmchartconfigs.helm.cattle.io"},
		Spec: apiextensionsv1.CustomResourceDefinitionSpec{Group: "helm.cattle.io", Scope: apiextensionsv1.NamespaceScoped,
			Names: apiextensionsv1.CustomResourceDefinitionNames{Plural: "helmchartconfigs", Singular: "helmchartconfig", Kind: "HelmChartConfig", ListKind: "HelmChartConfigList"},
			Versions: []apiextensionsv1.CustomResourceDefinitionVersion{{Name: "v1", Served: true, Storage: true,
				Schema: &apiextensionsv1.CustomResourceValidation{OpenAPIV3Schema: &apiextensionsv1.JSONSchemaProps{Type: "object", XPreserveUnknownFields: ptrTrue()}}}}}}
	opts.CRDs = append(opts.CRDs, helmChartConfig)
	opts.Namespaces = append(opts.Namespaces, harvester.SystemNamespace)
	if *rehearsalWatchGrace > 0 {
		opts.APIServerFlags = map[string]string{"shutdown-watch-termination-grace-period": rehearsalWatchGrace.String()}
	}
	env := testenv.StartT(t, opts)
	bin := testenv.BuildBinary(t)
	c := env.Client

	// The upgrade Job's identity: ServiceAccount harvester, which
	// Harvester's chart binds to cluster-admin (deploy/charts/harvester/
	// templates/rbac.yaml at every tag run here).
	for _, tag := range []string{"v1.6.0", "v1.8.0", "v1.8.1"} {
		rbac, err := os.ReadFile(filepath.Join(harvesterModule(t, tag), "deploy", "charts", "harvester", "templates", "rbac.yaml"))
		if err != nil || !regexp.MustCompile(`(?s)kind: ClusterRoleBinding\s+metadata:\s+.*?name: harvester\s.*?name: cluster-admin\s+subjects:\s+- kind: ServiceAccount\s+name: harvester`).Match(rbac) {
			t.Fatalf("Harvester %s's chart no longer binds its ServiceAccount harvester to cluster-admin (%v): the upgrade Job's rights here are wrong", tag, err)
		}
	}
	harvester.Create(t, c,
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: harvester.SystemNamespace, Name: "harvester"}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "harvester"},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
			Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "harvester", Namespace: harvester.SystemNamespace}}})
	jobKubeconfig := asServiceAccount(t, env, harvester.SystemNamespace, "harvester")
	// v1.8's pre_upgrade_manifest checks rke2-multus's HelmChartConfig after
	// the pre-hook; an earlier upgrade made it (the first one sleeps 10 s).
	hcc := &unstructured.Unstructured{}
	hcc.SetAPIVersion("helm.cattle.io/v1")
	hcc.SetKind("HelmChartConfig")
	hcc.SetNamespace("kube-system")
	hcc.SetName("rke2-multus")
	hcc.Object["spec"] = map[string]any{"failurePolicy": "abort"}
	harvester.Create(t, c, hcc)

	// The population a real cluster has.
	harvester.Create(t, c, harvester.NewClusterNetwork("mgmt", 0), harvester.NewClusterNetwork("cn2", 0))
	tenant, writerNS, gitopsNS := "rh-tenant", "rh-writer", "rh-gitops"
	for _, ns := range []string{tenant, writerNS, gitopsNS, harvester.SystemNamespace} {
		if err := env.CreateNamespace(ctx, ns, map[string]string{harvester.NamespaceLabel: "true"}); err != nil {
			t.Fatal(err)
		}
		n := &corev1.Namespace{}
		if err := c.Get(ctx, client.ObjectKey{Name: ns}, n); err != nil {
			t.Fatal(err)
		}
		if n.Labels[harvester.NamespaceLabel] != "true" {
			n.Labels[harvester.NamespaceLabel] = "true"
			if err := c.Update(ctx, n); err != nil {
				t.Fatal(err)
			}
		}
	}
	vlanLabels := func(cn string, vlan int) map[string]string {
		return map[string]string{harvester.LabelClusterNetwork: cn, harvester.LabelNetworkType: "L2VlanNetwork", harvester.LabelVlanID: strconv.Itoa(vlan)}
	}
	// The settings' values, and the hash label their controllers find
	// their NADs by (test/harvester/settings.go).
	settingValues := map[string]string{
		"storage-network":      `{"clusterNetwork":"mgmt","vlan":70,"range":"10.52.0.0/24"}`,
		"rwx-network":          `{"share-storage-network":false,"network":{"clusterNetwork":"mgmt","vlan":71,"range":"10.53.0.0/24"}}`,
		"vm-migration-network": `{"clusterNetwork":"mgmt","vlan":72,"range":"10.54.0.0/24"}`,
	}
	settingNADs := map[string]string{
		"storage-network":      harvester.SystemNamespace + "/storagenetwork-r7k2p",
		"rwx-network":          harvester.SystemNamespace + "/rwx-network-b8m4q",
		"vm-migration-network": harvester.SystemNamespace + "/vm-migration-network-x2c9d",
	}
	settingLabels := func(setting, value string, vlan int) map[string]string {
		l := vlanLabels("mgmt", vlan)
		l[harvester.SettingHashLabel(setting)] = harvester.SettingHash(setting, value)
		return l
	}
	nestedOn := func(cn, name string, vlan int) string {
		return fmt.Sprintf(`{"NetConf":{"cniVersion":"0.3.1","name":"%s","type":"bridge","ipam":{}},"bridge":"%s-br","promiscMode":true,"vlan":%d}`, name, cn, vlan)
	}
	flatOn := func(cn, name string, vlan int) string {
		return fmt.Sprintf(`{"cniVersion":"0.3.1","name":"%s","type":"bridge","bridge":"%s-br","promiscMode":true,"vlan":%d,"ipam":{}}`, name, cn, vlan)
	}
	var pop []seeded
	for i := range *rehearsalNADs {
		name := fmt.Sprintf("nested-%03d", i)
		pop = append(pop, seeded{ns: tenant, name: name, config: nestedOn("mgmt", name, 100+i), labels: vlanLabels("mgmt", 100+i)})
	}
	pop = append(pop,
		seeded{ns: tenant, name: "flat", config: flatOn("mgmt", "flat", 50), labels: vlanLabels("mgmt", 50)},
		seeded{ns: tenant, name: "truncated", config: `{"cniVersion":"0.3.1","ipam":{},"name":"truncated","type":"bridge"}`, labels: vlanLabels("mgmt", 51)},
		seeded{ns: tenant, name: "stopped-vm", config: nestedOn("mgmt", "stopped-vm", 52), labels: vlanLabels("mgmt", 52), usedBy: "vm-stopped"},
		seeded{ns: tenant, name: "running-vm", config: nestedOn("mgmt", "running-vm", 53), labels: vlanLabels("mgmt", 53), usedBy: "vm-running", running: true},
		// Another controller's labels and annotations, kept by every fix.
		seeded{ns: tenant, name: "others", config: nestedOn("mgmt", "others", 54), labels: map[string]string{harvester.LabelClusterNetwork: "mgmt", harvester.LabelNetworkType: "L2VlanNetwork", harvester.LabelVlanID: "54", "app.kubernetes.io/managed-by": "fleet"},
			annotations: map[string]string{"objectset.rio.cattle.io/id": "fleet-agent", "example.com/owner": "team-a"}},
		// Double-encoded, no VM: on v1.5 only a replacement fixes it (the
		// webhook cannot decode it, so refuses every update): 0.2's
		// operator is killed in the middle of its replacement.
		seeded{ns: tenant, name: "double", config: strconv.Quote(flatOn("mgmt", "double", 55)), labels: vlanLabels("mgmt", 55)},
		// v1.7's blocking cleanup: a double-encoded NAD beside nested ones.
		seeded{ns: tenant, name: "cn2-double", config: strconv.Quote(flatOn("cn2", "cn2-double", 60)), labels: vlanLabels("cn2", 60), usedBy: "vm-cn2", running: true},
		seeded{ns: tenant, name: "cn2-nested-a", config: nestedOn("cn2", "cn2-nested-a", 61), labels: vlanLabels("cn2", 61)},
		seeded{ns: tenant, name: "cn2-nested-b", config: nestedOn("cn2", "cn2-nested-b", 62), labels: vlanLabels("cn2", 62)},
		// The NADs of Harvester's settings: fixed in place where the
		// release allows, never replaced (their controllers own them).
		seeded{ns: harvester.SystemNamespace, name: "storagenetwork-r7k2p", setting: true, config: `{"NetConf":{"cniVersion":"0.3.1","type":"bridge","ipam":{"type":"whereabouts","range":"10.52.0.0/24"}},"bridge":"mgmt-br","promiscMode":true,"vlan":70}`,
			labels: settingLabels("storage-network", settingValues["storage-network"], 70), annotations: map[string]string{harvester.StorageNetworkAnnotation: "true"}},
		seeded{ns: harvester.SystemNamespace, name: "rwx-network-b8m4q", setting: true, config: `{"NetConf":{"cniVersion":"0.3.1","type":"bridge","ipam":{"type":"whereabouts","range":"10.53.0.0/24"}},"bridge":"mgmt-br","promiscMode":true,"vlan":71}`,
			labels: settingLabels("rwx-network", settingValues["rwx-network"], 71), annotations: map[string]string{harvester.RWXNetworkAnnotation: "true"}},
		seeded{ns: harvester.SystemNamespace, name: "vm-migration-network-x2c9d", setting: true, config: `{"NetConf":{"cniVersion":"0.3.1","type":"bridge","ipam":{"type":"whereabouts","range":"10.54.0.0/24"}},"bridge":"mgmt-br","promiscMode":true,"vlan":72}`,
			labels: settingLabels("vm-migration-network", settingValues["vm-migration-network"], 72), annotations: map[string]string{harvester.VMMigrationAnnotation: "true"}},
	)
	bySeed := map[string]seeded{}
	for _, s := range pop {
		bySeed[s.ref()] = s
	}
	vms := []client.Object{
		harvester.NewVM(tenant, "vm-stopped", "stopped-vm"),
		harvester.NewVM(tenant, "vm-running", "running-vm"), harvester.NewVMI(tenant, "vm-running", "running-vm"),
		harvester.NewVM(tenant, "vm-cn2", "cn2-double"), harvester.NewVMI(tenant, "vm-cn2", "cn2-double"),
	}
	for _, setting := range []string{"storage-network", "rwx-network", "vm-migration-network"} {
		vms = append(vms, harvester.NewSetting(setting, settingValues[setting], settingNADs[setting]))
	}

	release := harvester.V15
	h, err := harvester.Start(ctx, env, release)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Remove(ctx) })
	// The double-encoded NAD carries Harvester's finalizers from its
	// creation, as one stored flat and rewritten behind the webhooks' back
	// does: Harvester's controllers cannot put them on later (its webhooks
	// refuse every update of a config they cannot decode, the finalizers'
	// included), and without them its deletion would end at once and
	// leave no replacement open.
	doubleRef := client.ObjectKey{Namespace: tenant, Name: "double"}
	h.Pause(func() {
		harvester.Create(t, c, vms...)
		var objs []client.Object
		for _, s := range pop {
			n := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name, Labels: s.labels, Annotations: s.annotations}}
			if s.ref() == doubleRef.String() {
				n.Finalizers = release.Finalizers()
			}
			n.Spec.Config = s.config
			objs = append(objs, n)
		}
		if err := env.CreateMany(ctx, objs); err != nil {
			t.Fatal(err)
		}
	})
	h.Settle(t)
	// The settings' NADs as seeded: the tool never deletes one (Harvester
	// finds each by its hash label and makes it anew itself), so each
	// keeps its UID through every step.
	settingUIDs := map[string]types.UID{}
	for _, s := range pop {
		if s.setting {
			n := &nadv1.NetworkAttachmentDefinition{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: s.name}, n); err != nil {
				t.Fatal(err)
			}
			settingUIDs[s.ref()] = n.UID
		}
	}
	events := watchNADs(t, env)

	// netconf-migrator as installed: the webhook, and the operator as its
	// Deployment's container (restarted in the same Pod after a kill), each
	// with its chart's rendered arguments, as its chart's ServiceAccount
	// under its chart's RBAC.
	var hookPause atomic.Int64 // how long our webhook's Pod takes to come back
	hookPause.Store(int64(time.Second))
	// While set, our webhook's Pod comes back only once it is closed.
	var hookHold atomic.Pointer[chan struct{}]
	webhookPause := func() time.Duration {
		if held := hookHold.Load(); held != nil {
			<-*held
		}
		return time.Duration(hookPause.Load())
	}
	webhookPort, err := testenv.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	webhookURL := fmt.Sprintf("https://localhost:%d", webhookPort)
	asOperator := asServiceAccount(t, env, ownNamespace, "netconf-migrator-operator")
	asWebhook := asServiceAccount(t, env, ownNamespace, "netconf-migrator-webhook")
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ownNamespace, Name: "netconf-migrator-operator-5c8d7-rh"},
		Spec: corev1.PodSpec{ServiceAccountName: "netconf-migrator-operator", Containers: []corev1.Container{{Name: "operator", Image: "netconf-migrator"}}}}
	harvester.Create(t, c, pod)
	if err := c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
		t.Fatal(err)
	}
	// netconf-migrator 0.2 (commit02, the last build that kept its backups
	// beside the webhook), installed from its own chart with
	// operator.fixLegacy=Replace: its webhook and operator run first, and
	// are upgraded to this build part way (below).
	old := buildAt(t, commit02)
	was := installChart(t, env, filepath.Join(checkout(t, commit02), "config", "chart", "netconf-migrator"), ownNamespace,
		chartInstall{values: map[string]any{"operator": map[string]any{"fixLegacy": "Replace"}}, webhookURL: webhookURL})
	oldArgs := append(was.args, "--kubeconfig", asOperator)
	markDeploymentsReady(t, env, ownNamespace)
	hook := runWebhook(t, env, old, append(was.webhookArgs, "--kubeconfig", asWebhook), "netconf-migrator-webhook-6f4d9-rh", tenant,
		webhookPause)
	// This build's arguments and metrics address, chosen when it is
	// installed (a port chosen now could be taken by then).
	var metrics string
	var opArgs []string
	// The kubelet restarts the container whenever it ends (a replica that
	// loses its leader's Lease while the API server is down exits, by
	// design), in the same Pod.
	var opMu sync.Mutex
	held := false       // its Pod is being drained: not restarted
	upgradedOn := false // this build runs, not 0.2
	// launch starts the operator's container of the version installed.
	launch := func() *container {
		if !upgradedOn {
			return runContainer(t, old, pod, oldArgs)
		}
		return runContainer(t, bin, pod, opArgs)
	}
	// Harvester's controllers are down until 0.2 is killed: the deletion
	// of the NAD it replaces waits on their finalizers.
	h.Controllers.SetDown(true)
	op := launch()
	opStarts := 1
	stopKubelet := make(chan struct{})
	kubeletDone := make(chan struct{})
	go func() {
		defer close(kubeletDone)
		for {
			opMu.Lock()
			cur := op
			opMu.Unlock()
			select {
			case <-stopKubelet:
				return
			case <-cur.exited:
			}
			time.Sleep(time.Second)
			opMu.Lock()
			if op == cur && !held {
				// As a kubelet restarts it (without the back-off: the
				// API server's restart makes it crash-loop for seconds).
				lines := strings.Split(strings.TrimSpace(cur.logs()), "\n")
				t.Logf("the operator's container ended by itself (%v): %s", cur.cmd.ProcessState, lines[len(lines)-1])
				op = launch()
				opStarts++
			}
			opMu.Unlock()
		}
	}()
	t.Cleanup(func() { close(stopKubelet); <-kubeletDone })
	restartOperator := func() {
		opMu.Lock()
		defer opMu.Unlock()
		op.kill()
		op = launch()
		opStarts++
	}
	// drain stops the operator's Pod for a while (a node drain), until
	// undrain.
	drain := func() {
		opMu.Lock()
		defer opMu.Unlock()
		held = true
		op.kill()
	}
	undrain := func() {
		opMu.Lock()
		defer opMu.Unlock()
		held = false
		op = launch()
		opStarts++
	}
	operatorLog := func() string {
		opMu.Lock()
		defer opMu.Unlock()
		l := op.logs()
		if i := len(l) - 6000; i > 0 {
			l = l[i:]
		}
		return l
	}

	// The tool upgrades itself, on v1.5, with one of 0.2's replacements
	// open: 0.2 is killed once it deleted the double-encoded NAD, whose
	// deletion then finishes. This build is installed over it through the
	// same path (its chart applied, its Deployment's new Pod), and the
	// administrator moves 0.2's backups as docs/operations.md says.
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 3*time.Minute, true, func(context.Context) (bool, error) {
		n := &nadv1.NetworkAttachmentDefinition{}
		return c.Get(ctx, doubleRef, n) == nil && n.DeletionTimestamp != nil, nil
	})
	if err != nil {
		opMu.Lock()
		var about []string
		for _, l := range strings.Split(op.logs(), "\n") {
			if strings.Contains(l, doubleRef.String()) || strings.Contains(l, `"level":"error"`) {
				about = append(about, l)
			}
		}
		opMu.Unlock()
		t.Fatalf("waiting for 0.2's operator to delete %s to replace it: %v\nwhat it logged of it, and its errors:\n%s", doubleRef, err, strings.Join(about, "\n"))
	}
	drain()
	earlier := &corev1.SecretList{}
	if err := c.List(ctx, earlier, client.InNamespace(ownNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil ||
		!slices.ContainsFunc(earlier.Items, func(s corev1.Secret) bool { return s.Annotations[replace.AnnotationNAD] == doubleRef.String() }) {
		t.Fatalf("0.2 left no backup of %s beside the webhook (%v) while it was deleted", doubleRef, err)
	}
	h.Controllers.SetDown(false)
	waitFor(t, "Harvester's controllers to finish the deletion 0.2 started", func() (bool, error) {
		return apierrors.IsNotFound(c.Get(ctx, doubleRef, &nadv1.NetworkAttachmentDefinition{})), nil
	})
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	// Its webhook's Pod goes, and this build's comes up behind the same
	// Service (the chart's webhook configuration, applied again, keeps the
	// CA bundle 0.2's webhook injected; this build's reads the same
	// certificate Secret).
	hook.stop()
	// The rehearsal's operator answers a replacement held by a finalizer no
	// controller removes (the v1.6 agent's) within seconds, not the default
	// 2 minutes: the figure is the chart's value.
	upgraded := upgradeChart(t, env, was, filepath.Join(root, "config", "chart", "netconf-migrator"), ownNamespace,
		chartInstall{values: map[string]any{"operator": map[string]any{"fixLegacy": "Replace", "replaceBudgetSeconds": 10}}, webhookURL: webhookURL})
	markDeploymentsReady(t, env, ownNamespace)
	hook = runWebhook(t, env, bin, append(upgraded.webhookArgs, "--kubeconfig", asWebhook), "netconf-migrator-webhook-9b1e4-rh", tenant,
		webhookPause)
	if out, err := exec.Command(bin, "backups", "move", "--from", ownNamespace, "--backup-namespace", backupNamespace, "--yes", "--kubeconfig", env.KubeconfigPath).CombinedOutput(); err != nil {
		t.Fatalf("backups move after upgrading from 0.2: %v\n%s", err, out)
	}
	newPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ownNamespace, Name: "netconf-migrator-operator-9b1e4-rh"},
		Spec: corev1.PodSpec{ServiceAccountName: "netconf-migrator-operator", Containers: []corev1.Container{{Name: "operator", Image: "netconf-migrator"}}}}
	harvester.Create(t, c, newPod)
	if err := c.Get(ctx, client.ObjectKeyFromObject(newPod), newPod); err != nil {
		t.Fatal(err)
	}
	port, err := testenv.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	opMu.Lock()
	metrics = fmt.Sprintf("127.0.0.1:%d", port)
	// The later flags win over the rendered ones.
	upgradedOn, pod, opArgs = true, newPod, append(upgraded.args, "--kubeconfig", asOperator, "--metrics-bind-address", metrics, "--metrics-secure=false")
	opMu.Unlock()
	upgradedAt := time.Now()
	undrain()
	waitFor(t, "this build to create again the NAD 0.2 was replacing", func() (bool, error) {
		n := &nadv1.NetworkAttachmentDefinition{}
		return c.Get(ctx, doubleRef, n) == nil && netconf.Normalize([]byte(n.Spec.Config)).Form == netconf.FormFlat, nil
	})
	toolUpgrade := fmt.Sprintf("netconf-migrator 0.2 (%s) killed mid-replacement and upgraded to this build; the NAD back %s after this build started",
		commit02[:7], time.Since(upgradedAt).Round(time.Millisecond))
	t.Logf("REHEARSAL %s", toolUpgrade)

	// The GitOps controller: its nested manifest applied every second, as
	// Argo CD or Fleet re-apply what drifted; every apply that changed the
	// stored NAD is counted.
	var gitopsApplies, gitopsWrites atomic.Int64
	stopWriters := make(chan struct{})
	var writers sync.WaitGroup
	writers.Go(func() {
		last := ""
		for {
			u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
				"metadata": map[string]any{"namespace": gitopsNS, "name": "gitops-vlan", "labels": map[string]any{harvester.LabelClusterNetwork: "mgmt"}},
				"spec":     map[string]any{"config": nestedOn("mgmt", "gitops-vlan", 80)}}}
			if err := c.Patch(ctx, u, client.Apply, client.FieldOwner("argocd-controller"), client.ForceOwnership); err == nil {
				gitopsApplies.Add(1)
				if rv := u.GetResourceVersion(); rv != last {
					if last != "" {
						gitopsWrites.Add(1)
					}
					last = rv
				}
			}
			select {
			case <-stopWriters:
				return
			case <-time.After(time.Second):
			}
		}
	})
	// The writer: NADs created (a client from before the upgrade writes
	// them nested) and deleted; a NAD it deleted must never come back.
	var deletedMu sync.Mutex
	deleted := map[string]bool{}
	var pauseDeletes atomic.Bool
	writers.Go(func() {
		for i := 0; ; i++ {
			name := fmt.Sprintf("w-%04d", i)
			n := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: writerNS, Name: name, Labels: vlanLabels("mgmt", 200+i%3000)}}
			n.Spec.Config = nestedOn("mgmt", name, 200+i%3000)
			_ = c.Create(ctx, n)
			if i%3 == 2 && !pauseDeletes.Load() {
				victim := fmt.Sprintf("w-%04d", i-2)
				old := &nadv1.NetworkAttachmentDefinition{}
				// A NAD being deleted already (a replacement's delete) is
				// left alone, as a GitOps prune leaves it: its delete would
				// be a no-op the API server does not record.
				if err := c.Get(ctx, client.ObjectKey{Namespace: writerNS, Name: victim}, old); err == nil && old.DeletionTimestamp == nil {
					if err := c.Delete(ctx, old, client.Preconditions{UID: &old.UID}); err == nil || apierrors.IsNotFound(err) {
						deletedMu.Lock()
						deleted[victim] = true
						deletedMu.Unlock()
					}
				}
			}
			select {
			case <-stopWriters:
				return
			case <-time.After(700 * time.Millisecond):
			}
		}
	})
	t.Cleanup(func() {
		select {
		case <-stopWriters:
		default:
			close(stopWriters)
		}
		writers.Wait()
	})

	type row struct {
		step, before, after, pre, person, faults, absence string
		replaced                                          int
		took                                              time.Duration
		phases                                            []string // how long each part of the step took
	}
	var rows []row
	formsOf := func() (map[netconf.Form]int, map[string]nadv1.NetworkAttachmentDefinition) {
		list := &nadv1.NetworkAttachmentDefinitionList{}
		if err := c.List(ctx, list); err != nil {
			t.Fatal(err)
		}
		counts, all := map[netconf.Form]int{}, map[string]nadv1.NetworkAttachmentDefinition{}
		for _, n := range list.Items {
			counts[netconf.Normalize([]byte(n.Spec.Config)).Form]++
			all[n.Namespace+"/"+n.Name] = n
		}
		return counts, all
	}
	formWords := func(m map[netconf.Form]int) string {
		var parts []string
		for f, n := range m {
			parts = append(parts, fmt.Sprintf("%s %d", f, n))
		}
		sort.Strings(parts)
		return strings.Join(parts, ", ")
	}
	blocked := func(all map[string]nadv1.NetworkAttachmentDefinition, cn string) bool {
		for _, n := range all {
			if n.Labels[harvester.LabelClusterNetwork] == cn && netconf.Normalize([]byte(n.Spec.Config)).Form == netconf.FormDoubleEncoded {
				return true
			}
		}
		return false
	}

	// check is the invariants at the end of a step on release r: it
	// waits (bounded) for the operator to converge, then reports what
	// does not hold.
	check := func(r harvester.Release) []string {
		var problems []string
		// What the check waited on, and for how long: the timeline's
		// invariants phase, explained.
		type held struct{ from, to time.Time }
		seen := map[string]*held{}
		start := time.Now()
		defer func() {
			var slow []string
			for p, h := range seen {
				if d := h.to.Sub(h.from); d > 5*time.Second {
					slow = append(slow, fmt.Sprintf("%s (from %s, for %s)", p, h.from.Sub(start).Round(100*time.Millisecond), d.Round(100*time.Millisecond)))
				}
			}
			if len(slow) > 0 {
				slices.Sort(slow)
				t.Logf("on %s the invariants waited on: %s", r, strings.Join(slow, "; "))
			}
		}()
		_ = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 3*time.Minute, true, func(context.Context) (bool, error) {
			defer func() {
				now := time.Now()
				for _, p := range problems {
					if h, ok := seen[p]; ok {
						h.to = now
					} else {
						seen[p] = &held{from: now, to: now}
					}
				}
			}()
			problems = nil
			_, all := formsOf()
			for ref, s := range bySeed {
				n, ok := all[ref]
				if !ok {
					problems = append(problems, ref+" is lost")
					continue
				}
				if n.DeletionTimestamp != nil {
					problems = append(problems, ref+" is left terminating")
				}
				if uid, ok := settingUIDs[ref]; ok && n.UID != uid {
					problems = append(problems, ref+", a setting's NAD, was deleted and created again")
				}
				f := netconf.Normalize([]byte(n.Spec.Config)).Form
				if f != netconf.FormFlat && s.fixableOn(r, f, blocked(all, s.labels[harvester.LabelClusterNetwork])) {
					problems = append(problems, fmt.Sprintf("%s is %s, which %s lets the tool fix", ref, f, r))
				}
				for k, v := range s.annotations {
					if n.Annotations[k] != v {
						problems = append(problems, fmt.Sprintf("%s lost its annotation %s", ref, k))
					}
				}
				for k, v := range s.labels {
					if n.Labels[k] != v {
						problems = append(problems, fmt.Sprintf("%s lost its label %s=%s", ref, k, v))
					}
				}
			}
			deletedMu.Lock()
			for name := range deleted {
				if _, ok := all[writerNS+"/"+name]; ok && all[writerNS+"/"+name].DeletionTimestamp == nil {
					problems = append(problems, writerNS+"/"+name+" came back after the writer deleted it")
				}
			}
			deletedMu.Unlock()
			for ref, n := range all {
				if strings.HasPrefix(ref, writerNS+"/") {
					if n.DeletionTimestamp != nil {
						problems = append(problems, ref+" is left terminating")
					} else if f := netconf.Normalize([]byte(n.Spec.Config)).Form; f != netconf.FormFlat && r.AtLeast(harvester.V16) == false {
						problems = append(problems, fmt.Sprintf("%s is %s", ref, f))
					} else if f != netconf.FormFlat && !(r.AtLeast(harvester.V17) && blocked(all, "mgmt")) {
						problems = append(problems, fmt.Sprintf("%s is %s, which %s lets the tool fix", ref, f, r))
					}
				}
			}
			// Each setting's controller still finds its one NAD by its hash
			// label: none would make a second one.
			for setting, want := range settingNADs {
				if !harvester.SettingReleases(setting, r) {
					continue
				}
				found, err := harvester.SettingNADs(ctx, c, setting, settingValues[setting])
				if err != nil || len(found) != 1 || found[0].Namespace+"/"+found[0].Name != want {
					var names []string
					for _, n := range found {
						names = append(names, n.Namespace+"/"+n.Name)
					}
					problems = append(problems, fmt.Sprintf("Harvester's %s controller would find %v as its NAD (%v), want %s", setting, names, err, want))
				}
			}
			if g, ok := all[gitopsNS+"/gitops-vlan"]; ok && netconf.Normalize([]byte(g.Spec.Config)).Form != netconf.FormFlat {
				problems = append(problems, "the GitOps controller's NAD is stored "+string(netconf.Normalize([]byte(g.Spec.Config)).Form))
			}
			backups := &corev1.SecretList{}
			if err := c.List(ctx, backups, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil || len(backups.Items) != 0 {
				problems = append(problems, fmt.Sprintf("%d backups open (%v)", len(backups.Items), err))
			}
			if v, ok := scrape("http://"+metrics+"/metrics", "netconf_migrator_missing_nads"); !ok || v != 0 {
				problems = append(problems, fmt.Sprintf("netconf_migrator_missing_nads reads %v (exported: %v)", v, ok))
			}
			return len(problems) == 0, nil
		})
		return problems
	}

	// seedAdviceTrial stores, in a namespace of its own, what no release
	// from v1.6 lets the tool fix, as release r runs: a running VM's and a
	// stopped VM's nested NADs, a running VM's double-encoded NAD on a
	// cluster network of its own (which, from v1.7, it blocks) and a
	// truncated NAD. The tenant's own such NADs wait for the last release;
	// these are there so that each release's advice is followed on that
	// release (followAdvice, at the end of the step). They are stored
	// behind both webhooks' backs, as by a client of an earlier Harvester
	// while ours was down: our webhook is held down (and checked down)
	// until Harvester's controllers are done with them, Harvester's
	// webhooks paused while they are stored. It returns the namespace and the
	// truncated NAD's full config, which its advice asks for.
	seedAdviceTrial := func(r harvester.Release, at int) (string, string) {
		ns := "rh-advice-" + strings.ReplaceAll(string(r), ".", "")
		cn := "adv" + strings.ReplaceAll(strings.TrimPrefix(string(r), "v"), ".", "")
		vlan := 3000 + 10*at
		trial := []seeded{
			{ns: ns, name: "truncated", config: `{"cniVersion":"0.3.1","ipam":{},"name":"truncated","type":"bridge"}`, labels: vlanLabels("mgmt", vlan)},
			{ns: ns, name: "stopped-vm", config: nestedOn("mgmt", "stopped-vm", vlan+1), labels: vlanLabels("mgmt", vlan+1), usedBy: "vm-stopped"},
			{ns: ns, name: "running-vm", config: nestedOn("mgmt", "running-vm", vlan+2), labels: vlanLabels("mgmt", vlan+2), usedBy: "vm-running", running: true},
			{ns: ns, name: "cn2-double", config: strconv.Quote(flatOn(cn, "cn2-double", vlan+3)), labels: vlanLabels(cn, vlan+3), usedBy: "vm-cn2", running: true},
		}
		// Held down until the trial is stored and Harvester's controllers
		// put their finalizers on it: their updates pass our webhook too,
		// which would rewrite the nested ones.
		release := make(chan struct{})
		hookHold.Store(&release)
		defer func() { hookHold.Store(nil); close(release) }()
		hook.signal(syscall.SIGKILL)
		if err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 5*time.Second, true, func(context.Context) (bool, error) {
			conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", webhookPort), time.Second)
			if err == nil {
				_ = conn.Close()
			}
			return err != nil, nil
		}); err != nil {
			t.Fatalf("our webhook still answers after its SIGKILL: %v", err)
		}
		h.Pause(func() {
			if err := env.CreateNamespace(ctx, ns, map[string]string{harvester.NamespaceLabel: "true"}); err != nil {
				t.Fatal(err)
			}
			harvester.Create(t, c, harvester.NewClusterNetwork(cn, 0),
				harvester.NewVM(ns, "vm-stopped", "stopped-vm"),
				harvester.NewVM(ns, "vm-running", "running-vm"), harvester.NewVMI(ns, "vm-running", "running-vm"),
				harvester.NewVM(ns, "vm-cn2", "cn2-double"), harvester.NewVMI(ns, "vm-cn2", "cn2-double"))
			for _, s := range trial {
				n := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: s.ns, Name: s.name, Labels: s.labels}}
				if netconf.Normalize([]byte(s.config)).Form == netconf.FormDoubleEncoded {
					// Its finalizers from its creation, as the tenant's
					// double-encoded NADs (above).
					n.Finalizers = r.Finalizers()
				}
				n.Spec.Config = s.config
				if err := c.Create(ctx, n); err != nil {
					t.Fatalf("storing %s for %s's advice: %v", s.ref(), r, err)
				}
			}
		})
		h.Settle(t)
		for _, s := range trial {
			n := &nadv1.NetworkAttachmentDefinition{}
			if err := c.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: s.name}, n); err != nil {
				t.Fatal(err)
			}
			if got, want := netconf.Normalize([]byte(n.Spec.Config)).Form, netconf.Normalize([]byte(s.config)).Form; got != want {
				t.Fatalf("%s was stored %s, not %s, with our webhook held down", s.ref(), got, want)
			}
			bySeed[s.ref()] = s
		}
		return ns, flatOn("mgmt", "truncated", vlan)
	}

	runPreHook := func(next harvester.Release) (int, string) {
		img := upgradeImage[next]
		script := harvesterUpgrade(t, harvesterModule(t, img.tag), img.tag, img.previous)
		cmd := exec.Command(script)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+jobKubeconfig, "NETCONF_MIGRATOR_WAIT=240")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		code := 0
		if err := cmd.Run(); err != nil {
			var exit *exec.ExitError
			if !errors.As(err, &exit) {
				t.Fatal(err)
			}
			code = exit.ExitCode()
		}
		return code, out.String()
	}

	// The pre-hook's NADMigration names each NAD that needs a person, with
	// advice; every legacy NAD the release does not let the tool fix must
	// be among them.
	checkReported := func(r harvester.Release, out string) (int, []string) {
		var problems []string
		m := regexp.MustCompile(`the operator runs NADMigration (\S+)`).FindStringSubmatch(out)
		if m == nil {
			return 0, []string{"the pre-hook ran no NADMigration:\n" + out}
		}
		nm := &v1alpha1.NADMigration{}
		if err := c.Get(ctx, client.ObjectKey{Name: m[1]}, nm); err != nil {
			return 0, []string{err.Error()}
		}
		reported := map[string]v1alpha1.NADOutcome{}
		for _, o := range nm.Status.NADs {
			reported[o.Namespace+"/"+o.Name] = o
		}
		_, all := formsOf()
		person := 0
		for ref, s := range bySeed {
			n := all[ref]
			f := netconf.Normalize([]byte(n.Spec.Config)).Form
			if f == netconf.FormFlat || f == netconf.FormEmpty {
				continue
			}
			person++
			o, ok := reported[ref]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("%s (%s) needs a person on %s, and NADMigration %s does not name it", ref, f, r, nm.Name))
			case o.Advice == "" && s.fixableOn(r, f, false) == false && f != netconf.FormTruncated:
				problems = append(problems, fmt.Sprintf("%s is reported without advice: %s", ref, o.Reason))
			}
		}
		return person, problems
	}

	steps := []harvester.Release{harvester.V16, harvester.V17, harvester.V18, harvester.V19}
	for _, next := range steps {
		start, from := time.Now(), release
		var phases []string
		lap := start
		phase := func(what string) {
			phases = append(phases, fmt.Sprintf("%s %s", what, time.Since(lap).Round(100*time.Millisecond)))
			lap = time.Now()
		}
		beforeForms, _ := formsOf()
		events.take()
		faults := []string{}
		if next == harvester.V16 {
			faults = append(faults, "netconf-migrator 0.2 killed mid-replacement, then upgraded")
		}

		// The writers and the GitOps controller run a while on this release.
		time.Sleep(*rehearsalCalm)

		// 1. The pre-hook, while this release's webhooks and controllers serve.
		phase("calm")
		code, out := runPreHook(next)
		phase("pre-hook")
		img := upgradeImage[next]
		t.Logf("upgrade to %s: Harvester %s's pre_upgrade_manifest (%s) sourced the pre-hook: exit %d\n%s", next, img.tag, img.why, code, out)
		if code != 0 || !strings.Contains(out, "Upgrading charts") {
			t.Errorf("upgrade to %s: the pre-hook stopped the upgrade (exit %d) with no NAD missing:\n%s", next, code, out)
		}
		person, reportProblems := checkReported(release, out)
		for _, p := range reportProblems {
			t.Errorf("upgrade to %s: %s", next, p)
		}

		// 2. The charts. Our webhook's and operator's Pods restart with the
		// upgrade's drains: legacy NADs are stored behind their backs
		// meanwhile, and Harvester's controllers put their finalizers on
		// them.
		hookPause.Store(int64(8 * time.Second))
		hook.signal(syscall.SIGKILL)
		drain()
		for i := range 3 {
			name := fmt.Sprintf("behind-%s-%d", strings.ReplaceAll(string(next), ".", ""), i)
			n := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: writerNS, Name: name, Labels: vlanLabels("mgmt", 4000+10*slices.Index(steps, next)+i)}}
			n.Spec.Config = nestedOn("mgmt", name, 4000+10*slices.Index(steps, next)+i)
			if err := c.Create(ctx, n); err != nil {
				t.Errorf("creating %s while our webhook is down: %v", name, err)
			}
		}
		h.Settle(t)
		phase("drain")
		faults = append(faults, "our webhook and operator drained")
		// From v1.6 the agent DaemonSet goes before the manager: the
		// operator, back, replaces the NADs stored behind its back, which
		// lose the manager's finalizer and keep the agent's. The writer's
		// own deletes wait meanwhile (theirs would be held the same way:
		// Harvester's hazard, not the tool's to clear).
		if release == harvester.V16 {
			pauseDeletes.Store(true)
			h.Controllers.SetAgentDown(true)
			faults = append(faults, "v1.6 agent gone before its manager")
		}
		undrain()
		phase("undrain")
		if release == harvester.V16 {
			err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
				list := &nadv1.NetworkAttachmentDefinitionList{}
				if err := c.List(ctx, list, client.InNamespace(writerNS)); err != nil {
					return false, nil
				}
				for _, n := range list.Items {
					if n.DeletionTimestamp != nil && slices.Equal(n.Finalizers, []string{harvester.FinalizerAgent}) {
						return true, nil
					}
				}
				return false, nil
			})
			if err != nil {
				t.Errorf("no replacement in the window with the v1.6 agent gone: %v", err)
			}
		}
		phase("agent window")
		// The previous release's network controller and webhooks go,
		// Harvester's CRDs of the new release are applied, the new
		// release starts.
		if err := h.GoDown(ctx); err != nil {
			t.Fatal(err)
		}
		// Down for a while: NAD writes are refused meanwhile (its
		// validator's failurePolicy is Fail).
		time.Sleep(*rehearsalCalm)
		dir := harvesterModule(t, img.tag)
		for _, f := range []string{"harvesterhci.io_settings.yaml", "harvesterhci.io_addons.yaml"} {
			if _, stderr, err := env.Kubectl(ctx, nil, "apply", "--server-side", "--force-conflicts", "-f", filepath.Join(dir, "deploy", "charts", "harvester-crd", "templates", f)); err != nil {
				t.Fatalf("applying Harvester %s's %s: %v\n%s", img.tag, f, err, stderr)
			}
		}
		faults = append(faults, "Harvester's webhooks and controllers down")
		release = next
		if h, err = harvester.Start(ctx, env, release); err != nil {
			t.Fatal(err)
		}
		pauseDeletes.Store(false)
		hookPause.Store(int64(time.Second))
		phase("Harvester restart")
		trialNS, truncatedFull := seedAdviceTrial(release, slices.Index(steps, next))
		phase("advice trial stored")

		// 3. Faults while the new release runs: the operator killed while a
		// replacement is open, the kube-apiserver restarted, etcd stalled.
		killed := make(chan struct{})
		var midReplacement bool
		go func() {
			defer close(killed)
			midReplacement = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
				open := &corev1.SecretList{}
				return c.List(ctx, open, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelBackup: "true"}) == nil && len(open.Items) > 0, nil
			}) == nil
			restartOperator()
		}()
		<-killed
		phase("operator kill")
		// Said as it was: with no replacement open within 15 s, the kill
		// came between them.
		if midReplacement {
			faults = append(faults, "operator SIGKILLed during a replacement")
		} else {
			faults = append(faults, "operator SIGKILLed (no replacement open)")
		}
		time.Sleep(*rehearsalCalm)
		if err := env.RestartAPIServer(ctx, syscall.SIGTERM); err != nil {
			t.Fatalf("restarting the kube-apiserver: %v", err)
		}
		if err := env.PauseEtcd(2 * time.Second); err != nil {
			t.Fatalf("stalling etcd: %v", err)
		}
		faults = append(faults, "kube-apiserver restarted", "etcd stalled 2s")
		phase("API server restart")

		// The NAD the v1.6 -> v1.7 window left with the agent's finalizer:
		// the advice of its replacement is followed.
		if release == harvester.V17 {
			followAgentAdvice(t, env, bin, writerNS)
		}
		// This release's advice for what it does not let the tool fix,
		// followed on this release.
		followAdvice(t, env, h, bin, trialNS, strings.ReplaceAll(string(release), ".", ""), truncatedFull, true)
		phase("advice")
		// 4. Invariants.
		problems := check(release)
		phase("invariants")
		for _, p := range problems {
			t.Errorf("on %s: %s", release, p)
		}
		if len(problems) > 0 {
			t.Logf("the operator's last words:\n%s", operatorLog())
		}
		afterForms, _ := formsOf()
		absence := events.take()
		rows = append(rows, row{step: fmt.Sprintf("%s -> %s", from, next),
			before: formWords(beforeForms), after: formWords(afterForms), pre: strconv.Itoa(code), person: strconv.Itoa(person),
			faults: strings.Join(faults, "; "), absence: quantiles(absence), replaced: len(absence), took: time.Since(start), phases: phases})
	}

	// The advice, followed at the end on v1.9.
	followAdvice(t, env, h, bin, tenant, "tenant", `{"cniVersion":"0.3.1","name":"truncated","type":"bridge","bridge":"mgmt-br","promiscMode":true,"vlan":51,"ipam":{}}`, false)
	if problems := check(release); len(problems) > 0 {
		t.Errorf("after following the advice: %v", problems)
	}
	for ref := range bySeed {
		_, all := formsOf()
		if f := netconf.Normalize([]byte(all[ref].Spec.Config)).Form; f != netconf.FormFlat && !bySeed[ref].setting && f != netconf.FormTruncated {
			t.Errorf("after following the advice, %s is still %s", ref, f)
		}
	}
	close(stopWriters)
	writers.Wait()
	if n := gitopsWrites.Load(); n > int64(2*len(steps)+2) {
		t.Errorf("the GitOps controller's %d applies changed its NAD %d times: a write war with the webhook", gitopsApplies.Load(), n)
	}

	t.Logf("REHEARSAL | step | NADs by form before | after | NADs replaced (absences) | absent (p50, p99, max) | took | pre-hook exit | needed a person | faults survived |")
	for _, r := range rows {
		t.Logf("REHEARSAL | %s | %s | %s | %d | %s | %s | %s | %s | %s |", r.step, r.before, r.after, r.replaced, r.absence, r.took.Round(time.Second), r.pre, r.person, r.faults)
	}
	for _, r := range rows {
		t.Logf("REHEARSAL %s took %s: %s", r.step, r.took.Round(time.Second), strings.Join(r.phases, ", "))
	}
	opMu.Lock()
	starts := opStarts
	opMu.Unlock()
	t.Logf("REHEARSAL GitOps applies %d, of which changed its NAD %d; the operator's container started %d times", gitopsApplies.Load(), gitopsWrites.Load(), starts)
}

func ptrTrue() *bool { b := true; return &b }

// markDeploymentsReady reports the chart's Deployments in ns rolled out
// and ready, as a kubelet and the Deployment controller would (neither
// runs here): the pre-hook finds the operator by its Deployment.
func markDeploymentsReady(t *testing.T, env *testenv.Env, ns string) {
	t.Helper()
	list := &appsv1.DeploymentList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(ns), client.MatchingLabels{"app.kubernetes.io/name": "netconf-migrator"}); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		d := &list.Items[i]
		n := ptr.Deref(d.Spec.Replicas, 1)
		d.Status.ObservedGeneration = d.Generation
		d.Status.Replicas, d.Status.ReadyReplicas, d.Status.UpdatedReplicas, d.Status.AvailableReplicas = n, n, n, n
		if err := env.Client.Status().Update(context.Background(), d); err != nil {
			t.Fatalf("marking Deployment %s/%s ready: %v", ns, d.Name, err)
		}
	}
}

// impersonating writes a kubeconfig that acts as user (and groups) with
// the admin credentials, as `kubectl --as` does.
func impersonating(t *testing.T, env *testenv.Env, user string, groups ...string) string {
	t.Helper()
	raw, err := os.ReadFile(env.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{}
	if err := json.Unmarshal(yamlToJSON(t, raw), &cfg); err != nil {
		t.Fatal(err)
	}
	for _, u := range cfg["users"].([]any) {
		uu := u.(map[string]any)["user"].(map[string]any)
		uu["as"] = user
		uu["as-groups"] = groups
	}
	out, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// asServiceAccount writes a kubeconfig that acts as the ServiceAccount
// namespace/name, with the groups the API server gives its tokens.
func asServiceAccount(t *testing.T, env *testenv.Env, namespace, name string) string {
	t.Helper()
	return impersonating(t, env, "system:serviceaccount:"+namespace+":"+name,
		"system:serviceaccounts", "system:serviceaccounts:"+namespace, "system:authenticated")
}

// yamlToJSON converts a kubeconfig to JSON.
func yamlToJSON(t *testing.T, raw []byte) []byte {
	t.Helper()
	out, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// migrateNowIn runs a NADMigration (Recreate Auto) over the namespaces
// given (none: every namespace), as a person does after following
// advice, and returns it once it ended.
func migrateNowIn(t *testing.T, env *testenv.Env, name string, namespaces ...string) *v1alpha1.NADMigration {
	t.Helper()
	ctx := context.Background()
	nm := &v1alpha1.NADMigration{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.NADMigrationSpec{Recreate: v1alpha1.RecreateAuto, Namespaces: namespaces}}
	if err := env.Client.Create(ctx, nm); err != nil {
		t.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 4*time.Minute, true, func(ctx context.Context) (bool, error) {
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(nm), nm); err != nil {
			return false, nil
		}
		for _, typ := range []string{v1alpha1.ConditionReady, v1alpha1.ConditionStalled} {
			if c := cond(nm, typ); c != nil && c.Status == metav1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("NADMigration %s did not end: %+v", name, nm.Status)
	}
	return nm
}

// adviceFor is what the NADMigration says to do with ns/name.
func adviceFor(nm *v1alpha1.NADMigration, ns, name string) string {
	for _, o := range nm.Status.NADs {
		if o.Namespace == ns && o.Name == name {
			return o.Advice
		}
	}
	return ""
}

// setNetworks sets a VM's Multus networks (none: taken out).
func setNetworks(t *testing.T, env *testenv.Env, ns, vm string, networks ...string) {
	t.Helper()
	u := harvester.NewVM(ns, vm, networks...)
	cur := &unstructured.Unstructured{}
	cur.SetGroupVersionKind(harvester.VirtualMachineGVK)
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: vm}, cur); err != nil {
		t.Fatal(err)
	}
	u.SetResourceVersion(cur.GetResourceVersion())
	if len(networks) == 0 {
		_ = unstructured.SetNestedSlice(u.Object, []any{}, "spec", "template", "spec", "networks")
	}
	if err := env.Client.Update(context.Background(), u); err != nil {
		t.Fatal(err)
	}
}

// followAdvice does, on the release h runs, what the tool's advice says
// for each NAD of namespace ns that needs a person, checking the advice
// says it first: stop the VM that runs on it, take the network out of the
// VM, run again, put it back; replace a double-encoded NAD with
// Harvester's network webhook stopped; write a truncated NAD's config
// again (truncatedFull). Each NAD is flat after. Strict: each of them
// needed a person (an advice trial that tried no advice proves nothing).
// The NADMigrations it runs are named for step.
func followAdvice(t *testing.T, env *testenv.Env, h *harvester.StandIns, bin, ns, step, truncatedFull string, strict bool) {
	t.Helper()
	ctx := context.Background()
	nm := migrateNowIn(t, env, "rehearsal-advice-"+step, ns)
	for name, words := range map[string][]string{
		"running-vm": {"stop"},
		"stopped-vm": {"network"},
		"cn2-double": {"webhook"},
		"truncated":  {"spec.config"},
	} {
		cur := &nadv1.NetworkAttachmentDefinition{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, cur); err != nil {
			t.Fatal(err)
		}
		if netconf.Normalize([]byte(cur.Spec.Config)).Form == netconf.FormFlat {
			if strict {
				t.Errorf("%s/%s needed no person on %s: its advice was not tried", ns, name, h.Release)
			}
			continue // fixed on the way (the window up to v1.5 fixes a stopped VM's NAD in place)
		}
		a := adviceFor(nm, ns, name)
		for _, w := range words {
			if !strings.Contains(a, w) {
				t.Errorf("the advice for %s/%s does not say %q: %q", ns, name, w, a)
			}
		}
	}
	// Stop the running VMs, and take the networks out of every VM.
	for _, vm := range []string{"vm-running", "vm-cn2"} {
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(harvester.VMIGVK)
		u.SetNamespace(ns)
		u.SetName(vm)
		if err := env.Client.Delete(ctx, u); err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
	}
	for _, vm := range []string{"vm-running", "vm-stopped", "vm-cn2"} {
		setNetworks(t, env, ns, vm)
	}
	// The double-encoded NAD, in a maintenance window with Harvester's
	// network webhook stopped, as its advice says.
	h.Pause(func() {
		sh := exec.Command("sh", "-c", "kubectl get network-attachment-definitions -n "+ns+" cn2-double -o yaml | "+bin+" convert -f - | kubectl replace --force -f -")
		sh.Env = append(os.Environ(), "KUBECONFIG="+env.KubeconfigPath)
		if out, err := sh.CombinedOutput(); err != nil {
			t.Fatalf("replacing the double-encoded NAD as advised: %v\n%s", err, out)
		}
	})
	// The truncated NAD, replaced with its full config from where it was
	// defined, as its advice says for v1.6 and later (which refuse to
	// change its bridge in place).
	tr := &nadv1.NetworkAttachmentDefinition{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "truncated"}, tr); err != nil {
		t.Fatal(err)
	}
	if a := adviceFor(nm, ns, "truncated"); !strings.Contains(a, "kubectl replace --force -f nad.yaml") {
		t.Errorf("the advice for the truncated NAD does not say how to replace it on v1.6 and later: %q", a)
	}
	tr.Spec.Config = truncatedFull
	tr.APIVersion, tr.Kind = nadv1.GroupVersion.String(), nadv1.Kind
	manifest, err := yaml.Marshal(tr)
	if err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := env.Kubectl(ctx, manifest, "replace", "--force", "-f", "-"); err != nil {
		t.Fatalf("replacing the truncated NAD as advised: %v\n%s", err, stderr)
	}
	migrateNowIn(t, env, "rehearsal-after-advice-"+step, ns)
	for _, name := range []string{"running-vm", "stopped-vm", "cn2-double", "truncated"} {
		n := &nadv1.NetworkAttachmentDefinition{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, n); err != nil {
			t.Errorf("%s/%s after its advice was followed on %s: %v", ns, name, h.Release, err)
		} else if f := netconf.Normalize([]byte(n.Spec.Config)).Form; f != netconf.FormFlat {
			t.Errorf("%s/%s is %s after its advice was followed on %s", ns, name, f, h.Release)
		}
	}
	setNetworks(t, env, ns, "vm-running", "running-vm")
	setNetworks(t, env, ns, "vm-stopped", "stopped-vm")
	setNetworks(t, env, ns, "vm-cn2", "cn2-double")
}

// followAgentAdvice: a replacement the v1.6 -> v1.7 window left held by
// the agent's finalizer alone is named by a run with the command that
// removes it; the command is run as a person pastes it.
func followAgentAdvice(t *testing.T, env *testenv.Env, bin, ns string) {
	t.Helper()
	ctx := context.Background()
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var stuck []string
	for _, n := range list.Items {
		if n.DeletionTimestamp != nil && slices.Equal(n.Finalizers, []string{harvester.FinalizerAgent}) {
			stuck = append(stuck, n.Name)
		}
	}
	if len(stuck) == 0 {
		t.Errorf("the v1.6 -> v1.7 window left no replacement held by the agent's finalizer: the hazard was not rehearsed")
		return
	}
	report := filepath.Join(t.TempDir(), "report.json")
	cmd := exec.Command(bin, "migrate", "-n", ns, "--replace-budget", "3s", "--lease-wait", "2m", "--kubeconfig", env.KubeconfigPath,
		"--termination-message-path", "", "--report", report)
	out, _ := cmd.CombinedOutput()
	raw, err := os.ReadFile(report)
	if err != nil {
		t.Fatalf("the run after the window wrote no report: %v\n%s", err, out)
	}
	var rep struct {
		Items []struct{ Name, Action, Advice string } `json:"items"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatal(err)
	}
	for _, name := range stuck {
		advice := ""
		for _, it := range rep.Items {
			if it.Name == name {
				advice = it.Advice
			}
		}
		m := regexp.MustCompile("`kubectl (patch [^`]+)`").FindStringSubmatch(advice)
		if m == nil {
			t.Errorf("%s/%s is held by the agent's finalizer, and the run gives no command for it: %q\n%s", ns, name, advice, out)
			continue
		}
		sh := exec.Command("sh", "-c", "kubectl "+m[1])
		sh.Env = append(os.Environ(), "KUBECONFIG="+env.KubeconfigPath)
		if o, err := sh.CombinedOutput(); err != nil {
			t.Errorf("the advised command for %s/%s failed: %v\n%s", ns, name, err, o)
		}
	}
}
