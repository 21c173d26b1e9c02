package operator

import (
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/apis/report"
)

// TestCreatedAgain: a NAD a NADMigration left missing, created again by the
// owner of open replacements, leaves its status; the NADMigration reads its
// outcome once none is missing, and not before.
func TestCreatedAgain(t *testing.T) {
	missing := func(name string) v1alpha1.NADOutcome {
		return v1alpha1.NADOutcome{Namespace: "a", Name: name, Form: "nested", Action: string(report.ActionMissing)}
	}
	truncated := v1alpha1.NADOutcome{Namespace: "a", Name: "t", Form: "truncated", Action: string(report.ActionReported)}
	waiting := func(nads ...v1alpha1.NADOutcome) *v1alpha1.NADMigrationStatus {
		st := &v1alpha1.NADMigrationStatus{ObservedGeneration: 1, NADs: nads, NeedAttention: int32(len(nads)), Actions: map[string]int32{}}
		for _, o := range nads {
			st.Actions[o.Action]++
		}
		setConditions(st, 1, metav1.ConditionTrue, v1alpha1.ReasonNADsMissing, "missing")
		return st
	}
	done := map[string]report.Item{"a/x": {Namespace: "a", Name: "x", Action: report.ActionNormalized}}
	for _, tc := range []struct {
		name              string
		st                *v1alpha1.NADMigrationStatus
		created, missing  int
		nads              int
		ready, stalled    bool
		reason            string
		normalized, total int32
	}{
		{name: "the only missing NAD created: Ready", st: waiting(missing("x")), created: 1, ready: true, reason: v1alpha1.ReasonSucceeded, normalized: 1},
		{name: "another still missing: still waiting", st: waiting(missing("x"), missing("y")), created: 1, missing: 1, nads: 1, reason: v1alpha1.ReasonNADsMissing, normalized: 1},
		{name: "a NAD that needs a person stays: Stalled", st: waiting(missing("x"), truncated), created: 1, nads: 1, stalled: true, reason: v1alpha1.ReasonNeedsAttention, normalized: 1},
		{name: "none of its NADs: unchanged", st: waiting(missing("y")), missing: 1, nads: 1, reason: v1alpha1.ReasonNADsMissing},
	} {
		t.Run(tc.name, func(t *testing.T) {
			created, missing := createdAgain(tc.st, done)
			if created != tc.created || missing != tc.missing || len(tc.st.NADs) != tc.nads || int(tc.st.NeedAttention) != tc.nads {
				t.Errorf("created %d, missing %d, nads %v, needAttention %d", created, missing, tc.st.NADs, tc.st.NeedAttention)
			}
			if got := meta.IsStatusConditionTrue(tc.st.Conditions, v1alpha1.ConditionReady); got != tc.ready {
				t.Errorf("Ready %v, want %v: %v", got, tc.ready, tc.st.Conditions)
			}
			if got := meta.IsStatusConditionTrue(tc.st.Conditions, v1alpha1.ConditionStalled); got != tc.stalled {
				t.Errorf("Stalled %v, want %v: %v", got, tc.stalled, tc.st.Conditions)
			}
			if c := meta.FindStatusCondition(tc.st.Conditions, v1alpha1.ConditionReady); c.Reason != tc.reason {
				t.Errorf("reason %s, want %s", c.Reason, tc.reason)
			}
			if got := tc.st.Actions[string(report.ActionNormalized)]; got != tc.normalized {
				t.Errorf("normalized %d, want %d (actions %v)", got, tc.normalized, tc.st.Actions)
			}
			if (tc.st.CompletionTime != nil) != (tc.ready || tc.stalled) {
				t.Errorf("completion time %v", tc.st.CompletionTime)
			}
		})
	}
}
