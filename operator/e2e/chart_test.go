package e2e

import (
	"bytes"
	"context"
	"regexp"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// The chart's NADMigration (operator.nadMigration.create) is run by the
// operator, and every metric its PrometheusRule alerts on is one the
// operator serves.
func TestChartNADMigrationAndAlerts(t *testing.T) {
	dropUnfixable(t) // the chart's NADMigration covers every namespace
	out, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Values: map[string]any{
		"operator": map[string]any{"nadMigration": map[string]any{"create": true}},
		"metrics":  map[string]any{"prometheusRule": map[string]any{"enabled": true}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	docs := map[string]*unstructured.Unstructured{}
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil || u.GetKind() == "" {
			continue
		}
		docs[u.GetKind()] = u
	}
	nm, rule := docs["NADMigration"], docs["PrometheusRule"]
	if nm == nil || rule == nil {
		t.Fatalf("the chart rendered no NADMigration or PrometheusRule:\n%s", out)
	}
	ns := namespace(t, "chart", nil)
	create(t, newNAD(ns, "a", flat))
	startOperator(t, operator.Options{Fix: detect.FixOff})
	waitFor(t, "the operator to count the NAD", func() (bool, error) {
		return gauge(t, "netconf_migrator_stored_nads", map[string]string{"form": "flat"}) >= 1, nil
	})
	raw, _ := yaml.Marshal(nm.Object)
	if _, stderr, err := env.Kubectl(context.Background(), raw, "create", "-f", "-"); err != nil {
		t.Fatalf("creating the chart's NADMigration: %v\n%s", err, stderr)
	}
	waitStatus(t, nm.GetName(), status.CurrentStatus)

	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, f := range families {
		served[f.GetName()] = true
	}
	groups, _, _ := unstructured.NestedSlice(rule.Object, "spec", "groups")
	names := regexp.MustCompile(`netconf_migrator_[a-z_]+`)
	alerts := 0
	for _, g := range groups {
		rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
		for _, r := range rules {
			expr, _, _ := unstructured.NestedString(r.(map[string]any), "expr")
			alerts++
			for _, m := range names.FindAllString(expr, -1) {
				if !served[m] {
					t.Errorf("alert %v uses %s, which the operator does not serve", r.(map[string]any)["alert"], m)
				}
			}
			if !strings.Contains(expr, "netconf_migrator_") {
				t.Errorf("alert %v uses no metric of ours: %s", r.(map[string]any)["alert"], expr)
			}
		}
	}
	if alerts != 6 {
		t.Errorf("%d alerts, want 6 (legacy NAD stored, NADMigration failed, NADs missing, backups open, earlier backups unseen, VMs that cannot live-migrate)", alerts)
	}
}
