package e2e

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
)

// TestPreflightRidesOutTransientErrors: an etcd leader change while the
// preflight reads the CRD or reviews its permissions is retried within the
// NAD retry budget; an API server that keeps failing ends the run with
// exit 3, which the Job retries, not 2, which fails it for good. Found by
// the migration soak.
func TestPreflightRidesOutTransientErrors(t *testing.T) {
	ensureBackupNamespace(t)
	up := upstream(t)
	serve := func(failFirst int64) (*atomic.Int64, string) {
		var calls atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			preflight := strings.Contains(r.URL.Path, "/customresourcedefinitions/") || strings.Contains(r.URL.Path, "/selfsubjectaccessreviews")
			if preflight && calls.Add(1) <= failFirst {
				faultServerError.serve(w, r, up)
				return
			}
			up.ServeHTTP(w, r)
		}))
		t.Cleanup(srv.Close)
		return &calls, kubeconfigFor(t, srv.URL)
	}

	calls, kubeconfig := serve(3)
	r := runCLI(t, "migrate", "-n", "preflight-transient", "--kubeconfig", kubeconfig, "--nad-retry-budget", "30s")
	if r.code != 0 {
		t.Errorf("three 500s in the preflight: exit %d, want 0\n%s", r.code, r.errOut)
	}
	if calls.Load() <= 3 {
		t.Errorf("%d preflight calls: the 500s were not retried", calls.Load())
	}

	_, kubeconfig = serve(1 << 30)
	r = runCLI(t, "migrate", "-n", "preflight-transient", "--kubeconfig", kubeconfig, "--nad-retry-budget", "2s")
	if r.code != 3 || !strings.Contains(r.errOut, "Cannot read the CustomResourceDefinition "+nadv1.CRDName) || !strings.Contains(r.errOut, "giving up after") {
		t.Errorf("an API server failing for good: exit %d, want 3 and the reason\n%s", r.code, r.errOut)
	}
}
