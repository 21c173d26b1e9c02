package e2e

import (
	"bytes"
	"context"
	"os/exec"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// TestSIGTERMWaitsForAReplacementUnderWay runs the operator as its
// Deployment does, a process of its own (netconf-migrator operator
// --fix-legacy Replace), beside Harvester v1.6 and its controllers, whose
// cleanup of a deleted NAD takes 40 s: longer than controller-runtime's
// default shutdown grace of 30 s, shorter than the replacement's budget.
// SIGTERM comes while the replaced NAD is terminating. The process waits
// for the replacement (its grace is the budget plus a margin, and fits the
// Pod's terminationGracePeriodSeconds, which TestManifestsServerDryRun
// checks), so the NAD exists again, flat, no backup is left, and it exits 0.
func TestSIGTERMWaitsForAReplacementUnderWay(t *testing.T) {
	ctx := context.Background()
	h, ns, before := vlanNADBesideV16(t, "sigterm")
	h.Controllers.SetCleanup(func(*nadv1.NetworkAttachmentDefinition) (time.Duration, error) { return 40 * time.Second, nil })
	t.Cleanup(func() { h.Controllers.SetCleanup(nil) })

	var stderr bytes.Buffer
	op := exec.Command(testenv.BuildBinary(t), "operator", "--kubeconfig", env.KubeconfigPath, "--fix-legacy", "Replace",
		"--backup-namespace", backupNamespace, "--leader-election-namespace", ownNamespace,
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--replace-budget", "90s")
	op.Stderr = &stderr
	if err := op.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- op.Wait() }()
	t.Cleanup(func() {
		_ = op.Process.Kill()
		<-exited
	})

	waitFor(t, "the operator to delete the nested NAD to replace it", func() (bool, error) {
		cur := &nadv1.NetworkAttachmentDefinition{}
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "vlan100"}, cur)
		return err == nil && cur.UID == before.UID && cur.DeletionTimestamp != nil, client.IgnoreNotFound(err)
	})
	terminated := time.Now()
	if err := op.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	err := <-exited
	exited <- err // for the cleanup
	t.Logf("the operator exited %s after SIGTERM: %v", time.Since(terminated).Round(time.Second), err)
	if err != nil {
		t.Errorf("the operator did not exit cleanly after SIGTERM: %v\n%s", err, stderr.String())
	}
	f, after := form(t, ns, "vlan100")
	if after == nil || after.UID == before.UID || f != netconf.FormFlat {
		t.Fatalf("after the operator stopped: %v (uid before %s), want a flat NAD created again\n%s", after, before.UID, stderr.String())
	}
	backups := &corev1.SecretList{}
	if err := env.Client.List(ctx, backups, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil {
		t.Fatal(err)
	}
	if len(backups.Items) != 0 {
		t.Errorf("%d backups left after the operator stopped", len(backups.Items))
	}
}
