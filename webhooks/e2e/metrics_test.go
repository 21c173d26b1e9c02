package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/test/testenv"
	"github.com/harvester/netconf-migrator/webhooks"
)

// TestSecureMetrics: with --metrics-secure (the default), the metrics are
// served over TLS to a ServiceAccount the API server authenticates and
// RBAC allows GET /metrics, and to nobody else.
func TestSecureMetrics(t *testing.T) {
	ctx := context.Background()
	// Counts the reviews the webhook asks the API server for.
	var reviews atomic.Int64
	cfg := rest.CopyConfig(env.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if r.Method == http.MethodPost && (strings.HasSuffix(r.URL.Path, "/tokenreviews") || strings.HasSuffix(r.URL.Path, "/subjectaccessreviews")) {
				reviews.Add(1)
			}
			return rt.RoundTrip(r)
		})
	}
	w := startOursAs(t, cfg, webhooks.ServerOptions{MetricsSecure: true})
	defer w.stop(t)
	const ns = "metrics-clients"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	kube, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	token := func(sa string) string {
		t.Helper()
		if err := env.Client.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}); err != nil {
			t.Fatal(err)
		}
		tr, err := kube.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token
	}
	reader, stranger := token("prometheus"), token("stranger")
	role := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "netconf-migrator-metrics-test-reader"},
		Rules: []rbacv1.PolicyRule{{NonResourceURLs: []string{"/metrics"}, Verbs: []string{"get"}}}}
	binding := &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: "prometheus"}}}
	if err := env.Client.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
	// The metrics are served with the webhook's serving certificate, so a
	// scraper verifies them against its CA (the ServiceMonitor does), not
	// with insecureSkipVerify.
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(env.Webhook.LocalServingCAData) {
		t.Fatal("no CA for the webhook's serving certificate")
	}
	verified := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	get := func(token string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://"+w.metrics+"/metrics", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: verified.Clone()}}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	// The secure metrics server starts beside the webhook, after it has
	// made its serving certificate.
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		conn, err := tls.Dial("tcp", w.metrics, verified)
		if err == nil {
			conn.Close()
		}
		return err == nil, nil
	}); err != nil {
		t.Fatalf("the metrics server does not serve TLS: %v", err)
	}
	if code, _ := get(""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, _ := get("not-a-token"); code != http.StatusUnauthorized {
		t.Errorf("a bad token: %d, want 401", code)
	}
	if code, _ := get(stranger); code != http.StatusForbidden {
		t.Errorf("a ServiceAccount without the role: %d, want 403", code)
	}
	if code, body := get(reader); code != http.StatusOK || !strings.Contains(body, "netconf_migrator_admissions_total") && !strings.Contains(body, "go_goroutines") {
		t.Errorf("the reader: %d %.200q", code, body)
	}
	// Answers are kept for a while: scraping again and again, and a
	// stranger hammering the port, cost the API server no more reviews.
	before := reviews.Load()
	for range 20 {
		if code, _ := get(reader); code != http.StatusOK {
			t.Fatalf("the reader again: %d", code)
		}
		if code, _ := get(stranger); code != http.StatusForbidden {
			t.Fatalf("the stranger again: %d", code)
		}
	}
	if n := reviews.Load() - before; n != 0 {
		t.Errorf("40 more scrapes with two known tokens made %d reviews, want 0 (kept answers)", n)
	}
	if before < 4 {
		t.Errorf("%d reviews for the first scrapes, want a TokenReview and a SubjectAccessReview each: the count is not counting", before)
	}
	// Plain HTTP gets a TLS error answer, never the metrics.
	if resp, err := http.Get("http://" + w.metrics + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Error("the metrics are served over plain HTTP")
		}
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestTheServiceMonitorScrapesWithTheChartsOwnToken (issue 36): the
// chart's ServiceMonitor no longer lends Prometheus's own token
// (bearerTokenFile, deprecated, and a binding left to the user): it names
// the token Secret of a ServiceAccount the chart binds to the
// metrics-reader role. Applied to the API server as rendered, that token
// reads the webhook's secure metrics. rancher-monitoring's own Prometheus
// is bound too, by metrics.rancherMonitoring.bindPrometheus: auto binds it
// once its ServiceAccount exists, as the chart finds it at install.
func TestTheServiceMonitorScrapesWithTheChartsOwnToken(t *testing.T) {
	ctx := context.Background()
	render := func(values map[string]any) map[string]*unstructured.Unstructured {
		t.Helper()
		out, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Values: values, Kubeconfig: env.KubeconfigPath})
		if err != nil {
			t.Fatal(err)
		}
		return objects(t, out)
	}
	monitored := map[string]any{"metrics": map[string]any{"serviceMonitor": map[string]any{"enabled": true}}}
	objs := render(monitored)
	endpoints, _, _ := unstructured.NestedSlice(objs["ServiceMonitor/netconf-migrator"].Object, "spec", "endpoints")
	if len(endpoints) != 1 {
		t.Fatalf("ServiceMonitor endpoints: %v", endpoints)
	}
	ep := endpoints[0].(map[string]any)
	if _, ok := ep["bearerTokenFile"]; ok {
		t.Error("the ServiceMonitor still uses bearerTokenFile")
	}
	secretName, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "name")
	key, _, _ := unstructured.NestedString(ep, "authorization", "credentials", "key")
	typ, _, _ := unstructured.NestedString(ep, "authorization", "type")
	secret := objs["Secret/"+secretName]
	if secret == nil || key != "token" || typ != "Bearer" {
		t.Fatalf("the ServiceMonitor's authorization %v names no token Secret the chart renders", ep["authorization"])
	}
	sa := secret.GetAnnotations()["kubernetes.io/service-account.name"]
	if secret.Object["type"] != "kubernetes.io/service-account-token" || objs["ServiceAccount/"+sa] == nil {
		t.Fatalf("Secret %s is not the token of a ServiceAccount of the chart: %v", secretName, secret.Object)
	}
	if objs["ClusterRoleBinding/netconf-migrator-rancher-monitoring"] != nil {
		t.Error("bindPrometheus=auto bound rancher-monitoring's Prometheus, which does not exist here")
	}

	// Applied as rendered.
	for _, k := range []string{"ServiceAccount/" + sa, "Secret/" + secretName, "ClusterRole/netconf-migrator-metrics-reader", "ClusterRoleBinding/" + sa} {
		u := objs[k]
		if u == nil {
			t.Fatalf("the chart renders no %s", k)
		}
		if err := env.Client.Create(ctx, u.DeepCopy()); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("applying %s: %v", k, err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(ctx, u.DeepCopy()) })
	}
	kube, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	// This control plane runs no kube-controller-manager, whose token
	// controller fills the Secret: a token of the same ServiceAccount
	// stands in for it.
	tr, err := kube.CoreV1().ServiceAccounts(ownNamespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	filled := &corev1.Secret{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ownNamespace, Name: secretName}, filled); err != nil {
		t.Fatal(err)
	}
	filled.Data = map[string][]byte{"token": []byte(tr.Status.Token)}
	if err := env.Client.Update(ctx, filled); err != nil {
		t.Fatal(err)
	}

	w := startOurs(t, webhooks.ServerOptions{MetricsSecure: true})
	defer w.stop(t)
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(env.Webhook.LocalServingCAData) {
		t.Fatal("no CA for the webhook's serving certificate")
	}
	scrape := func(token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "https://"+w.metrics+"/metrics", nil)
		req.Header.Set("Authorization", "Bearer "+token)
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
		resp, err := c.Do(req)
		if err != nil {
			return 0
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode
	}
	// As the Prometheus Operator does: the token read from the Secret the
	// ServiceMonitor names.
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ownNamespace, Name: secretName}, filled); err != nil {
		t.Fatal(err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		return scrape(string(filled.Data[key])) == http.StatusOK, nil
	}); err != nil {
		t.Errorf("the ServiceMonitor's token: %d, want 200", scrape(string(filled.Data[key])))
	}

	// rancher-monitoring's Prometheus, once it exists: auto binds it.
	if err := env.CreateNamespace(ctx, "cattle-monitoring-system", nil); err != nil {
		t.Fatal(err)
	}
	prom := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: "cattle-monitoring-system", Name: "rancher-monitoring-prometheus"}}
	if err := env.Client.Create(ctx, prom); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, prom) })
	promToken, err := kube.CoreV1().ServiceAccounts(prom.Namespace).CreateToken(ctx, prom.Name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if code := scrape(promToken.Status.Token); code != http.StatusForbidden {
		t.Errorf("rancher-monitoring's Prometheus before the chart binds it: %d, want 403", code)
	}
	bound := render(nil)["ClusterRoleBinding/netconf-migrator-rancher-monitoring"]
	if bound == nil {
		t.Fatal("bindPrometheus=auto did not bind rancher-monitoring's Prometheus, which exists")
	}
	if off := render(map[string]any{"metrics": map[string]any{"rancherMonitoring": map[string]any{"bindPrometheus": false}}}); off["ClusterRoleBinding/netconf-migrator-rancher-monitoring"] != nil {
		t.Error("bindPrometheus=false bound rancher-monitoring's Prometheus")
	}
	if err := env.Client.Create(ctx, bound.DeepCopy()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, bound.DeepCopy()) })
	// A stranger's answer is kept a while (TestSecureMetrics): wait it out.
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(context.Context) (bool, error) {
		return scrape(promToken.Status.Token) == http.StatusOK, nil
	}); err != nil {
		t.Errorf("rancher-monitoring's Prometheus, bound by the chart: %d, want 200", scrape(promToken.Status.Token))
	}
}
