package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/yaml"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
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
	// Clean NADs in the forms a wrong definition of legacy counts: a
	// conflist, an empty config and one that is not JSON; and a nested one.
	// No NADMigration covers this namespace.
	forms := namespace(t, "dashboard-forms", nil)
	create(t, newNAD(forms, "conflist", `{"cniVersion":"0.3.1","name":"%s","plugins":[{"type":"bridge","bridge":"%s-br"}]}`),
		newNAD(forms, "empty", ""), newNAD(forms, "invalid", `{"cniVersion":`), newNAD(forms, "nested", nested))
	// Later tests of this control plane count NADs by form cluster-wide.
	t.Cleanup(func() {
		ctx := context.Background()
		_ = env.Client.DeleteAllOf(ctx, &nadv1.NetworkAttachmentDefinition{}, client.InNamespace(forms))
		waitFor(t, "the dashboard's NADs to go", func() (bool, error) {
			l := &nadv1.NetworkAttachmentDefinitionList{}
			err := env.Client.List(ctx, l, client.InNamespace(forms))
			return err == nil && len(l.Items) == 0, err
		})
	})
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

	// One definition of legacy (issue 36): the panel "NADs in a legacy
	// form" asks what the alert asks, and on the operator's live registry
	// it gives the NADs stored in a form detect.Legacy names, not every
	// NAD that is not flat.
	var panel string
	for _, p := range dash.Panels {
		if p.Title == "NADs in a legacy form" && len(p.Targets) == 1 {
			panel = p.Targets[0].Expr
		}
	}
	alert := ruleExpr(t, "NetConfMigratorLegacyNADStored")
	if want := strings.TrimSuffix(alert, " > 0"); panel != want {
		t.Errorf("the panel \"NADs in a legacy form\" asks %q; the alert NetConfMigratorLegacyNADStored asks %q", panel, alert)
	}
	var got, want float64
	waitFor(t, "the panel to count the NADs stored in a legacy form", func() (bool, error) {
		families, err := metrics.Registry.Gather()
		if err != nil {
			return false, err
		}
		got, err = sumOf(families, panel)
		if err != nil {
			return false, err
		}
		want = 0
		clean := map[string]bool{}
		for _, f := range families {
			if f.GetName() != "netconf_migrator_stored_nads" {
				continue
			}
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "form" && detect.Legacy(netconf.Form(l.GetValue())) {
						want += value(m)
					} else if l.GetName() == "form" && value(m) > 0 {
						clean[l.GetValue()] = true
					}
				}
			}
		}
		// Until the operator counted this test's clean NADs, a wrong
		// definition could not show.
		return got == want && clean["conflist"] && clean["empty"] && clean["invalid"], nil
	})
	if got != want {
		t.Errorf("the panel gives %v NADs in a legacy form; %v are stored in a form detect.Legacy names", got, want)
	}
}

// ruleExpr is the expression of the chart's alert named alert.
func ruleExpr(t *testing.T, alert string) string {
	t.Helper()
	out, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Values: map[string]any{
		"metrics": map[string]any{"prometheusRule": map[string]any{"enabled": true}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range bytes.Split(out, []byte("\n---\n")) {
		u := &unstructured.Unstructured{}
		if yaml.Unmarshal(doc, &u.Object) != nil || u.GetKind() != "PrometheusRule" {
			continue
		}
		groups, _, _ := unstructured.NestedSlice(u.Object, "spec", "groups")
		for _, g := range groups {
			rules, _, _ := unstructured.NestedSlice(g.(map[string]any), "rules")
			for _, r := range rules {
				if r := r.(map[string]any); r["alert"] == alert {
					return fmt.Sprint(r["expr"])
				}
			}
		}
	}
	t.Fatalf("the chart renders no alert %s", alert)
	return ""
}

// sumOf evaluates sum(name) or sum(name{matchers}), with =, != and =~
// matchers, over gathered metric families: the queries the dashboard's
// stat panels make, without a Prometheus.
func sumOf(families []*dto.MetricFamily, expr string) (float64, error) {
	m := regexp.MustCompile(`^sum\(([a-z_]+)(?:\{(.*)\})?\)$`).FindStringSubmatch(expr)
	if m == nil {
		return 0, fmt.Errorf("%q is not sum(metric{matchers})", expr)
	}
	type matcher struct {
		label, op string
		re        *regexp.Regexp
		value     string
	}
	var matchers []matcher
	for _, part := range regexp.MustCompile(`([a-z_]+)(=~|!=|=)"([^"]*)"`).FindAllStringSubmatch(m[2], -1) {
		mt := matcher{label: part[1], op: part[2], value: part[3]}
		if mt.op == "=~" {
			mt.re = regexp.MustCompile("^(?:" + part[3] + ")$")
		}
		matchers = append(matchers, mt)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != m[1] {
			continue
		}
	metric:
		for _, sample := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range sample.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			for _, mt := range matchers {
				v := labels[mt.label]
				if (mt.op == "=" && v != mt.value) || (mt.op == "!=" && v == mt.value) || (mt.op == "=~" && !mt.re.MatchString(v)) {
					continue metric
				}
			}
			sum += value(sample)
		}
	}
	return sum, nil
}
