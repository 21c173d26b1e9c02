package e2e

import (
	"bytes"
	"strings"
	"testing"

	"github.com/harvester/netconf-migrator/cmd/netconf-migrator/app"
	"github.com/harvester/netconf-migrator/webhooks"
)

// TestCheckWebhook runs what the chart's helm test Pod runs against the
// API server (no kubelet here, so not in a Pod): with the shipped
// configuration registered and the webhook serving it exits 0; with the
// configuration removed the NAD would be stored nested, and it exits 1
// saying so.
func TestCheckWebhook(t *testing.T) {
	check := func() (int, string) {
		var out, errOut bytes.Buffer
		code := app.Execute([]string{"check-webhook", "-n", probeNamespace, "--kubeconfig", env.KubeconfigPath}, nil, &out, &errOut)
		return code, out.String() + errOut.String()
	}
	w := startOurs(t, webhooks.ServerOptions{})
	defer w.stop(t)
	installShipped(t)
	if code, out := check(); code != 0 || !strings.Contains(out, "would be stored flat") {
		t.Errorf("with the webhook registered: exit %d\n%s", code, out)
	}
	removeShipped(t)
	if code, out := check(); code != 1 || !strings.Contains(out, "did not rewrite it") {
		t.Errorf("without the webhook: exit %d, want 1\n%s", code, out)
	}
}
