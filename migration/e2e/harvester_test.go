package e2e

import (
	"context"
	"errors"
	"maps"
	"os/exec"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/test/harvester"
)

// outcome is what migrate is expected to do to one NAD on a release.
type outcome struct {
	action    report.Action
	recreated bool
	// reason and advice are parts of the report's words.
	reason, advice []string
}

// harvesterPopulation is what a Harvester cluster being upgraded holds:
// VM networks stored nested by outside clients (with Harvester's labels and
// without any), some used by VMs, a double-encoded one stored around the
// webhooks, and the NADs of Harvester's own settings.
func harvesterPopulation(ns string) (nads []*nadv1.NetworkAttachmentDefinition, objs []client.Object) {
	nads = []*nadv1.NetworkAttachmentDefinition{
		newNAD(ns, "nested", nestedConfig("nested"), harvesterLabels()),
		newNAD(ns, "nested-bare", nestedConfig("nested-bare"), nil),
		newNAD(ns, "nested-stopped-vm", nestedConfig("nested-stopped-vm"), harvesterLabels()),
		newNAD(ns, "nested-running-vm", nestedConfig("nested-running-vm"), harvesterLabels()),
		newNAD(ns, "double", doubleEncodedConfig("double"), harvesterLabels()),
		newNAD(ns, "flat", flatConfig("flat"), harvesterLabels()),
	}
	objs = []client.Object{
		harvester.NewVM(ns, "stopped", "nested-stopped-vm"),
		harvester.NewVM(ns, "running", ns+"/nested-running-vm"),
		harvester.NewVMI(ns, "running", ns+"/nested-running-vm"),
	}
	return nads, objs
}

// settingNADs are Harvester's own NADs in harvester-system, stored nested.
func settingNADs() []*nadv1.NetworkAttachmentDefinition {
	storage := newNAD(harvester.SystemNamespace, "storagenetwork-x7k2p", nestedConfig("storage"), map[string]string{
		harvester.StorageNetworkAnnotation + "/hash": "da39a3ee5e6b4b0d3255bfef95601890afd80709"})
	storage.Annotations = map[string]string{harvester.StorageNetworkAnnotation: "true"}
	migrationNAD := newNAD(harvester.SystemNamespace, "vm-migration-network-q8v4d", nestedConfig("vm-migration"), map[string]string{
		harvester.VMMigrationAnnotation + "/hash": "da39a3ee5e6b4b0d3255bfef95601890afd80709"})
	migrationNAD.Annotations = map[string]string{harvester.VMMigrationAnnotation: "true"}
	return []*nadv1.NetworkAttachmentDefinition{storage, migrationNAD}
}

// expectedOutcomes is, per release, what migrate does to each NAD of the
// population, from Harvester's rules at the release's tag.
func expectedOutcomes(r harvester.Release, ns string) map[string]outcome {
	v16 := r.AtLeast(harvester.V16)
	stopVMs := []string{"stop the VMs named"}
	settingAdvice := func(setting string) []string {
		return []string{"Harvester manages this NAD through its " + setting + " setting", "clear the setting and set it again"}
	}
	if !v16 { // v0.5.x: in place unless a running VM uses it
		return map[string]outcome{
			"nested": {action: report.ActionNormalized},
			// Harvester's mutator gives it labels on the way.
			"nested-bare":       {action: report.ActionNormalized},
			"nested-stopped-vm": {action: report.ActionNormalized},
			"nested-running-vm": {action: report.ActionFailed,
				reason: []string{"could not update nad " + ns + "/nested-running-vm because it's still used by VM(s) " + ns + "/running which must be stopped at first",
					"could not delete nad " + ns + "/nested-running-vm because it's still used by VM(s) " + ns + "/running which must be stopped at first"},
				advice: stopVMs},
			// The mutator cannot decode the stored config on UPDATE; v0.5.x
			// does not decode it on DELETE.
			"double":                     {action: report.ActionNormalized, recreated: true},
			"flat":                       {action: report.ActionUnchanged},
			"storagenetwork-x7k2p":       {action: report.ActionNormalized},
			"vm-migration-network-q8v4d": {action: report.ActionNormalized},
		}
	}
	typeRule := "can't update nad " + ns + "/%s because nad cannot be updated from network type  to network type bridge"
	rule := func(name string) string { return strings.Replace(typeRule, "%s", name, 1) }
	decode := "failed to unmarshal nad " + ns + "/double config"
	if !r.AtLeast(harvester.V17) {
		decode = "unmarshal config"
	}
	hs := harvester.SystemNamespace
	double := outcome{action: report.ActionFailed,
		reason: []string{"can't update nad " + ns + "/double because", decode, "cannot unmarshal string into Go value of type utils.NetConf"},
		advice: []string{"no client can replace it while that webhook serves", "netconf-migrator convert"}}
	settings := map[string]outcome{
		"storagenetwork-x7k2p": {action: report.ActionFailed,
			reason: []string{strings.Replace(rule("storagenetwork-x7k2p"), ns+"/", hs+"/", 1)}, advice: settingAdvice("storage-network")},
		"vm-migration-network-q8v4d": {action: report.ActionFailed,
			reason: []string{strings.Replace(rule("vm-migration-network-q8v4d"), ns+"/", hs+"/", 1)}, advice: settingAdvice("vm-migration-network")},
	}
	if r.AtLeast(harvester.V17) {
		// From v1.7 the manager's cleanup of a deleted NAD decodes every
		// NAD of its cluster network: with "double" on mgmt, no NAD there
		// would finish deleting, so none is replaced (and none is deleted).
		blocked := func(name string) outcome {
			return outcome{action: report.ActionFailed,
				reason: []string{rule(name), "not replaced: NAD " + ns + "/double on the same cluster network mgmt holds a config Harvester's network controller cannot decode", "fix or remove " + ns + "/double first"},
				advice: []string{"replace that NAD first"}}
		}
		out := map[string]outcome{"double": double, "flat": {action: report.ActionUnchanged}}
		for _, n := range []string{"nested", "nested-bare", "nested-stopped-vm", "nested-running-vm"} {
			out[n] = blocked(n)
		}
		maps.Copy(out, settings)
		return out
	}
	out := map[string]outcome{
		"nested":      {action: report.ActionNormalized, recreated: true},
		"nested-bare": {action: report.ActionNormalized, recreated: true},
		"nested-stopped-vm": {action: report.ActionFailed,
			reason: []string{rule("nested-stopped-vm"), "can't delete nad " + ns + "/nested-stopped-vm because it's still used by VM(s) " + ns + "/stopped which must remove the related networks and interfaces"},
			advice: []string{"remove this network from the VMs named"}},
		"nested-running-vm": {action: report.ActionFailed,
			reason: []string{rule("nested-running-vm"), "can't delete nad " + ns + "/nested-running-vm because it's still used by VM(s) " + ns + "/running which must be stopped at first"},
			advice: stopVMs},
		"double": double,
		"flat":   {action: report.ActionUnchanged},
	}
	maps.Copy(out, settings)
	return out
}

func checkOutcomes(t *testing.T, r result, want map[string]outcome, nads []*nadv1.NetworkAttachmentDefinition) {
	t.Helper()
	items := r.itemsByName()
	for _, n := range nads {
		name, w := n.Name, want[n.Name]
		it, ok := items[name]
		if !ok && w.action == report.ActionUnchanged {
			continue // clean items stay out of the report
		}
		if it.Action != w.action || it.Recreated != w.recreated {
			t.Errorf("%s: %s recreated=%v %q, want %s recreated=%v", name, it.Action, it.Recreated, it.Reason, w.action, w.recreated)
		}
		for _, s := range w.reason {
			if !strings.Contains(it.Reason, s) {
				t.Errorf("%s: the reason\n%s\nlacks\n%s", name, it.Reason, s)
			}
		}
		for _, s := range w.advice {
			if !strings.Contains(it.Advice, s) {
				t.Errorf("%s: the advice %q lacks %q", name, it.Advice, s)
			}
		}
	}
}

// TestMigrateOnEachHarvesterRelease migrates the same population beside
// each release's webhooks, checks each NAD's outcome against that release's
// rules, then carries out the report's advice for every NAD it could not
// fix and shows the next run fixes them.
func TestMigrateOnEachHarvesterRelease(t *testing.T) {
	ctx := context.Background()
	ensureBackupNamespace(t)
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	bin := buildBinary(t)

	harvester.ForEachRelease(t, env, func(t *testing.T, h *harvester.StandIns) {
		ns := h.Namespace(t, "releases")
		hs := h.Namespace(t, harvester.SystemNamespace)
		nads, objs := harvesterPopulation(ns)
		// Stored before Harvester's webhooks judged them (the double-encoded
		// one cannot be created through any release).
		h.Pause(func() {
			seed(t, append(nads, settingNADs()...))
			harvester.Create(t, env.Client, objs...)
		})
		before := listAll(t, ns, hs)

		r := runCLI(t, "migrate", "-n", ns)
		rs := runCLI(t, "migrate", "-n", hs)
		if r.code != 1 {
			t.Fatalf("exit %d, want 1\n%s", r.code, r.errOut)
		}
		want := expectedOutcomes(h.Release, ns)
		checkOutcomes(t, r, want, nads)
		checkOutcomes(t, rs, want, settingNADs())

		after := listAll(t, ns, hs)
		if len(after) != len(before) {
			t.Fatalf("%d NADs after the run, %d before", len(after), len(before))
		}
		for ref, b := range before {
			a := after[ref]
			switch w := want[b.Name]; w.action {
			case report.ActionNormalized:
				if f := netconf.Normalize([]byte(a.Spec.Config)).Form; f != netconf.FormFlat || a.Annotations[nadv1.AnnotationOriginalConfig] != b.Spec.Config {
					t.Errorf("%s: %s %s, want flat with the original kept", ref, f, a.Spec.Config)
				}
				if (a.UID != b.UID) != w.recreated {
					t.Errorf("%s: uid %s -> %s, recreated=%v", ref, b.UID, a.UID, w.recreated)
				}
				if w.recreated && b.Labels != nil && !equalMaps(a.Labels, b.Labels) {
					t.Errorf("%s: labels %v, were %v", ref, a.Labels, b.Labels)
				}
			default:
				if a.UID != b.UID || a.Spec.Config != b.Spec.Config {
					t.Errorf("%s was changed although %s", ref, w.action)
				}
			}
		}
		checkNoBackups(t)

		if h.Release.AtLeast(harvester.V18) {
			// Harvester's own validator: the NAD a setting points at cannot
			// be deleted (a BadRequest, unlike the network webhooks' 500).
			storage := after[hs+"/storagenetwork-x7k2p"]
			harvester.Create(t, env.Client, harvester.NewSetting("storage-network", "{}", hs+"/"+storage.Name))
			err := env.Client.Delete(ctx, &storage, client.DryRunAll)
			want := `admission webhook "` + harvester.HarvesterValidatorName + `" denied the request: cannot delete NetworkAttachmentDefinition harvester-system/storagenetwork-x7k2p which is used by Harvester setting 'storage-network'`
			if !apierrors.IsBadRequest(err) || !strings.Contains(err.Error(), want) {
				t.Errorf("deleting the storage network's NAD: %v\nwant BadRequest %q", err, want)
			}
		}

		// The report's advice, carried out on this release.
		t.Run("the advice works", func(t *testing.T) {
			// Running VM: stop it.
			stop := &unstructured.Unstructured{}
			stop.SetGroupVersionKind(harvester.VMIGVK)
			stop.SetNamespace(ns)
			stop.SetName("running")
			if err := env.Client.Delete(ctx, stop); err != nil {
				t.Fatal(err)
			}
			if h.Release.AtLeast(harvester.V17) {
				// The double-encoded NAD first, as the advice says: an
				// administrator's maintenance window with Harvester's
				// network webhook stopped. Then the rest can be replaced.
				h.Pause(func() { replaceWithConvert(t, bin, ns, "double") })
				r := runCLI(t, "migrate", "-n", ns)
				for _, n := range []string{"nested", "nested-bare"} {
					if it := r.itemsByName()[n]; it.Action != report.ActionNormalized || !it.Recreated {
						t.Errorf("%s after replacing double: %s %q", n, it.Action, it.Reason)
					}
				}
			}
			if h.Release.AtLeast(harvester.V16) {
				r := runCLI(t, "migrate", "-n", ns)
				it := r.itemsByName()["nested-running-vm"]
				if !strings.Contains(it.Reason, "must remove the related networks and interfaces") || !strings.Contains(it.Advice, "remove this network from the VMs named") {
					t.Errorf("after stopping the VM: %s %q, advice %q", it.Action, it.Reason, it.Advice)
				}
				// Stopped VMs referencing the NADs: take the network out,
				// migrate, put it back.
				for _, vm := range []string{"stopped", "running"} {
					setVMNetworks(t, ns, vm)
				}
				if r := runCLI(t, "migrate", "-n", ns); r.itemsByName()["nested-stopped-vm"].Action != report.ActionNormalized {
					t.Errorf("after removing the networks: %+v", r.itemsByName())
				}
				setVMNetworks(t, ns, "stopped", "nested-stopped-vm")
				setVMNetworks(t, ns, "running", ns+"/nested-running-vm")
				// Double-encoded: an administrator's maintenance window with
				// Harvester's network webhook stopped.
				if !h.Release.AtLeast(harvester.V17) {
					h.Pause(func() { replaceWithConvert(t, bin, ns, "double") })
				}
			}
			r := runCLI(t, "migrate", "-n", ns)
			if r.code != 0 {
				t.Fatalf("the run after the advice: exit %d\n%s", r.code, r.errOut)
			}
			for ref, n := range listAll(t, ns) {
				if res := netconf.Normalize([]byte(n.Spec.Config)); res.Changed {
					t.Errorf("%s is still %s", ref, res.Form)
				}
			}
			checkNoBackups(t)
		})
	})
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// setVMNetworks sets a VM's Multus networks, as a person editing it would.
func setVMNetworks(t *testing.T, ns, name string, networks ...string) {
	t.Helper()
	vm := &unstructured.Unstructured{}
	vm.SetGroupVersionKind(harvester.VirtualMachineGVK)
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, vm); err != nil {
		t.Fatal(err)
	}
	fresh := harvester.NewVM(ns, name, networks...)
	_ = unstructured.SetNestedField(vm.Object, fresh.Object["spec"], "spec")
	if err := env.Client.Update(context.Background(), vm); err != nil {
		t.Fatal(err)
	}
}

// replaceWithConvert is the report's advice for a double-encoded NAD.
func replaceWithConvert(t *testing.T, bin, ns, name string) {
	t.Helper()
	script := `kubectl get network-attachment-definitions -n "$NS" "$NAME" -o yaml | "$BIN" convert -f - | kubectl replace --force -f -`
	cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
	cmd.Env = append(cmd.Environ(), "KUBECONFIG="+env.KubeconfigPath, "NS="+ns, "NAME="+name, "BIN="+bin)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("replacing %s/%s as the advice says: %v\n%s", ns, name, err, out)
	}
}

func checkNoBackups(t *testing.T) {
	t.Helper()
	checkNoBackupsIn(t, backupNamespace)
}

// TestCreateRefusedAfterDelete: a create the dry run admitted is refused
// for real after the delete; the original is created back, and the report
// says so.
func TestCreateRefusedAfterDelete(t *testing.T) {
	ensureBackupNamespace(t)
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	h := harvester.StartT(t, env, harvester.V16)
	ns := h.Namespace(t, "refused-after-delete")
	seed(t, []*nadv1.NetworkAttachmentDefinition{newNAD(ns, "n", nestedConfig("n"), harvesterLabels())})
	before := listAll(t, ns)[ns+"/n"]
	h.SetCreateRule(func(nad *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
		if !dryRun && nad.Name == "n" && netconf.Normalize([]byte(nad.Spec.Config)).Form == netconf.FormFlat {
			return errors.New("refusing the flat result, for real only")
		}
		return nil
	})
	defer h.SetCreateRule(nil)
	r := runCLI(t, "migrate", "-n", ns)
	it := r.itemsByName()["n"]
	if r.code != 1 || it.Action != report.ActionFailed || !strings.Contains(it.Reason, "refusing the flat result") || !strings.Contains(it.Reason, "the original was created back") {
		t.Fatalf("exit %d: %s %q", r.code, it.Action, it.Reason)
	}
	after := listAll(t, ns)[ns+"/n"]
	if after.Spec.Config != before.Spec.Config || after.UID == before.UID || !equalMaps(after.Labels, before.Labels) {
		t.Errorf("the original was not put back as it was: %s %v (uid %s, was %s)", after.Spec.Config, after.Labels, after.UID, before.UID)
	}
	checkNoBackups(t)
}
