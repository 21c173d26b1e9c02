package e2e

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/testenv"
	"github.com/harvester/netconf-migrator/migration"
)

// TestStoredDoubleEncodedBesideHarvesterMutator migrates NADs stored before
// Harvester's mutator ran. The mutator decodes the stored config on every
// update, so it refuses any update of a double-encoded NAD: migrate reports
// it failed, with the mutator's message and what to do, and rewrites the
// rest. Doing what the report says (recreating the NAD from convert's
// output) then works, and the next run finds nothing to do.
func TestStoredDoubleEncodedBesideHarvesterMutator(t *testing.T) {
	ctx := context.Background()
	const ns = "harvester-mutator"
	if err := env.CreateNamespace(ctx, ns, map[string]string{testenv.HarvesterNamespaceLabel: "true"}); err != nil {
		t.Fatal(err)
	}
	seed(t, []*nadv1.NetworkAttachmentDefinition{
		newNAD(ns, "nested", nestedConfig("nested"), nil),
		newNAD(ns, "double", doubleEncodedConfig("double"), nil),
		newNAD(ns, "flat", flatConfig("flat"), nil),
	})
	startHarvesterMutator(t)
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := env.Client.Create(ctx, newNAD(ns, "probe", doubleEncodedConfig("probe"), nil), client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), testenv.HarvesterMutatorName), nil
	})
	if err != nil {
		t.Fatalf("waiting for the Harvester mutator: %v", err)
	}
	before := listAll(t, ns)

	r := runCLI(t, "migrate", "-n", ns)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s", r.code, r.errOut)
	}
	items := r.itemsByName()
	if it := items["nested"]; it.Action != report.ActionNormalized {
		t.Errorf("nested: %s %q, want normalized", it.Action, it.Reason)
	}
	it := items["double"]
	for _, want := range []string{testenv.HarvesterMutatorName, "cannot unmarshal string", "kubectl replace --force"} {
		if it.Action != report.ActionFailed || !strings.Contains(it.Reason, want) {
			t.Errorf("double: %s %q, want failed and %q", it.Action, it.Reason, want)
		}
	}
	after := listAll(t, ns)
	if after[ns+"/double"].ResourceVersion != before[ns+"/double"].ResourceVersion {
		t.Error("double was written although refused")
	}
	// The denial quotes the whole config; the Event carries its start.
	var events corev1.EventList
	if err := fastClient(t).List(ctx, &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	warned := false
	for _, e := range events.Items {
		warned = warned || (e.InvolvedObject.Name == "double" && e.Type == corev1.EventTypeWarning && e.Reason == migration.ReasonNormalizeFail &&
			strings.Contains(e.Message, testenv.HarvesterMutatorName) && strings.Contains(e.Message, "more bytes in the report"))
	}
	if !warned {
		t.Errorf("no %s warning event for %s/double", migration.ReasonNormalizeFail, ns)
	}

	// What the report says to do.
	script := `kubectl get network-attachment-definitions -n "$NS" double -o yaml | "$BIN" convert -f - | kubectl replace --force -f -`
	cmd := exec.Command("bash", "-o", "pipefail", "-c", script)
	cmd.Env = append(cmd.Environ(), "KUBECONFIG="+env.KubeconfigPath, "NS="+ns, "BIN="+buildBinary(t))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("recreating double as the report says: %v\n%s", err, out)
	}
	got := listAll(t, ns)[ns+"/double"]
	if f := netconf.Normalize([]byte(got.Spec.Config)).Form; f != netconf.FormFlat {
		t.Errorf("double holds a %s config after it was recreated: %s", f, got.Spec.Config)
	}
	if r := runCLI(t, "migrate", "-n", ns); r.code != 0 || r.report.Summary.Actions[report.ActionNormalized] != 0 {
		t.Errorf("the run after the recreate: exit %d, %v\n%s", r.code, r.report.Summary.Actions, r.errOut)
	}
}

// TestSystemNADBesideHarvesterValidator migrates a nested storage-network
// NAD with Harvester's validator (v1.6 rules) running: it refuses any change
// to the config of a NAD its settings manage, so migrate reports it failed
// with Harvester's message and Harvester's own way to replace it.
func TestSystemNADBesideHarvesterValidator(t *testing.T) {
	ctx := context.Background()
	const ns = "system-nads"
	if err := env.CreateNamespace(ctx, ns, map[string]string{testenv.HarvesterNamespaceLabel: "true"}); err != nil {
		t.Fatal(err)
	}
	storage := newNAD(ns, "storagenetwork-x7k2p", nestedConfig("storage"), nil)
	storage.Annotations = map[string]string{"storage-network.settings.harvesterhci.io": "true"}
	seed(t, []*nadv1.NetworkAttachmentDefinition{storage, newNAD(ns, "vm-net", nestedConfig("vm-net"), nil)})
	startHarvesterValidator(t)
	waitDenial(t, ns, storage.Name)

	r := runCLI(t, "migrate", "-n", ns)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s", r.code, r.errOut)
	}
	items := r.itemsByName()
	it := items[storage.Name]
	for _, want := range []string{testenv.MsgSystemNAD, "storage-network setting", "clear the setting and set it again"} {
		if it.Action != report.ActionFailed || !strings.Contains(it.Reason, want) {
			t.Errorf("%s: %s %q, want failed and %q", storage.Name, it.Action, it.Reason, want)
		}
	}
	if it := items["vm-net"]; it.Action != report.ActionNormalized {
		t.Errorf("vm-net: %s %q, want normalized", it.Action, it.Reason)
	}
}
