package e2e

import (
	"context"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// gauge reads a gauge, its samples with labels added, from the registry
// the operator's metrics endpoint serves.
func gauge(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	v, _ := testenv.Sum(families, name, labels)
	return v
}

func value(m *dto.Metric) float64 {
	v, _ := testenv.Value(m)
	return v
}

func form(t testing.TB, ns, name string) (netconf.Form, *nadv1.NetworkAttachmentDefinition) {
	t.Helper()
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, nad); err != nil {
		return "", nil
	}
	return netconf.Normalize([]byte(nad.Spec.Config)).Form, nad
}

// vlanNADBesideV16 starts Harvester v1.6's stand-ins and controllers with
// the cluster network mgmt, and stores vlanNAD in a namespace of theirs
// named after base.
func vlanNADBesideV16(t testing.TB, base string) (*harvester.StandIns, string, *nadv1.NetworkAttachmentDefinition) {
	t.Helper()
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	h := harvester.StartT(t, env, harvester.V16)
	ns := h.Namespace(t, base)
	return h, ns, vlanNAD(t, h, ns)
}

// vlanNAD stores the nested VLAN NAD vlan100 on the cluster network mgmt
// beside the stand-ins h, as Harvester's UI makes it, waits until h's
// controllers are done with it, and returns it as stored.
func vlanNAD(t testing.TB, h *harvester.StandIns, ns string) *nadv1.NetworkAttachmentDefinition {
	t.Helper()
	nad := newNAD(ns, "vlan100", `{"NetConf":{"cniVersion":"0.3.1","name":"%s","type":"bridge","ipam":{}},"bridge":"mgmt-br","promiscMode":true,"vlan":100}`)
	nad.Labels = map[string]string{"network.harvesterhci.io/clusternetwork": "mgmt", "network.harvesterhci.io/type": "L2VlanNetwork", "network.harvesterhci.io/vlan-id": "100"}
	h.Pause(func() { create(t, nad) })
	h.Settle(t)
	_, stored := form(t, ns, "vlan100")
	return stored
}

// A nested NAD stored behind the webhook's back (it is not registered
// here) is counted, warned on once, and fixed in place without anyone
// running anything; with the setting Off it is only counted and warned on.
func TestLegacyNADsAreFoundAndFixed(t *testing.T) {
	ns := namespace(t, "behind-the-back", nil)
	create(t, newNAD(ns, "before", nested), newNAD(ns, "clean", flat))
	off := startOperator(t, operator.Options{Fix: detect.FixOff})
	waitFor(t, "the gauge to count the nested NAD", func() (bool, error) {
		return gauge(t, "netconf_migrator_stored_nads", map[string]string{"form": "nested"}) == 1, nil
	})
	waitFor(t, "the Warning Event", func() (bool, error) { return len(events(t, ns, "before", detect.ReasonLegacy)) == 1, nil })
	if f, _ := form(t, ns, "before"); f != netconf.FormNested {
		t.Fatalf("with the setting Off the NAD became %s", f)
	}
	off.stop(t)

	startOperator(t, operator.Options{Fix: detect.FixInPlace})
	waitFor(t, "the NAD there before the operator started to be fixed", func() (bool, error) {
		f, _ := form(t, ns, "before")
		return f == netconf.FormFlat, nil
	})
	create(t, newNAD(ns, "later", nested))
	waitFor(t, "the NAD stored later to be fixed", func() (bool, error) {
		f, _ := form(t, ns, "later")
		return f == netconf.FormFlat, nil
	})
	_, later := form(t, ns, "later")
	if later.Annotations[nadv1.AnnotationOriginalConfig] == "" {
		t.Error("the fixed NAD does not keep its original config for rollback")
	}
	waitFor(t, "the gauge to count no nested NAD", func() (bool, error) {
		return gauge(t, "netconf_migrator_stored_nads", map[string]string{"form": "nested"}) == 0 &&
			gauge(t, "netconf_migrator_stored_nads", map[string]string{"form": "flat"}) >= 3, nil
	})
	if n := len(events(t, ns, "later", detect.ReasonLegacy)); n != 1 {
		t.Errorf("%d LegacyNetConf Events on the NAD, want 1", n)
	}
}

// A writer that sets a NAD back to the nested form again and again is not
// fought for ever: after the flap limit the NAD is left alone and the
// writer's field manager is named.
func TestAWriterThatKeepsSettingANADBackIsNamed(t *testing.T) {
	ns := namespace(t, "fight", nil)
	create(t, newNAD(ns, "contested", nested))
	startOperator(t, operator.Options{Fix: detect.FixInPlace, FlapLimit: 3})
	for i := range 3 {
		waitFor(t, "the operator's fix", func() (bool, error) {
			f, _ := form(t, ns, "contested")
			return f == netconf.FormFlat, nil
		})
		_, nad := form(t, ns, "contested")
		nad.Spec.Config = strings.ReplaceAll(nested, "%s", "contested")
		if err := env.Client.Update(context.Background(), nad, client.FieldOwner("legacy-writer")); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
	}
	waitForShort(t, "the ContestedNetConf Event", func() (bool, error) {
		return len(events(t, ns, "contested", detect.ReasonContested)) == 1, nil
	})
	ev := events(t, ns, "contested", detect.ReasonContested)[0]
	if !strings.Contains(ev.Message, `"legacy-writer"`) {
		t.Errorf("the Event does not name the writer: %s", ev.Message)
	}
	if f, _ := form(t, ns, "contested"); f != netconf.FormNested {
		t.Errorf("a contested NAD was written again: %s", f)
	}
	if got := gauge(t, "netconf_migrator_contested_nads", nil); got != 1 {
		t.Errorf("netconf_migrator_contested_nads = %v, want 1", got)
	}
}

// Beside Harvester v1.6 (network-controller-harvester v1.6.0) and its
// controllers, whose webhook refuses to flatten a nested NAD in place: the
// setting InPlace reports it, Replace replaces it.
func TestLegacyNADsBesideHarvesterV16(t *testing.T) {
	h, ns, before := vlanNADBesideV16(t, "detect")

	inPlace := startOperator(t, operator.Options{Fix: detect.FixInPlace})
	waitFor(t, "the NAD to be reported as not fixed", func() (bool, error) {
		return len(events(t, ns, "vlan100", detect.ReasonNotFixed)) == 1, nil
	})
	ev := events(t, ns, "vlan100", detect.ReasonNotFixed)[0]
	if n := len(events(t, ns, "vlan100", "NormalizeFailed")); n != 0 {
		t.Errorf("%d more Warning Events from the engine on the NAD the watch reported", n)
	}
	if !strings.Contains(ev.Message, "Replace") {
		t.Errorf("the Event does not say what would fix it: %s", ev.Message)
	}
	if f, now := form(t, ns, "vlan100"); f != netconf.FormNested || now.UID != before.UID {
		t.Fatalf("InPlace changed the NAD: %s, uid %s -> %s", f, before.UID, now.UID)
	}
	inPlace.stop(t)

	startOperator(t, operator.Options{Fix: detect.FixReplace})
	waitFor(t, "the NAD to be replaced by a flat one", func() (bool, error) {
		f, now := form(t, ns, "vlan100")
		return f == netconf.FormFlat && now.UID != before.UID, nil
	})
	h.Settle(t)
	if _, now := form(t, ns, "vlan100"); len(now.Finalizers) != len(harvester.V16.Finalizers()) {
		t.Errorf("the replaced NAD carries %v, want the controllers' finalizers", now.Finalizers)
	}
}

// With KubeVirt's CRDs (the stand-ins'), the VMs and VMIs attached to a
// legacy NAD are listed in a NADMigration's status and counted in a gauge;
// a dry run changes nothing.
func TestUpgradeReadinessListsVMsOnLegacyNADs(t *testing.T) {
	ns := namespace(t, "readiness", nil)
	create(t, newNAD(ns, "legacy", nested), newNAD(ns, "fine", flat))
	harvester.Create(t, env.Client,
		harvester.NewVM(ns, "running", ns+"/legacy"), harvester.NewVMI(ns, "running", "legacy"),
		harvester.NewVM(ns, "stopped", "legacy"),
		harvester.NewVM(ns, "elsewhere", "fine"), harvester.NewVMI(ns, "elsewhere", "fine"))
	startOperator(t, operator.Options{Fix: detect.FixOff})
	create(t, newMigration("readiness", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}, DryRun: v1alpha1.DryRunServer}))
	nm := waitStatus(t, "readiness", status.CurrentStatus)
	var got []string
	for _, vm := range nm.Status.BlockedVMs {
		if vm.Namespace == ns {
			got = append(got, vm.Kind+"/"+vm.Name+"@"+vm.NAD)
			if vm.Advice == "" {
				t.Errorf("%s/%s has no advice", vm.Kind, vm.Name)
			}
		}
	}
	want := []string{"VirtualMachineInstance/running@" + ns + "/legacy", "VirtualMachine/running@" + ns + "/legacy", "VirtualMachine/stopped@" + ns + "/legacy"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("status.blockedVMs = %v, want %v", got, want)
	}
	if f, _ := form(t, ns, "legacy"); f != netconf.FormNested {
		t.Errorf("a dry run changed the NAD to %s", f)
	}
	if nm.Status.Actions["would-normalize"] != 1 {
		t.Errorf("actions %v, want one would-normalize", nm.Status.Actions)
	}
	waitFor(t, "the gauge of VMIs that cannot live-migrate", func() (bool, error) {
		return gauge(t, "netconf_migrator_legacy_nad_vms", map[string]string{"kind": "VirtualMachineInstance"}) >= 1, nil
	})
}
