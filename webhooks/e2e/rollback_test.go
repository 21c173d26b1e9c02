package e2e

import (
	"context"
	"io"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/internal/cli"
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
		rollbackWithTheWebhook(t, ns, nested, h.Release.AtLeast(harvester.V16))
	})
}

func rollbackWithTheWebhook(t *testing.T, ns, nested string, recreates bool) {
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
		if code := cli.Execute(args, nil, io.Discard, &errOut); code != 0 {
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
