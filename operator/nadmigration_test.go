package operator

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/migration"
)

func TestSetConditionsKeepsOneOfThreeTrue(t *testing.T) {
	for _, tc := range []struct {
		reconciling metav1.ConditionStatus
		reason      string
		want        string
	}{
		{metav1.ConditionTrue, v1alpha1.ReasonRunning, v1alpha1.ConditionReconciling},
		{metav1.ConditionFalse, v1alpha1.ReasonSucceeded, v1alpha1.ConditionReady},
		{metav1.ConditionFalse, v1alpha1.ReasonNeedsAttention, v1alpha1.ConditionStalled},
		{metav1.ConditionFalse, v1alpha1.ReasonTimedOut, v1alpha1.ConditionStalled},
	} {
		st := &v1alpha1.NADMigrationStatus{}
		setConditions(st, 3, metav1.ConditionTrue, v1alpha1.ReasonQueued, "first")
		setConditions(st, 3, tc.reconciling, tc.reason, "then")
		var trues []string
		for _, c := range st.Conditions {
			if c.Status == metav1.ConditionTrue {
				trues = append(trues, c.Type)
			}
			if c.ObservedGeneration != 3 {
				t.Errorf("%s: condition %s observed generation %d", tc.reason, c.Type, c.ObservedGeneration)
			}
		}
		if len(st.Conditions) != 3 || strings.Join(trues, ",") != tc.want {
			t.Errorf("%s: true conditions %v, want %s", tc.reason, trues, tc.want)
		}
		if c := meta.FindStatusCondition(st.Conditions, tc.want); c.Reason != tc.reason {
			t.Errorf("%s: reason %s", tc.reason, c.Reason)
		}
	}
}

func TestOptionsFromSpec(t *testing.T) {
	o, err := options(v1alpha1.NADMigrationSpec{Operation: v1alpha1.OperationRollback, DryRun: v1alpha1.DryRunServer, Recreate: v1alpha1.RecreateNever,
		Timeout: &metav1.Duration{Duration: time.Minute}, Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"a": "b"}}})
	if err != nil || o.Mode != migration.ModeRollback || o.DryRun != migration.DryRunServer || o.Recreate != migration.RecreateNever || o.Timeout != time.Minute || o.Selector.String() != "a=b" {
		t.Errorf("options = %+v, %v", o, err)
	}
	o, err = options(v1alpha1.NADMigrationSpec{})
	if err != nil || o.Mode != migration.ModeMigrate || o.DryRun != migration.DryRunNone || o.Recreate != migration.RecreateAuto || o.Timeout != 30*time.Minute {
		t.Errorf("defaults = %+v, %v", o, err)
	}
	if _, err := options(v1alpha1.NADMigrationSpec{Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Near"}}}}); err == nil {
		t.Error("an invalid selector was accepted")
	}
}

func TestFillBoundsTheNADsListed(t *testing.T) {
	rep := report.New()
	for i := range v1alpha1.MaxListed + 10 {
		rep.Add(report.Item{Namespace: "ns", Name: string(rune('a'+i%26)) + strings.Repeat("x", i), Form: netconf.FormTruncated, Action: report.ActionReported, Reason: strings.Repeat("r", 2000)})
	}
	rep.Add(report.Item{Namespace: "ns", Name: "fixed", Form: netconf.FormNested, Action: report.ActionNormalized})
	st := &v1alpha1.NADMigrationStatus{}
	fill(st, rep, nil, nil)
	if len(st.NADs) != v1alpha1.MaxListed || st.NeedAttention != int32(v1alpha1.MaxListed+10) || st.Changed != 1 || st.Total != int32(v1alpha1.MaxListed+11) {
		t.Errorf("listed %d, needAttention %d, changed %d, total %d", len(st.NADs), st.NeedAttention, st.Changed, st.Total)
	}
	if len(st.NADs[0].Reason) > 512 {
		t.Errorf("a reason of %d bytes was kept in status", len(st.NADs[0].Reason))
	}
}
