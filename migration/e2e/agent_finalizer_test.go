package e2e

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/cmd/netconf-migrator/app"
	"github.com/harvester/netconf-migrator/test/harvester"
)

// TestTheAgentsFinalizerLeftByTheUpgradeFromV16IsNamed: during the chart
// upgrade from Harvester v1.6, the v1.6 agent (whose NAD controller
// removes wrangler.cattle.io/harvester-network-nad-controller) is gone
// while the v1.6 manager still runs. A NAD a replacement deletes then
// loses the manager's finalizer and keeps the agent's, and from v1.7 no
// controller removes it (network-controller-harvester v1.7.3: the manager
// removes it only in the cleanup of a NAD that still carries its own).
// The run says so, with the command that removes it; the test follows
// that advice beside v1.7, and the next run creates the NAD from its
// backup.
func TestTheAgentsFinalizerLeftByTheUpgradeFromV16IsNamed(t *testing.T) {
	ctx := context.Background()
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	ns := "agent-finalizer"
	if err := env.CreateNamespace(ctx, ns, map[string]string{harvester.NamespaceLabel: "true"}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = harvester.StripFinalizers(ctx, env.Client, ns)
		_ = env.Client.DeleteAllOf(ctx, &nadv1.NetworkAttachmentDefinition{}, client.InNamespace(ns))
	})
	v16, err := harvester.Start(ctx, env, harvester.V16)
	if err != nil {
		t.Fatal(err)
	}
	removed := false
	t.Cleanup(func() {
		if !removed {
			_ = v16.Remove(ctx)
		}
	})
	v16.Pause(func() {
		seed(t, []*nadv1.NetworkAttachmentDefinition{newNAD(ns, "vlan100", nestedConfig("vlan100"), harvesterLabels())})
	})
	v16.Settle(t)
	before := get(t, ns, "vlan100")
	if !slices.Equal(before.Finalizers, harvester.V16.Finalizers()) {
		t.Fatalf("finalizers %v, want v1.6's %v", before.Finalizers, harvester.V16.Finalizers())
	}

	// The chart upgrade: the v1.6 agent is gone, the v1.6 manager runs.
	v16.Controllers.SetAgentDown(true)
	r := runCLI(t, "migrate", "-n", ns, "--replace-budget", "3s")
	if r.code != app.ExitMissing {
		t.Fatalf("exit %d, want %d (missing)\n%s", r.code, app.ExitMissing, r.errOut)
	}
	stuck := get(t, ns, "vlan100")
	if stuck.DeletionTimestamp == nil || !slices.Equal(stuck.Finalizers, []string{harvester.FinalizerAgent}) {
		t.Fatalf("the stand-ins did not leave the agent's finalizer alone on the deleted NAD: deletionTimestamp %v, finalizers %v", stuck.DeletionTimestamp, stuck.Finalizers)
	}

	// Then v1.7 (network-controller-harvester v1.7.0, its NAD controller as
	// at v1.7.3): its manager never runs a cleanup for this NAD.
	if err := v16.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	removed = true
	v17 := harvester.StartT(t, env, harvester.V17)
	r = runCLI(t, "migrate", "-n", ns, "--replace-budget", "3s")
	it := r.itemsByName()["vlan100"]
	if r.code != app.ExitMissing || it.Action != report.ActionMissing {
		t.Fatalf("beside v1.7: exit %d, %s, want %d and missing\n%s", r.code, it.Action, app.ExitMissing, r.errOut)
	}
	if n := get(t, ns, "vlan100"); n.DeletionTimestamp == nil || n.UID != stuck.UID {
		t.Fatalf("v1.7's controllers finished the deletion the source says they never finish: %v", n.Finalizers)
	}
	if !strings.Contains(it.Advice, "no controller removes from Harvester v1.7 on") {
		t.Fatalf("the advice does not say why the NAD stays terminating: %q", it.Advice)
	}
	cmd := regexp.MustCompile("`kubectl (patch [^`]+)`").FindStringSubmatch(it.Advice)
	if cmd == nil {
		t.Fatalf("the advice gives no command: %q", it.Advice)
	}
	// Followed as a person pastes it into a shell.
	sh := exec.Command("sh", "-c", "kubectl "+cmd[1])
	sh.Env = append(os.Environ(), "KUBECONFIG="+env.KubeconfigPath)
	if out, err := sh.CombinedOutput(); err != nil {
		t.Fatalf("the advised command failed: %v\n%s", err, out)
	}
	waitGone(t, ns, "vlan100")
	r = runCLI(t, "migrate", "-n", ns)
	if r.code != 0 {
		t.Fatalf("the run after the advice: exit %d\n%s", r.code, r.errOut)
	}
	after := get(t, ns, "vlan100")
	if after.UID == before.UID || netconf.Normalize([]byte(after.Spec.Config)).Form != netconf.FormFlat {
		t.Errorf("after the advice and a run: %s %s", after.UID, after.Spec.Config)
	}
	v17.Settle(t)
	if got := get(t, ns, "vlan100"); !slices.Equal(got.Finalizers, harvester.V17.Finalizers()) {
		t.Errorf("the NAD created again carries %v, want v1.7's %v", got.Finalizers, harvester.V17.Finalizers())
	}
	checkNoBackups(t)
}
