package e2e

import (
	"context"
	"fmt"
	"testing"

	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
)

// gated seeds n nested NADs in a namespace behind a gate that admits the
// first `open` updates and holds the rest.
func gated(t *testing.T, name string, n, open int) (string, *gate) {
	t.Helper()
	ns := namespace(t, name, map[string]string{"gate": name})
	var nads []client.Object
	for i := range n {
		nads = append(nads, newNAD(ns, fmt.Sprintf("nad-%03d", i), nested))
	}
	create(t, nads...)
	return ns, startGate(t, name, open)
}

// Deleting a running NADMigration stops its run at the next NAD: the
// writes already sent finish, no other starts.
func TestDeletingANADMigrationStopsItsRun(t *testing.T) {
	const n, open = 60, 10
	ns, g := gated(t, "deleted", n, open)
	startOperator(t, operator.Options{Fix: detect.FixOff})
	create(t, newMigration("deleted", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}}))
	<-g.held // the run wrote `open` NADs and waits on the next
	if err := env.Client.Delete(context.Background(), newMigration("deleted", v1alpha1.NADMigrationSpec{})); err != nil {
		t.Fatal(err)
	}
	// Runs take turns: this one completes only once the deleted one ended.
	after := newMigration("after-deleted", v1alpha1.NADMigrationSpec{Namespaces: []string{"nowhere"}})
	create(t, after)
	waitFor(t, "the next NADMigration to be queued behind the deleted one, or to start", func() (bool, error) {
		return cond(get(t, after.Name), v1alpha1.ConditionReconciling) != nil, nil
	})
	g.Release()
	waitStatus(t, after.Name, status.CurrentStatus)
	flat := forms(t, ns)[netconf.FormFlat]
	// The writes held at the gate (at most the engine's 4 workers) land.
	if flat < open || flat > open+4 {
		t.Errorf("%d of %d NADs were fixed after the NADMigration was deleted once %d were; want %d to %d", flat, n, open, open, open+4)
	}
}

// An operator stopped in the middle of a run (a rollout, a drain) leaves
// the NADMigration started; the next one resumes it and finishes.
func TestARestartedOperatorResumesTheRun(t *testing.T) {
	const n, open = 40, 10
	ns, g := gated(t, "restarted", n, open)
	first := startOperator(t, operator.Options{Fix: detect.FixOff})
	create(t, newMigration("restarted", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}}))
	<-g.held
	go func() { <-g.held; g.Release() }() // let the held writes finish as the operator stops
	g.Release()
	first.stop(t)
	nm := get(t, "restarted")
	if nm.Status.StartTime == nil || nm.Status.CompletionTime != nil || nm.Status.Attempts != 1 {
		t.Fatalf("after the operator stopped mid-run: %+v, want started, not completed, one attempt", nm.Status)
	}
	if res := kstatus(t, nm.Name); res.Status != status.InProgressStatus {
		t.Errorf("a run the operator left reads %s, want InProgress", res.Status)
	}
	startOperator(t, operator.Options{Fix: detect.FixOff})
	nm = waitStatus(t, "restarted", status.CurrentStatus)
	if nm.Status.Attempts != 2 || forms(t, ns)[netconf.FormFlat] != n {
		t.Errorf("after the restart: attempts %d, forms %v; want 2 and every NAD flat", nm.Status.Attempts, forms(t, ns))
	}
}
