package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// TestGrafanaDashboard: the chart's dashboard (metrics.grafanaDashboard) is
// a ConfigMap rancher-monitoring's Grafana loads (cattle-dashboards,
// grafana_dashboard "1") holding JSON that parses, and every metric its
// queries name is one the binaries serve: the operator's, read from its
// registry after a run, and the webhook's, scraped from the webhook
// process after an admission.
func TestGrafanaDashboard(t *testing.T) {
	out, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Values: map[string]any{
		"metrics": map[string]any{"grafanaDashboard": map[string]any{"enabled": true}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var cm *unstructured.Unstructured
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		u := &unstructured.Unstructured{}
		if yaml.Unmarshal(doc, &u.Object) == nil && u.GetKind() == "ConfigMap" && u.GetName() == "netconf-migrator-dashboard" {
			cm = u
		}
	}
	if cm == nil || cm.GetNamespace() != "cattle-dashboards" || cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Fatalf("the chart rendered no dashboard ConfigMap for rancher-monitoring: %v", cm)
	}
	raw, _, _ := unstructured.NestedString(cm.Object, "data", "netconf-migrator.json")
	var dash struct {
		Panels []struct {
			Title   string
			Targets []struct{ Expr string }
		}
	}
	if err := json.Unmarshal([]byte(raw), &dash); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}

	// What the binaries serve.
	served := map[string]bool{}
	ns := namespace(t, "dashboard", nil)
	create(t, newNAD(ns, "a", nested))
	startOperator(t, operator.Options{Fix: detect.FixOff})
	create(t, newMigration("dashboard", v1alpha1.NADMigrationSpec{Namespaces: []string{ns}}))
	waitStatus(t, "dashboard", status.CurrentStatus)
	waitFor(t, "the operator's gauges", func() (bool, error) {
		families, err := metrics.Registry.Gather()
		for _, f := range families {
			served[f.GetName()] = true
		}
		return served["netconf_migrator_nadmigrations"] && served["netconf_migrator_stored_nads"], err
	})
	port, err := testenv.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	hook := startWebhookProcessMetrics(t, env, testenv.BuildBinary(t), ns, func() time.Duration { return time.Second }, fmt.Sprintf("127.0.0.1:%d", port))
	help := regexp.MustCompile(`^# TYPE (\S+) `)
	waitFor(t, "the webhook's metrics", func() (bool, error) {
		resp, err := http.Get(hook.metrics)
		if err != nil {
			return false, nil
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			if m := help.FindStringSubmatch(sc.Text()); m != nil {
				served[m[1]] = true
			}
		}
		return served["netconf_migrator_admissions_total"], nil
	})

	names := regexp.MustCompile(`\b((?:netconf_migrator|controller_runtime_webhook)_[a-z_]+)`)
	queried := 0
	for _, p := range dash.Panels {
		for _, target := range p.Targets {
			for _, m := range names.FindAllString(target.Expr, -1) {
				queried++
				base := m
				for _, suffix := range []string{"_bucket", "_sum", "_count"} {
					if b, ok := strings.CutSuffix(m, suffix); ok && served[b] {
						base = b
					}
				}
				if !served[base] {
					t.Errorf("panel %q queries %s, which no binary serves", p.Title, m)
				}
			}
		}
	}
	if queried < 10 {
		t.Errorf("the dashboard queries %d metrics of ours", queried)
	}
}
