package e2e

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
)

// TestARetryPastItsDeadlineResumesFirst: a NADMigration's first attempt
// deletes a nested NAD beside Harvester v1.6 to replace it while
// Harvester's controllers are down, so the NAD is missing when the
// replacement's budget runs out; status.nads names it. The retry comes
// after the NADMigration's timeout: it still creates the NAD from its
// backup before it stops (it ended TimedOut with the NAD missing and named
// nowhere before).
func TestARetryPastItsDeadlineResumesFirst(t *testing.T) {
	h, ns, before := vlanNADBesideV16(t, "past-deadline")
	h.Controllers.SetDown(true)
	t.Cleanup(func() { h.Controllers.SetDown(false) })

	startOperator(t, operator.Options{Fix: detect.FixOff, ReplaceBudget: 2 * time.Second, RetryAfter: 4 * time.Second})
	create(t, newMigration("past-deadline", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}, Timeout: &metav1.Duration{Duration: 3 * time.Second}}))
	waitFor(t, "the first attempt to leave the NAD missing, named in status", func() (bool, error) {
		nm := get(t, "past-deadline")
		c := meta.FindStatusCondition(nm.Status.Conditions, v1alpha1.ConditionReconciling)
		named := len(nm.Status.NADs) == 1 && nm.Status.NADs[0].Name == "vlan100" && nm.Status.NADs[0].Action == string(report.ActionMissing)
		return c != nil && c.Reason == v1alpha1.ReasonNADsMissing && named, nil
	})
	h.Controllers.SetDown(false) // Harvester's controllers are back: the old object goes

	waitFor(t, "the retry past the deadline to end", func() (bool, error) {
		return get(t, "past-deadline").Status.CompletionTime != nil, nil
	})
	nm := get(t, "past-deadline")
	if c := meta.FindStatusCondition(nm.Status.Conditions, v1alpha1.ConditionStalled); c == nil || c.Reason != v1alpha1.ReasonTimedOut {
		t.Errorf("the retry past the deadline ended with %v, want Stalled/TimedOut", nm.Status.Conditions)
	}
	f, after := form(t, ns, "vlan100")
	if after == nil || after.UID == before.UID || f != netconf.FormFlat {
		t.Fatalf("after the retry past the deadline: %v, want the NAD created again, flat", after)
	}
	if nm.Status.Actions[string(report.ActionNormalized)] != 1 || nm.Status.Attempts != 2 {
		t.Errorf("status: attempts %d, actions %v; want 2 attempts and the resumed NAD counted normalized", nm.Status.Attempts, nm.Status.Actions)
	}
}

// TestAReplaceFixLeftMissingIsFinished: the legacy-NAD watch, set to
// Replace, deletes a nested NAD beside Harvester v1.6 while Harvester's
// controllers are down for longer than the replacement's budget: the NAD
// is missing (the gauge says so) and, once its finalizers go, the watch
// forgets it (NotFound). The operator's owner of open replacements creates
// it again from its backup once the controllers are back; nothing else
// would have (no NADMigration, no CLI run).
func TestAReplaceFixLeftMissingIsFinished(t *testing.T) {
	h, ns, before := vlanNADBesideV16(t, "replace-fix-missing")
	h.Controllers.SetDown(true)
	t.Cleanup(func() { h.Controllers.SetDown(false) })

	startOperator(t, operator.Options{Fix: detect.FixReplace, ReplaceBudget: 2 * time.Second, BackupInterval: 300 * time.Millisecond})
	waitFor(t, "the watch's replacement to leave the NAD missing, counted", func() (bool, error) {
		_, cur := form(t, ns, "vlan100")
		return cur != nil && cur.UID == before.UID && cur.DeletionTimestamp != nil && gauge(t, "netconf_migrator_missing_nads", nil) == 1, nil
	})
	time.Sleep(3 * time.Second) // past the replacement's budget: the watch gave up on it
	h.Controllers.SetDown(false)
	waitFor(t, "the NAD to be created again from its backup", func() (bool, error) {
		f, cur := form(t, ns, "vlan100")
		return cur != nil && cur.UID != before.UID && f == netconf.FormFlat, nil
	})
	waitFor(t, "the missing-NAD gauge back to 0 and no backup left", func() (bool, error) {
		list := &corev1.SecretList{}
		if err := env.Client.List(context.Background(), list, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil {
			return false, err
		}
		return len(list.Items) == 0 && gauge(t, "netconf_migrator_missing_nads", nil) == 0, nil
	})
}

// TestANADMigrationSaysMissingUntilTheNADIsCreated: a NADMigration's
// attempt leaves a NAD missing (Harvester v1.6's controllers are down past
// the replacement's budget) and waits to retry. It says so, naming the NAD,
// until the operator's owner of open replacements creates the NAD once the
// controllers are back; then it reads Ready, with the NAD counted
// normalized and named no more.
func TestANADMigrationSaysMissingUntilTheNADIsCreated(t *testing.T) {
	h, ns, before := vlanNADBesideV16(t, "missing-until-created")
	h.Controllers.SetDown(true)
	t.Cleanup(func() { h.Controllers.SetDown(false) })

	startOperator(t, operator.Options{Fix: detect.FixOff, ReplaceBudget: 2 * time.Second, RetryAfter: time.Hour, BackupInterval: 300 * time.Millisecond})
	create(t, newMigration("missing-until-created", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}}))
	waitFor(t, "the attempt to leave the NAD missing, named in status", func() (bool, error) {
		nm := get(t, "missing-until-created")
		c := meta.FindStatusCondition(nm.Status.Conditions, v1alpha1.ConditionReconciling)
		return c != nil && c.Reason == v1alpha1.ReasonNADsMissing && len(nm.Status.NADs) == 1 && nm.Status.NADs[0].Action == string(report.ActionMissing), nil
	})
	h.Controllers.SetDown(false)
	waitFor(t, "the NADMigration to read Ready once the NAD exists again", func() (bool, error) {
		return meta.IsStatusConditionTrue(get(t, "missing-until-created").Status.Conditions, v1alpha1.ConditionReady), nil
	})
	nm := get(t, "missing-until-created")
	if len(nm.Status.NADs) != 0 || nm.Status.Actions[string(report.ActionNormalized)] != 1 || nm.Status.Actions[string(report.ActionMissing)] != 0 || nm.Status.CompletionTime == nil {
		t.Errorf("status once the NAD was created: nads %v, actions %v, completion %v", nm.Status.NADs, nm.Status.Actions, nm.Status.CompletionTime)
	}
	if f, after := form(t, ns, "vlan100"); after == nil || after.UID == before.UID || f != netconf.FormFlat {
		t.Errorf("the NAD: %v", after)
	}
}
