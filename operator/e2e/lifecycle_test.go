package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
)

func newMigration(name string, spec v1alpha1.NADMigrationSpec) *v1alpha1.NADMigration {
	return &v1alpha1.NADMigration{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: spec}
}

// A NADMigration reads InProgress from the moment it is stored (the CRD
// defaults status.observedGeneration to 0, behind metadata.generation),
// Failed when a NAD needs a person, Current when every NAD is clean or
// fixed; the spec is frozen once it started.
func TestNADMigrationLifecycle(t *testing.T) {
	ns := namespace(t, "lifecycle", nil)
	create(t, newNAD(ns, "a", nested), newNAD(ns, "b", nested), newNAD(ns, "c", nested), newNAD(ns, "d", flat), newNAD(ns, "e", flat), newNAD(ns, "f", truncated))
	if err := env.Client.Patch(context.Background(), newNAD(ns, "f", truncated), client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"labels":{"keep":"out"}}}`))); err != nil {
		t.Fatal(err)
	}

	// Stored before any operator runs: already InProgress, and its spec can
	// still change.
	first := newMigration("lifecycle-all", v1alpha1.NADMigrationSpec{Namespaces: []string{"nowhere"}})
	create(t, first)
	if res := kstatus(t, first.Name); res.Status != status.InProgressStatus {
		t.Fatalf("a NADMigration no operator saw yet reads %s (%s), want InProgress", res.Status, res.Message)
	}
	first.Spec.Namespaces = []string{ns}
	if err := env.Client.Update(context.Background(), first); err != nil {
		t.Fatalf("changing the spec before the run started: %v", err)
	}

	startOperator(t, operator.Options{Fix: detect.FixOff})
	nm := waitStatus(t, first.Name, status.FailedStatus)
	st := nm.Status
	if st.Total != 6 || st.Changed != 3 || st.NeedAttention != 1 || st.Actions[string(report.ActionNormalized)] != 3 {
		t.Errorf("status counts: total %d changed %d needAttention %d actions %v; want 6, 3, 1 with 3 normalized", st.Total, st.Changed, st.NeedAttention, st.Actions)
	}
	if len(st.NADs) != 1 || st.NADs[0].Name != "f" || st.NADs[0].Form != string(netconf.FormTruncated) || st.NADs[0].Reason == "" {
		t.Errorf("status.nads = %+v, want the truncated NAD f with its reason", st.NADs)
	}
	if st.StartTime == nil || st.CompletionTime == nil || st.Attempts != 1 || st.ObservedGeneration != nm.Generation {
		t.Errorf("status times/attempts/generation: %+v", st)
	}
	if got := forms(t, ns); got[netconf.FormNested] != 0 || got[netconf.FormFlat] != 5 {
		t.Errorf("forms after the run: %v", got)
	}
	// The whole report, in a Secret only the tool and administrators read.
	if st.Report == nil {
		t.Fatal("status.report is empty")
	}
	sec := &corev1.Secret{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: st.Report.Namespace, Name: st.Report.Name}, sec); err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Summary report.Summary `json:"summary"`
	}
	if err := json.Unmarshal(sec.Data[st.Report.Key], &rep); err != nil || sec.Type != operator.ReportSecretType || rep.Summary.Total != 6 {
		t.Errorf("report Secret: type %s, total %d, err %v", sec.Type, rep.Summary.Total, err)
	}

	// Frozen once started.
	nm.Spec.DryRun = v1alpha1.DryRunServer
	err := env.Client.Update(context.Background(), nm)
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "spec cannot change once the migration has started") {
		t.Errorf("changing a started NADMigration's spec: %v, want the CEL rule's message", err)
	}

	// Every NAD left clean or fixed: Current, and kubectl wait sees Ready.
	second := newMigration("lifecycle-clean", v1alpha1.NADMigrationSpec{Namespaces: []string{ns},
		Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "keep", Operator: metav1.LabelSelectorOpDoesNotExist}}}})
	create(t, second)
	if _, stderr, err := env.Kubectl(context.Background(), nil, "wait", "--for=condition=Ready", "nadmigration/"+second.Name, "--timeout=180s"); err != nil {
		t.Fatalf("kubectl wait --for=condition=Ready: %v: %s", err, stderr)
	}
	nm = waitStatus(t, second.Name, status.CurrentStatus)
	if nm.Status.Total != 5 || nm.Status.Changed != 0 {
		t.Errorf("second run: total %d changed %d, want 5 and 0", nm.Status.Total, nm.Status.Changed)
	}
	out, _, err := env.Kubectl(context.Background(), nil, "get", "nadmigrations")
	if err != nil || !strings.Contains(out, "OPERATION") || !strings.Contains(out, "lifecycle-clean") {
		t.Errorf("kubectl get nadmigrations: %v\n%s", err, out)
	}
}

// Two NADMigrations and a CLI run take turns on the one run Lease: while a
// person's run holds it the first waits, naming the holder, and the second
// is queued behind the first.
func TestNADMigrationsTakeTurns(t *testing.T) {
	ns := namespace(t, "turns", nil)
	create(t, newNAD(ns, "a", nested), newNAD(ns, "b", nested))
	held, err := runlock.Acquire(context.Background(), env.Config, backupNamespace, "person-at-a-terminal", time.Minute, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	startOperator(t, operator.Options{Fix: detect.FixOff})
	create(t, newMigration("turns-1", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}}))
	waitFor(t, "the first to wait for the Lease", func() (bool, error) {
		c := cond(get(t, "turns-1"), v1alpha1.ConditionReconciling)
		return c != nil && c.Reason == v1alpha1.ReasonWaitingForLease && strings.Contains(c.Message, "person-at-a-terminal"), nil
	})
	create(t, newMigration("turns-2", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}, Operation: v1alpha1.OperationRollback}))
	waitFor(t, "the second to be queued", func() (bool, error) {
		c := cond(get(t, "turns-2"), v1alpha1.ConditionReconciling)
		return c != nil && c.Reason == v1alpha1.ReasonQueued && strings.Contains(c.Message, "turns-1"), nil
	})
	if res := kstatus(t, "turns-2"); res.Status != status.InProgressStatus {
		t.Errorf("a queued NADMigration reads %s, want InProgress", res.Status)
	}
	if got := forms(t, ns); got[netconf.FormNested] != 2 {
		t.Fatalf("a NAD changed while another run held the Lease: %v", got)
	}
	held.Release()
	one := waitStatus(t, "turns-1", status.CurrentStatus)
	two := waitStatus(t, "turns-2", status.CurrentStatus)
	if two.Status.StartTime.Before(one.Status.CompletionTime) {
		t.Errorf("the second started at %s, before the first completed at %s", two.Status.StartTime, one.Status.CompletionTime)
	}
	if one.Status.Changed != 2 || two.Status.Actions[string(report.ActionRestored)] != 2 {
		t.Errorf("first changed %d, second restored %v", one.Status.Changed, two.Status.Actions)
	}
}

func cond(nm *v1alpha1.NADMigration, typ string) *metav1.Condition {
	for i := range nm.Status.Conditions {
		if nm.Status.Conditions[i].Type == typ {
			return &nm.Status.Conditions[i]
		}
	}
	return nil
}

// A NADMigration whose status says an attempt is running but also carries
// a completionTime: what the hour-long chaos soak left when the owner of
// open replacements ended a NADMigration (it had created the NADs an
// attempt left missing) while the next attempt started, and that attempt's
// replica was then killed. Taken for finished, it was never resumed and
// read Running forever. It is resumed, and ends.
func TestARunningNADMigrationWithACompletionTimeIsResumed(t *testing.T) {
	ns := namespace(t, "stuck-running", nil)
	create(t, newNAD(ns, "a", nested))
	create(t, newMigration("stuck-running", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}}))
	nm := get(t, "stuck-running")
	now := metav1.Now()
	nm.Status.ObservedGeneration = nm.Generation
	nm.Status.StartTime, nm.Status.CompletionTime, nm.Status.Attempts = &now, &now, 2
	for _, typ := range []string{v1alpha1.ConditionReconciling, v1alpha1.ConditionReady, v1alpha1.ConditionStalled} {
		status := metav1.ConditionFalse
		if typ == v1alpha1.ConditionReconciling {
			status = metav1.ConditionTrue
		}
		meta.SetStatusCondition(&nm.Status.Conditions, metav1.Condition{Type: typ, Status: status, Reason: v1alpha1.ReasonRunning, Message: "attempt 2 running", ObservedGeneration: nm.Generation})
	}
	if err := env.Client.Status().Update(context.Background(), nm); err != nil {
		t.Fatal(err)
	}
	startOperator(t, operator.Options{Fix: detect.FixOff})
	done := waitStatus(t, "stuck-running", status.CurrentStatus)
	if done.Status.Attempts != 3 || !meta.IsStatusConditionTrue(done.Status.Conditions, v1alpha1.ConditionReady) {
		t.Errorf("after the operator resumed it: attempts %d, conditions %+v", done.Status.Attempts, done.Status.Conditions)
	}
	if got := forms(t, ns); got[netconf.FormFlat] != 1 {
		t.Errorf("forms %v", got)
	}
}
