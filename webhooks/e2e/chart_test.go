package e2e

import (
	"context"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// objects decodes a multi-document manifest, by kind/name.
func objects(t testing.TB, manifest []byte) map[string]*unstructured.Unstructured {
	t.Helper()
	out := map[string]*unstructured.Unstructured{}
	for _, doc := range strings.Split(string(manifest), "\n---") {
		if !strings.Contains(doc, "kind:") {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
			t.Fatalf("decoding %q: %v", doc, err)
		}
		out[u.GetKind()+"/"+u.GetName()] = u
	}
	return out
}

// TestChartMatchesKustomize renders the Helm chart (Helm's own packages, as
// `helm template` would) and the kustomize manifests, for every value set
// both can render: the defaults (config/default), cert-manager
// (config/cert-manager), the migration Job (config/default and
// config/job), and the disruption budget (config/pdb). Every object they share must be equal, metadata labels
// aside, and neither may have one the other lacks: the two ways to install
// must not drift.
func TestChartMatchesKustomize(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values map[string]any
		dirs   []string
	}{
		{"defaults", nil, []string{"default"}},
		{"cert-manager", map[string]any{"certificates": map[string]any{"mode": "cert-manager"}}, []string{"cert-manager"}},
		{"migration Job", map[string]any{"migrationJob": map[string]any{"enabled": true}}, []string{"default", "job"}},
		{"disruption budget", map[string]any{"podDisruptionBudget": map[string]any{"enabled": true}}, []string{"default", "pdb"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chart, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Values: tc.values})
			if err != nil {
				t.Fatal(err)
			}
			fromChart, fromKustomize := objects(t, chart), map[string]*unstructured.Unstructured{}
			// The chart names its Job per release revision (a Job's
			// template cannot change on upgrade); kustomize has one.
			if j := fromChart["Job/netconf-migrator-migrate-r1"]; j != nil {
				delete(fromChart, "Job/netconf-migrator-migrate-r1")
				fromChart["Job/netconf-migrator-migrate"] = j
			}
			for _, dir := range tc.dirs {
				for k, u := range objects(t, kustomize(t, dir)) {
					fromKustomize[k] = u
				}
			}
			compareObjects(t, fromKustomize, fromChart, strings.Join(tc.dirs, " and config/"))
		})
	}
}

func compareObjects(t *testing.T, fromKustomize, fromChart map[string]*unstructured.Unstructured, dirs string) {
	t.Helper()
	var keys []string
	for k := range fromKustomize {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if strings.HasPrefix(k, "Namespace/") {
			continue // Helm installs into the release's namespace
		}
		want, got := fromKustomize[k], fromChart[k]
		if got == nil {
			t.Errorf("the chart has no %s", k)
			continue
		}
		strip := func(u *unstructured.Unstructured) map[string]any {
			o := u.DeepCopy().Object
			delete(o, "metadata")
			return o
		}
		// kubectl's kustomize does not know every cluster-scoped kind (the
		// ValidatingAdmissionPolicy) and gives it the namespace; the API
		// server ignores it there, so only namespaced kinds compare it.
		if got.GetNamespace() != want.GetNamespace() && namespaced(t, got) {
			t.Errorf("%s: namespace %q, kustomize %q", k, got.GetNamespace(), want.GetNamespace())
		}
		if diff := cmp.Diff(strip(want), strip(got)); diff != "" {
			t.Errorf("%s differs between kustomize (-) and the chart (+):\n%s", k, diff)
		}
	}
	for k := range fromChart {
		if fromKustomize[k] == nil {
			t.Errorf("the chart has %s, config/%s does not", k, dirs)
		}
	}
}

// TestChartInstalls lints the chart and applies what it renders, for each
// certificate mode and with the migration Job, to the API server with a
// server-side dry run; bad values fail with a message naming them.
func TestChartInstalls(t *testing.T) {
	ctx := context.Background()
	if err := env.CreateNamespace(ctx, ownNamespace, nil); err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"Certificate", "Issuer"} {
		installSchemaless(t, "cert-manager.io", kind)
	}
	installSchemaless(t, "monitoring.coreos.com", "ServiceMonitor")
	for name, values := range map[string]map[string]any{
		"defaults": nil,
		"cert-manager": {"certificates": map[string]any{"mode": "cert-manager"}, "migrationJob": map[string]any{"enabled": true},
			"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}}, "networkPolicy": map[string]any{"enabled": true}},
		"secret": {"certificates": map[string]any{"mode": "secret", "caBundle": "Y2E="}, "webhook": map[string]any{"excludeNamespaces": []any{"kube-system"}, "warnFlat": true},
			"preStopDelaySeconds": 5, "metrics": map[string]any{"enabled": false}, "image": map[string]any{"digest": "sha256:" + strings.Repeat("ab", 32)}},
	} {
		t.Run(name, func(t *testing.T) {
			// RenderChart runs Helm's linter first and fails on its errors and warnings.
			out, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Values: values})
			if err != nil {
				t.Fatal(err)
			}
			if stdout, stderr, err := env.Kubectl(ctx, out, "apply", "--dry-run=server", "-f", "-"); err != nil {
				t.Fatalf("kubectl apply --dry-run=server: %v\n%s%s\n%s", err, stdout, stderr, out)
			}
		})
	}
	t.Run("bad values fail with the value named", func(t *testing.T) {
		for path, values := range map[string]map[string]any{
			"replicas":          {"replicas": "two"},
			"certificates.mode": {"certificates": map[string]any{"mode": "vault"}},
			"webhook.onInvalid": {"webhook": map[string]any{"onInvalid": "maybe"}},
			// A duration string is what --replace-budget takes, but the
			// grace period is counted from this number.
			"operator.replaceBudgetSeconds": {"operator": map[string]any{"replaceBudgetSeconds": "2m"}},
		} {
			_, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Values: values})
			if err == nil || !strings.Contains(err.Error(), strings.ReplaceAll(path, ".", "/")) {
				t.Errorf("%s: %v", path, err)
			}
		}
	})
}

// TestServiceMonitorVerifiesTheCertificate: with each certificate mode, the
// ServiceMonitor verifies the metrics' certificate against a CA that signs
// it, under a name the certificate carries, and both the webhook and the
// operator serve their metrics with that certificate.
func TestServiceMonitorVerifiesTheCertificate(t *testing.T) {
	for _, mode := range []string{"self-signed", "cert-manager", "secret"} {
		t.Run(mode, func(t *testing.T) {
			values := map[string]any{"certificates": map[string]any{"mode": mode}, "metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}}}
			if mode == "secret" {
				values["certificates"].(map[string]any)["caBundle"] = "Y2E="
			}
			out, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Values: values})
			if err != nil {
				t.Fatal(err)
			}
			objs := objects(t, out)
			sm := objs["ServiceMonitor/netconf-migrator"]
			if sm == nil {
				t.Fatal("no ServiceMonitor")
			}
			endpoints, _, _ := unstructured.NestedSlice(sm.Object, "spec", "endpoints")
			if len(endpoints) != 1 {
				t.Fatalf("%d endpoints", len(endpoints))
			}
			tlsConfig, _, _ := unstructured.NestedMap(endpoints[0].(map[string]any), "tlsConfig")
			if skip, _ := tlsConfig["insecureSkipVerify"].(bool); skip {
				t.Error("insecureSkipVerify")
			}
			serverName, _ := tlsConfig["serverName"].(string)
			// The names the serving certificate carries: cert-controller's
			// DNSName is <service>.<namespace>.svc; cert-manager's dnsNames.
			names := []string{"netconf-migrator-webhook." + ownNamespace + ".svc"}
			if c := objs["Certificate/netconf-migrator-webhook"]; c != nil {
				names, _, _ = unstructured.NestedStringSlice(c.Object, "spec", "dnsNames")
			}
			if !slices.Contains(names, serverName) {
				t.Errorf("serverName %q is none of the certificate's names %v", serverName, names)
			}
			secret, _, _ := unstructured.NestedString(tlsConfig, "ca", "secret", "name")
			configMap, _, _ := unstructured.NestedString(tlsConfig, "ca", "configMap", "name")
			switch {
			case mode == "secret" && (configMap == "" || objs["ConfigMap/"+configMap] == nil):
				t.Errorf("the CA is not in a ConfigMap the chart renders: %v", tlsConfig["ca"])
			case mode != "secret" && secret != "netconf-migrator-webhook-cert":
				t.Errorf("the CA is read from Secret %q, not the serving certificate's", secret)
			}
			for _, dep := range []string{"netconf-migrator-webhook", "netconf-migrator-operator"} {
				d := objs["Deployment/"+dep]
				var args []string
				if d != nil {
					containers, _, _ := unstructured.NestedSlice(d.Object, "spec", "template", "spec", "containers")
					for _, a := range containers[0].(map[string]any)["args"].([]any) {
						args = append(args, a.(string))
					}
				}
				if !slices.Contains(args, "--cert-dir=/certs") && !slices.Contains(args, "--metrics-cert-dir=/certs") {
					t.Errorf("%s does not serve its metrics from the certificate in /certs: %v", dep, args)
				}
			}
		})
	}
}

// namespaced says whether the API server serves u's kind in namespaces.
func namespaced(t *testing.T, u *unstructured.Unstructured) bool {
	t.Helper()
	m, err := env.Client.RESTMapper().RESTMapping(u.GroupVersionKind().GroupKind(), u.GroupVersionKind().Version)
	if err != nil {
		return true // a kind the control plane does not serve (cert-manager's): compare
	}
	return m.Scope.Name() == meta.RESTScopeNameNamespace
}

// TestTheChartsGracePeriodCoversTheReplaceBudget: operator.replaceBudgetSeconds
// sets --replace-budget, and the operator Pod's grace period follows it, so
// the kubelet never kills a stopping operator while a replacement it
// started is still inside its budget.
func TestTheChartsGracePeriodCoversTheReplaceBudget(t *testing.T) {
	for _, seconds := range []int{0, 5, 600, 3600} {
		var values map[string]any
		want := migration.DefaultReplaceBudget
		if seconds > 0 {
			values = map[string]any{"operator": map[string]any{"replaceBudgetSeconds": seconds}}
			want = time.Duration(seconds) * time.Second
		}
		out, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Values: values})
		if err != nil {
			t.Fatal(err)
		}
		u := objects(t, out)["Deployment/netconf-migrator-operator"]
		if u == nil {
			t.Fatal("the chart renders no operator Deployment")
		}
		dep := &appsv1.Deployment{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, dep); err != nil {
			t.Fatal(err)
		}
		var budget time.Duration
		for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
			if v, ok := strings.CutPrefix(a, "--replace-budget="); ok {
				if budget, err = time.ParseDuration(v); err != nil {
					t.Fatal(err)
				}
			}
		}
		if budget != want {
			t.Errorf("replaceBudgetSeconds %d renders --replace-budget=%s, want %s", seconds, budget, want)
		}
		grace := time.Duration(*dep.Spec.Template.Spec.TerminationGracePeriodSeconds) * time.Second
		if need := operator.ShutdownGrace(budget); grace <= need {
			t.Errorf("replaceBudgetSeconds %d: terminationGracePeriodSeconds is %s; the operator waits up to %s for a replacement before it exits", seconds, grace, need)
		}
	}
}
