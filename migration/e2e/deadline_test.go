package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/cmd/netconf-migrator/app"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// unreachableValidator registers a fail-closed validating webhook for the
// namespace whose server is gone, as when Harvester's validator Pod is
// down: the API server answers every NAD write with a 500 "failed calling
// webhook". It is removed when the test ends.
func unreachableValidator(t *testing.T, ns string) {
	t.Helper()
	ctx := context.Background()
	port, err := testenv.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "unreachable-" + ns},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "unreachable.netconf-migrator.test", AdmissionReviewVersions: []string{"v1"},
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL: ptr.To(fmt.Sprintf("https://127.0.0.1:%d/validate", port)), CABundle: env.Webhook.LocalServingCAData,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update, admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{nadv1.GroupVersion.Group}, APIVersions: []string{"v1"}, Resources: []string{nadv1.Resource}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			FailurePolicy:     ptr.To(admissionregistrationv1.Fail),
			SideEffects:       ptr.To(admissionregistrationv1.SideEffectClassNone),
			TimeoutSeconds:    ptr.To[int32](2),
		}},
	}
	if err := env.Client.Create(ctx, vwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.DeleteWebhookConfiguration(ctx, "ValidatingWebhookConfiguration", vwc.Name); err != nil {
			t.Error(err)
		}
	})
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		err := env.Client.Create(ctx, newNAD(ns, "probe", flatConfig("probe"), nil), client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), "failed calling webhook"), nil
	})
	if err != nil {
		t.Fatalf("waiting for the API server to call the unreachable webhook: %v", err)
	}
}

// TestUnreachableWebhookStopsAtTheDeadline: with a fail-closed validating
// webhook unreachable, every write fails transiently; the run stops at its
// --timeout instead of holding an upgrade, reports the NADs it did not
// write as unvisited (no failure, no Event) and exits 3.
func TestUnreachableWebhookStopsAtTheDeadline(t *testing.T) {
	ctx := context.Background()
	const ns = "unreachable"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	var nads []*nadv1.NetworkAttachmentDefinition
	for i := range 20 {
		nads = append(nads, newNAD(ns, fmt.Sprintf("n%02d", i), nestedConfig("n"), nil))
	}
	seed(t, nads)
	unreachableValidator(t, ns)

	const timeout = 4 * time.Second
	start := time.Now()
	r := runCLI(t, "migrate", "-n", ns, "--timeout", timeout.String(), "--request-timeout", "5s")
	elapsed := time.Since(start)
	if r.code != app.ExitStopped {
		t.Fatalf("exit %d, want %d\n%s", r.code, app.ExitStopped, r.errOut)
	}
	// The deadline, plus at most one request in flight at it.
	if bound := timeout + 5*time.Second + 5*time.Second; elapsed > bound {
		t.Errorf("the run took %v, past its deadline of %v and one request", elapsed, timeout)
	}
	if !strings.Contains(r.report.Summary.Stopped, "--timeout of 4s was up") || r.report.Summary.Actions[report.ActionUnvisited] != 20 || r.report.Summary.Actions[report.ActionFailed] != 0 {
		t.Errorf("report: %+v", r.report.Summary)
	}
	if it := r.itemsByName()["n00"]; !strings.Contains(it.Reason, "failed calling webhook") && !strings.Contains(it.Reason, "stopped before this NAD was written") {
		t.Errorf("n00: %q", it.Reason)
	}
	for ref, n := range listAll(t, ns) {
		if n.Annotations[nadv1.AnnotationNormalizedFrom] != "" {
			t.Errorf("%s was written", ref)
		}
	}
	checkFailedEvents(ctx, t, ns, nil)

	// The upgrade pre-hook treats it as "not migrated": the upgrade goes
	// on, unless strict mode says stop.
	bin := buildBinary(t)
	args := "NETCONF_MIGRATOR_ARGS=-n " + ns + " --timeout 2s"
	if u := runUpgrade(t, bin, args); u.code != 0 || !u.upgraded() || !strings.Contains(u.errOut, "migrate stopped before visiting every NAD (its --timeout") {
		t.Errorf("pre-hook: exit %d, upgraded %v\n%s", u.code, u.upgraded(), u.errOut)
	}
	if u := runUpgrade(t, bin, args, "NETCONF_MIGRATOR_STRICT=true"); u.code != app.ExitStopped || u.upgraded() {
		t.Errorf("strict pre-hook: exit %d, upgraded %v\n%s", u.code, u.upgraded(), u.errOut)
	}
}
