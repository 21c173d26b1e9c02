package e2e

import (
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"gomodules.xyz/jsonpatch/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/cmd/netconf-migrator/app"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/webhooks"
)

// TestMigrateAndRollbackWithTheWebhook runs the migration job and its
// rollback while our webhook is installed beside each Harvester release's,
// as on a real cluster: the webhook must not flatten again the config
// rollback restores (which would also lose the original, whose annotation
// rollback removes). From v1.6 Harvester refuses both rewrites in place, so
// both go through the recreate path.
func TestMigrateAndRollbackWithTheWebhook(t *testing.T) {
	ctx := context.Background()
	const nested = `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"mgmt-br","vlan":30}`
	if err := env.CreateNamespace(ctx, ownNamespace, nil); err != nil { // where backups go
		t.Fatal(err)
	}
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	w := startOurs(t, webhooks.ServerOptions{})
	defer w.stop(t)
	harvester.ForEachRelease(t, env, func(t *testing.T, h *harvester.StandIns) {
		ns := h.Namespace(t, "rollback-webhook")
		rollbackWithTheWebhook(t, h, ns, nested)
	})
}

func rollbackWithTheWebhook(t *testing.T, h *harvester.StandIns, ns, nested string) {
	recreates := h.Release.AtLeast(harvester.V16)
	ctx := context.Background()
	removeShipped(t) // stored before the webhook was installed
	if err := env.Client.Create(ctx, newNAD(ns, "legacy", nested)); err != nil {
		t.Fatal(err)
	}
	installShipped(t)
	run := func(args ...string) {
		t.Helper()
		args = append(args, "-n", ns, "--kubeconfig", env.KubeconfigPath, "--termination-message-path", "", "--backup-namespace", ownNamespace)
		var errOut strings.Builder
		if code := app.Execute(args, nil, io.Discard, &errOut); code != 0 {
			t.Fatalf("netconf-migrator %v: exit %d\n%s", args, code, errOut.String())
		}
	}
	get := func() *nadv1.NetworkAttachmentDefinition {
		t.Helper()
		nad := &nadv1.NetworkAttachmentDefinition{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "legacy"}, nad); err != nil {
			t.Fatal(err)
		}
		return nad
	}

	uid := get().UID
	replaced := func(step string) {
		t.Helper()
		if now := get().UID; (now != uid) != recreates {
			t.Errorf("after %s the uid went from %s to %s; want it replaced=%v", step, uid, now, recreates)
		}
		uid = get().UID
	}
	run("migrate")
	if got := get(); got.Spec.Config != string(netconf.Normalize([]byte(nested)).Config) || got.Annotations[nadv1.AnnotationOriginalConfig] != nested {
		t.Fatalf("after migrate: %s %v", got.Spec.Config, got.Annotations)
	}
	replaced("migrate")
	run("rollback")
	replaced("rollback")
	got := get()
	if got.Spec.Config != nested || got.Annotations[nadv1.AnnotationOriginalConfig] != "" || got.Annotations[nadv1.AnnotationNormalizedFrom] != "" {
		t.Fatalf("after rollback with the webhook installed: %s %v", got.Spec.Config, got.Annotations)
	}
	if got.Labels[webhooks.LabelSkip] != "true" {
		t.Errorf("rollback did not opt the NAD out of the webhook: %v", got.Labels)
	}
	// The next migration (an upgrade's pre-hook) leaves it too.
	run("migrate")
	if got := get(); got.Spec.Config != nested {
		t.Fatalf("migrate after rollback rewrote the opted-out NAD: %s", got.Spec.Config)
	}
	h.Settle(t) // Harvester's controllers are done with what migrate wrote
	got = get()
	// A later write of the same legacy config stays as written.
	got.Annotations = map[string]string{"touched": "yes"}
	got.Spec.Config = nested + " "
	if err := env.Client.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	if got.Spec.Config != nested+" " {
		t.Errorf("a write to the rolled-back NAD was rewritten: %s", got.Spec.Config)
	}
}

// TestRollbackRewrittenByAWebhookKeepsTheOriginal: another mutating
// webhook that flattens whatever it sees (it ignores our opt-out label)
// makes rollback stop before it writes: the dry run shows the rewrite, the
// NAD keeps its original in the annotation, and the report says why.
func TestRollbackRewrittenByAWebhookKeepsTheOriginal(t *testing.T) {
	ctx := context.Background()
	const ns = "rollback-rewritten"
	const nested = `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"mgmt-br","vlan":31}`
	flat := string(netconf.Normalize([]byte(nested)).Config)
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	removeShipped(t)
	if err := env.Client.Create(ctx, newNAD(ns, "legacy", nested)); err != nil {
		t.Fatal(err)
	}
	run := func(cmd string) (int, string) {
		var errOut strings.Builder
		code := app.Execute([]string{cmd, "-n", ns, "--kubeconfig", env.KubeconfigPath, "--termination-message-path", ""}, nil, io.Discard, &errOut)
		return code, errOut.String()
	}
	if code, out := run("migrate"); code != 0 {
		t.Fatalf("migrate: exit %d\n%s", code, out)
	}
	url, stop := serveElsewhere(t, func(context.Context, admission.Request) admission.Response {
		return admission.Patched("", jsonpatch.JsonPatchOperation{Operation: "replace", Path: "/spec/config", Value: flat})
	})
	defer stop()
	flattener := shippedMWC(t)
	flattener.Name = "flattens-everything"
	for i := range flattener.Webhooks {
		flattener.Webhooks[i].ClientConfig.URL = &url
		flattener.Webhooks[i].ObjectSelector = nil
		flattener.Webhooks[i].MatchConditions = nil
		flattener.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}}
	}
	if err := env.Client.Create(ctx, flattener); err != nil {
		t.Fatal(err)
	}
	defer deleteWebhookConfiguration(t, "MutatingWebhookConfiguration", flattener.Name)
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		probe := newNAD(ns, "probe", nested)
		return env.Client.Create(ctx, probe, client.DryRunAll) == nil && probe.Spec.Config == flat, nil
	})
	if err != nil {
		t.Fatalf("waiting for the flattening webhook: %v", err)
	}
	before := &nadv1.NetworkAttachmentDefinition{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "legacy"}, before); err != nil {
		t.Fatal(err)
	}
	code, out := run("rollback")
	if code != 1 || !strings.Contains(out, "an admission webhook would rewrite the restored config") || !strings.Contains(out, "nothing was written") {
		t.Fatalf("rollback: exit %d, want 1 saying why\n%s", code, out)
	}
	after := &nadv1.NetworkAttachmentDefinition{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "legacy"}, after); err != nil {
		t.Fatal(err)
	}
	if after.ResourceVersion != before.ResourceVersion || after.Annotations[nadv1.AnnotationOriginalConfig] != nested {
		t.Errorf("the NAD was written, or lost its original: %s %v", after.Spec.Config, after.Annotations)
	}
}
