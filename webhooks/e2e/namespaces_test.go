package e2e

import (
	"context"
	"fmt"
	"net"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/utils/ptr"

	"github.com/harvester/netconf-migrator/test/testenv"
	"github.com/harvester/netconf-migrator/webhooks"
)

// The chart's configuration with webhook.excludeNamespaces intercepts
// every namespace but the ones named, the release's own included; in the
// same run a control namespace shows the webhook was called, so an
// excluded NAD left nested proves the exclusion, not a webhook that was
// never reached.
func TestOnlyTheNamespacesExcludedAreNotIntercepted(t *testing.T) {
	ctx := context.Background()
	w := startOurs(t, webhooks.ServerOptions{})
	defer w.stop(t)
	removeShipped(t)
	out, err := testenv.RenderChart(testenv.ChartOptions{Namespace: ownNamespace, Values: map[string]any{"webhook": map[string]any{"excludeNamespaces": []any{"excluded"}}}})
	if err != nil {
		t.Fatal(err)
	}
	u := objects(t, out)["MutatingWebhookConfiguration/00-netconf-migrator"]
	if u == nil {
		t.Fatal("the chart rendered no MutatingWebhookConfiguration")
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, mwc); err != nil {
		t.Fatal(err)
	}
	mwc.ResourceVersion = ""
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{
			URL:      ptr.To("https://" + net.JoinHostPort(env.Webhook.LocalServingHost, fmt.Sprint(env.Webhook.LocalServingPort)) + webhooks.Path),
			CABundle: env.Webhook.LocalServingCAData,
		}
	}
	if err := env.Client.Create(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = env.Client.Delete(ctx, mwc)
		waitWebhook(t, false)
	})
	waitWebhook(t, true)
	const nested = `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"mgmt-br","vlan":10}`
	for ns, intercepted := range map[string]bool{"excluded": false, "control": true, ownNamespace: true} {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		nad := newNAD(ns, "ns-check", nested)
		if err := env.Client.Create(ctx, nad); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(ctx, nad) })
		if got := nad.Annotations[webhooks.AnnotationNormalizedFrom] == "nested"; got != intercepted {
			t.Errorf("namespace %s: rewritten %v, want %v (%s)", ns, got, intercepted, nad.Spec.Config)
		}
	}
}
