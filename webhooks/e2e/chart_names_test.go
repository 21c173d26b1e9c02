package e2e

import (
	"context"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/harvester/netconf-migrator/test/testenv"
)

// everything renders every object the chart can make.
var everything = map[string]any{
	"certificates":        map[string]any{"mode": "cert-manager"},
	"migrationJob":        map[string]any{"enabled": true},
	"podDisruptionBudget": map[string]any{"enabled": true},
	"networkPolicy":       map[string]any{"enabled": true},
	"metrics": map[string]any{
		"serviceMonitor":   map[string]any{"enabled": true},
		"prometheusRule":   map[string]any{"enabled": true},
		"grafanaDashboard": map[string]any{"enabled": true},
	},
}

// keepsItsName is what the chart names the same whatever the overrides:
// the CRD (its name is its group's), the
// NADMigration (named by the release and what it runs) and the backup
// namespace (a value).
func keepsItsName(u *unstructured.Unstructured) bool {
	return u.GetKind() == "CustomResourceDefinition" || u.GetKind() == "NADMigration" || u.GetKind() == "Namespace"
}

// With nameOverride and fullnameOverride, every object the chart makes is
// named after fullnameOverride and labelled with nameOverride, and every
// reference between them still meets its object: selectors their Pods,
// bindings their roles and accounts, the webhook its Service, certificate
// and configuration. The API server accepts the result (server dry run).
func TestChartNamesFollowTheOverrides(t *testing.T) {
	ctx := context.Background()
	for _, ns := range []string{ownNamespace, "cattle-dashboards"} {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, kind := range []string{"Certificate", "Issuer"} {
		installSchemaless(t, "cert-manager.io", kind)
	}
	installSchemaless(t, "monitoring.coreos.com", "ServiceMonitor")
	installSchemaless(t, "monitoring.coreos.com", "PrometheusRule")
	values := map[string]any{"nameOverride": "nadfix", "fullnameOverride": "nm"}
	for k, v := range everything {
		values[k] = v
	}
	out, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Values: values})
	if err != nil {
		t.Fatal(err)
	}
	objs := objects(t, out)
	byKind := map[string]map[string]*unstructured.Unstructured{}
	for _, u := range objs {
		if byKind[u.GetKind()] == nil {
			byKind[u.GetKind()] = map[string]*unstructured.Unstructured{}
		}
		byKind[u.GetKind()][u.GetName()] = u
	}
	for _, kind := range []string{"Deployment", "Service", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
		"MutatingWebhookConfiguration", "ValidatingAdmissionPolicy", "Certificate", "Issuer", "ServiceMonitor", "PrometheusRule",
		"PodDisruptionBudget", "NetworkPolicy", "Job", "ConfigMap"} {
		if len(byKind[kind]) == 0 {
			t.Errorf("the chart rendered no %s with every option on", kind)
		}
	}

	// Names and labels.
	for key, u := range objs {
		name := u.GetName()
		if !keepsItsName(u) && name != "nm" && !strings.HasPrefix(name, "nm-") && !strings.HasPrefix(name, "00-nm") {
			t.Errorf("%s is not named after fullnameOverride", key)
		}
		if strings.Contains(name, "netconf-migrator") && !keepsItsName(u) {
			t.Errorf("%s keeps the chart's name", key)
		}
		if got, ok := u.GetLabels()["app.kubernetes.io/name"]; !ok || got != "nadfix" {
			t.Errorf("%s: app.kubernetes.io/name %q, want nadfix", key, got)
		}
	}

	// Pods: what each workload runs, with its account and its labels.
	type pod struct {
		owner   string
		labels  labels.Set
		account string
		args    []string
	}
	var pods []pod
	for key, u := range objs {
		var spec map[string]any
		var podLabels map[string]string
		switch u.GetKind() {
		case "Deployment", "Job":
			spec, _, _ = unstructured.NestedMap(u.Object, "spec", "template", "spec")
			podLabels, _, _ = unstructured.NestedStringMap(u.Object, "spec", "template", "metadata", "labels")
		case "Pod":
			spec, _, _ = unstructured.NestedMap(u.Object, "spec")
			podLabels = u.GetLabels()
		default:
			continue
		}
		account, _ := spec["serviceAccountName"].(string)
		if byKind["ServiceAccount"][account] == nil {
			t.Errorf("%s runs as ServiceAccount %q, which the chart does not make", key, account)
		}
		var args []string
		for _, c := range spec["containers"].([]any) {
			for _, a := range c.(map[string]any)["args"].([]any) {
				args = append(args, a.(string))
			}
		}
		pods = append(pods, pod{key, labels.Set(podLabels), account, args})
		if u.GetKind() == "Deployment" {
			sel, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
			if len(sel) == 0 || !labels.SelectorFromSet(sel).Matches(labels.Set(podLabels)) {
				t.Errorf("%s: selector %v does not match its Pods' labels %v", key, sel, podLabels)
			}
		}
	}
	selects := func(key string, sel map[string]string) {
		t.Helper()
		if len(sel) == 0 {
			t.Errorf("%s selects nothing", key)
			return
		}
		for _, p := range pods {
			if strings.HasPrefix(p.owner, "Deployment/") && labels.SelectorFromSet(sel).Matches(p.labels) {
				return
			}
		}
		t.Errorf("%s: selector %v matches no Deployment's Pods", key, sel)
	}
	for key, u := range objs {
		switch u.GetKind() {
		case "Service":
			sel, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector")
			selects(key, sel)
		case "PodDisruptionBudget":
			sel, _, _ := unstructured.NestedStringMap(u.Object, "spec", "selector", "matchLabels")
			selects(key, sel)
		case "NetworkPolicy":
			sel, _, _ := unstructured.NestedStringMap(u.Object, "spec", "podSelector", "matchLabels")
			selects(key, sel)
		case "RoleBinding", "ClusterRoleBinding":
			kind, _, _ := unstructured.NestedString(u.Object, "roleRef", "kind")
			role, _, _ := unstructured.NestedString(u.Object, "roleRef", "name")
			if byKind[kind][role] == nil {
				t.Errorf("%s binds %s %q, which the chart does not make", key, kind, role)
			}
			subjects, _, _ := unstructured.NestedSlice(u.Object, "subjects")
			for _, s := range subjects {
				s := s.(map[string]any)
				if s["kind"] == "ServiceAccount" && byKind["ServiceAccount"][s["name"].(string)] == nil {
					t.Errorf("%s binds ServiceAccount %q, which the chart does not make", key, s["name"])
				}
			}
		}
	}

	// The webhook: its Service, its configuration and its certificate.
	var webhookArgs []string
	for _, p := range pods {
		if p.owner == "Deployment/nm-webhook" {
			webhookArgs = p.args
		}
	}
	for _, want := range []string{"--service-name=nm-webhook", "--webhook-config-name=00-nm"} {
		if !slices.Contains(webhookArgs, want) {
			t.Errorf("the webhook's arguments %v lack %s", webhookArgs, want)
		}
	}
	mwc := byKind["MutatingWebhookConfiguration"]["00-nm"]
	if mwc == nil {
		t.Fatal("no MutatingWebhookConfiguration 00-nm")
	}
	hooks, _, _ := unstructured.NestedSlice(mwc.Object, "webhooks")
	service, _, _ := unstructured.NestedString(hooks[0].(map[string]any), "clientConfig", "service", "name")
	if byKind["Service"][service] == nil || service != "nm-webhook" {
		t.Errorf("the webhook configuration calls Service %q", service)
	}
	if got := mwc.GetAnnotations()["cert-manager.io/inject-ca-from"]; got != ownNamespace+"/nm-webhook" || byKind["Certificate"]["nm-webhook"] == nil {
		t.Errorf("cert-manager injects the CA from %q", got)
	}
	dnsNames, _, _ := unstructured.NestedStringSlice(byKind["Certificate"]["nm-webhook"].Object, "spec", "dnsNames")
	if !slices.Contains(dnsNames, "nm-webhook."+ownNamespace+".svc") {
		t.Errorf("the serving certificate's names %v lack the Service's", dnsNames)
	}
	endpoints, _, _ := unstructured.NestedSlice(byKind["ServiceMonitor"]["nm"].Object, "spec", "endpoints")
	if server, _, _ := unstructured.NestedString(endpoints[0].(map[string]any), "tlsConfig", "serverName"); !slices.Contains(dnsNames, server) {
		t.Errorf("the ServiceMonitor verifies the name %q, which the certificate does not carry (%v)", server, dnsNames)
	}

	if stdout, stderr, err := env.Kubectl(ctx, out, "apply", "--dry-run=server", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply --dry-run=server: %v\n%s%s", err, stdout, stderr)
	}

	// The schema refuses names Kubernetes would.
	for _, bad := range []map[string]any{
		{"fullnameOverride": "Not_A_Name"},
		{"fullnameOverride": strings.Repeat("a", 41)},
		{"nameOverride": "-leading-dash"},
	} {
		if _, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Values: bad}); err == nil || !strings.Contains(err.Error(), "Override") {
			t.Errorf("values %v: %v, want the schema to refuse them", bad, err)
		}
	}
}
