package e2e

import (
	"context"
	"strings"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/test/testenv"
	"github.com/harvester/netconf-migrator/webhooks"
)

// admissions is how many admission requests our webhook has answered,
// from its own metric.
func admissions(t *testing.T, w *ours) float64 {
	t.Helper()
	families, err := testenv.Scrape("http://" + w.metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := testenv.Sum(families, "netconf_migrator_admissions_total", nil)
	return sum
}

// TestMatchConditionsScreenFlatConfigs creates every corpus config through
// the API server with the shipped configuration and reads from the
// webhook's own metric whether the API server called it: every config the
// webhook would rewrite, warn about or refuse reaches it; flat configs,
// empty ones and conflists without nested plugins do not.
func TestMatchConditionsScreenFlatConfigs(t *testing.T) {
	ctx := context.Background()
	w := startOurs(t, webhooks.ServerOptions{})
	defer w.stop(t)
	installShipped(t)
	const ns = "screening"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	for _, tc := range loadCorpus(t) {
		t.Run(tc.Name, func(t *testing.T) {
			res := netconf.Normalize([]byte(tc.Config))
			needs := res.Changed || res.Form == netconf.FormTruncated || res.Form == netconf.FormInvalid
			before := admissions(t, w)
			// A dry run: the API server runs admission, stores nothing.
			err := env.Client.Create(ctx, newNAD(ns, tc.Name, tc.Config), client.DryRunAll)
			called := admissions(t, w) > before
			// Only our webhook may refuse the write (an invalid config, by
			// default): a write refused before admission would pass the
			// "not called" branch without proving anything.
			if err != nil && !(called && strings.Contains(err.Error(), `admission webhook "nad.netconf-migrator.harvesterhci.io" denied`)) {
				t.Fatalf("the API server refused the write before our webhook judged it: %v", err)
			}
			switch {
			case needs && !called:
				t.Errorf("a %s config that needs the webhook was screened out: %q", res.Form, tc.Config)
			case !needs && called:
				t.Errorf("a %s config that needs nothing reached the webhook: %q", res.Form, tc.Config)
			}
		})
	}
}
