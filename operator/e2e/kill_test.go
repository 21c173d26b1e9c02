package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/cmd/netconf-migrator/app"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// TestAKilledOperatorsLeaseIsTakenInBoundedTime runs the operator as a
// process beside Harvester v1.6, whose controllers take 10 s to clean up a
// deleted NAD, and SIGKILLs it while it holds the run Lease in the middle
// of a replacement: once for a NADMigration's run, once for the legacy-NAD
// watch's Replace fix. A CLI run with a wait (1 s) shorter than the
// killed holder's Lease (3 s) then takes the Lease no earlier than it
// expired and within twice its duration of the last renewal, finishes the
// replacement from its backup, and leaves every NAD flat and no backup.
func TestAKilledOperatorsLeaseIsTakenInBoundedTime(t *testing.T) {
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	h := harvester.StartT(t, env, harvester.V16)
	bin := testenv.BuildBinary(t)
	for _, tc := range []struct {
		name, fix string
		migration bool
	}{
		{name: "a NADMigration's run", fix: "Off", migration: true},
		{name: "the Replace fix", fix: "Replace"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			ns := h.Namespace(t, "killed-"+map[bool]string{true: "nm", false: "fix"}[tc.migration])
			before := vlanNAD(t, h, ns)
			h.Controllers.SetCleanup(func(*nadv1.NetworkAttachmentDefinition) (time.Duration, error) { return 10 * time.Second, nil })
			t.Cleanup(func() { h.Controllers.SetCleanup(nil) })

			var stderr bytes.Buffer
			op := exec.Command(bin, "operator", "--kubeconfig", env.KubeconfigPath, "--fix-legacy", tc.fix, "--lease-duration", "3s",
				"--backup-namespace", backupNamespace, "--leader-election-namespace", ownNamespace,
				"--metrics-bind-address", "0", "--health-probe-bind-address", "0")
			op.Stderr = &stderr
			if err := op.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan struct{})
			go func() { _ = op.Wait(); close(exited) }()
			t.Cleanup(func() { _ = op.Process.Kill(); <-exited })
			if tc.migration {
				create(t, newMigration("killed-operator", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}}))
				t.Cleanup(func() { _ = env.Client.Delete(ctx, newMigration("killed-operator", v1alpha1.NADMigrationSpec{})) })
			}
			waitFor(t, "the operator to delete the nested NAD to replace it", func() (bool, error) {
				cur := &nadv1.NetworkAttachmentDefinition{}
				err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "vlan100"}, cur)
				return err == nil && cur.UID == before.UID && cur.DeletionTimestamp != nil, client.IgnoreNotFound(err)
			})
			if err := op.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			<-exited
			dead := &coordinationv1.Lease{}
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: backupNamespace, Name: runlock.LeaseName}, dead); err != nil {
				t.Fatal(err)
			}
			if dead.Spec.HolderIdentity == nil || *dead.Spec.HolderIdentity == "" {
				t.Fatalf("the operator was not holding the run Lease when it was killed\n%s", stderr.String())
			}

			var out, errOut bytes.Buffer
			if code := app.Execute([]string{"migrate", "-n", ns, "--lease-wait", "1s", "--lease-duration", "3s", "--kubeconfig", env.KubeconfigPath,
				"--termination-message-path", ""}, nil, &out, &errOut); code != 0 {
				t.Fatalf("the CLI run after the kill: exit %d\n%s", code, errOut.String())
			}
			// The run logs "Starting" once it holds the Lease; it releases
			// the Lease at its end, and a release rewrites acquireTime.
			taken := startedAt(t, errOut.String())
			late := taken.Sub(dead.Spec.RenewTime.Time)
			t.Logf("the CLI run took the Lease %s after the killed operator's last renewal", late.Round(time.Millisecond))
			if late < 3*time.Second || late > 6*time.Second {
				t.Errorf("taken %s after the killed holder's last renewal, want between 3s and 6s", late)
			}
			f, after := form(t, ns, "vlan100")
			if after == nil || after.UID == before.UID || f != netconf.FormFlat {
				t.Errorf("after the CLI run: %v, want the NAD created again, flat", after)
			}
			backups := &corev1.SecretList{}
			if err := env.Client.List(ctx, backups, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil {
				t.Fatal(err)
			}
			if len(backups.Items) != 0 {
				t.Errorf("%d backups left", len(backups.Items))
			}
		})
	}
}

// startedAt is the time of a run's "Starting" log line.
func startedAt(t *testing.T, log string) time.Time {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		var l struct {
			Msg string `json:"msg"`
			TS  string `json:"ts"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "Starting" {
			ts, err := time.Parse(time.RFC3339Nano, l.TS)
			if err != nil {
				t.Fatal(err)
			}
			return ts
		}
	}
	t.Fatalf("the run logged no Starting line:\n%s", log)
	return time.Time{}
}
