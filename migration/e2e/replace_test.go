package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/cmd/netconf-migrator/app"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// TestReplacementWaitsOutHarvesterFinalizers: beside v1.6 and its
// controllers (both finalizers on every NAD), nested NADs are replaced
// while the manager's cleanup takes 0 to 2 s each; with the manager down,
// a replacement stops at its budget with the NAD terminating, reported
// missing (exit 4) with the finalizers, their controllers and the backup,
// and the next run, once the manager is back, finishes it.
func TestReplacementWaitsOutHarvesterFinalizers(t *testing.T) {
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	h := harvester.StartT(t, env, harvester.V16)
	ns := h.Namespace(t, "finalizers")
	var nads []*nadv1.NetworkAttachmentDefinition
	for i := range 6 {
		name := fmt.Sprintf("n%d", i)
		nads = append(nads, newNAD(ns, name, nestedConfig(name), harvesterLabels()))
	}
	h.Pause(func() { seed(t, nads) })
	before := listAll(t, ns)
	for ref, n := range before {
		if len(n.Finalizers) != 2 {
			t.Fatalf("%s carries %v, want Harvester v1.6's two finalizers", ref, n.Finalizers)
		}
	}
	h.Controllers.SetCleanup(func(*nadv1.NetworkAttachmentDefinition) (time.Duration, error) {
		return time.Duration(rand.Int64N(int64(2 * time.Second))), nil
	})
	removed := h.Controllers.Removed.Load()
	r := runCLI(t, "migrate", "-n", ns)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.errOut)
	}
	after := listAll(t, ns)
	for ref, b := range before {
		a := after[ref]
		it := r.itemsByName()[b.Name]
		if a.UID == b.UID || netconf.Normalize([]byte(a.Spec.Config)).Form != netconf.FormFlat || !it.Recreated || it.PreviousUID != string(b.UID) || it.UID != string(a.UID) {
			t.Errorf("%s: uid %s -> %s, %s; report %+v", ref, b.UID, a.UID, a.Spec.Config, it)
		}
	}
	if got := h.Controllers.Removed.Load() - removed; got != int64(len(nads)) {
		t.Errorf("the controllers finished %d deletions, want %d: the tool must never remove a finalizer itself", got, len(nads))
	}
	checkNoBackups(t)

	// The manager is down: a replacement cannot finish.
	h.Controllers.SetCleanup(nil)
	h.Pause(func() {
		seed(t, []*nadv1.NetworkAttachmentDefinition{newNAD(ns, "held", nestedConfig("held"), harvesterLabels())})
	})
	h.Controllers.SetDown(true)
	r = runCLI(t, "migrate", "-n", ns, "--replace-budget", "3s")
	if r.code != app.ExitMissing {
		t.Fatalf("exit %d, want %d (missing)\n%s", r.code, app.ExitMissing, r.errOut)
	}
	it := r.itemsByName()["held"]
	for _, want := range []string{"missing", "still terminating", harvester.FinalizerManager, "network controller manager", harvester.FinalizerAgent, "the next run goes on"} {
		if !strings.Contains(it.Reason, want) {
			t.Errorf("held: reason %q lacks %q", it.Reason, want)
		}
	}
	if it.Action != report.ActionMissing || !strings.HasPrefix(it.Backup, "Secret "+backupNamespace+"/netconf-migrator-backup-") {
		t.Errorf("held: %s, backup %q", it.Action, it.Backup)
	}
	if n := listAll(t, ns)[ns+"/held"]; n.DeletionTimestamp == nil || len(n.Finalizers) != 2 {
		t.Errorf("held: deletionTimestamp %v, finalizers %v; want terminating with Harvester's finalizers untouched", n.DeletionTimestamp, n.Finalizers)
	}
	// The manager is back: the next run finishes the replacement.
	h.Controllers.SetDown(false)
	r = runCLI(t, "migrate", "-n", ns)
	if r.code != 0 {
		t.Fatalf("the run after the manager came back: exit %d\n%s", r.code, r.errOut)
	}
	if it := r.itemsByName()["held"]; it.Action != report.ActionNormalized || !it.Recreated || !strings.Contains(it.Reason, "interrupted run") {
		t.Errorf("held: %s %q", it.Action, it.Reason)
	}
	if n := listAll(t, ns)[ns+"/held"]; netconf.Normalize([]byte(n.Spec.Config)).Form != netconf.FormFlat || n.DeletionTimestamp != nil {
		t.Errorf("held: %s, deletionTimestamp %v", n.Spec.Config, n.DeletionTimestamp)
	}
	checkNoBackups(t)
}

// immutableNADs registers a second validating webhook, as a Kyverno or
// Gatekeeper "immutable" policy would be, that denies every UPDATE of a
// NAD in ns and allows DELETE and CREATE.
func immutableNADs(t *testing.T, env *testenv.Env, ns string) {
	t.Helper()
	ctx := context.Background()
	port, err := testenv.FreePort(env.Webhook.LocalServingHost)
	if err != nil {
		t.Fatal(err)
	}
	srv := webhook.NewServer(webhook.Options{Host: env.Webhook.LocalServingHost, Port: port, CertDir: env.Webhook.LocalServingCertDir})
	srv.Register("/immutable", &webhook.Admission{Handler: admission.HandlerFunc(func(_ context.Context, req admission.Request) admission.Response {
		if req.Operation == admissionv1.Update {
			return admission.Denied("NetworkAttachmentDefinitions are immutable by policy")
		}
		return admission.Allowed("")
	})})
	sctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(sctx) }()
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "immutable-" + ns},
		Webhooks: []admissionregistrationv1.ValidatingWebhook{{
			Name: "immutable-nads.policy.example", AdmissionReviewVersions: []string{"v1"},
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL: ptr.To(fmt.Sprintf("https://%s:%d/immutable", env.Webhook.LocalServingHost, port)), CABundle: env.Webhook.LocalServingCAData,
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Update, admissionregistrationv1.Create, admissionregistrationv1.Delete},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{nadv1.GroupVersion.Group}, APIVersions: []string{"v1"}, Resources: []string{nadv1.Resource}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			FailurePolicy:     ptr.To(admissionregistrationv1.Fail),
			SideEffects:       ptr.To(admissionregistrationv1.SideEffectClassNone),
		}},
	}
	if err := env.Client.Create(ctx, vwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := env.DeleteWebhookConfiguration(ctx, "ValidatingWebhookConfiguration", vwc.Name); err != nil {
			t.Error(err)
		}
		cancel()
		<-done
	})
	probe := newNAD(ns, "probe", flatConfig("probe"), nil)
	if err := env.Client.Create(ctx, probe); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		p := probe.DeepCopy()
		p.Labels = map[string]string{"probe": "x"}
		err := env.Client.Update(ctx, p, client.DryRunAll)
		return err != nil && strings.Contains(err.Error(), "immutable by policy"), nil
	})
	if err != nil {
		t.Fatalf("waiting for the API server to call the immutable-NADs webhook: %v", err)
	}
}

// TestOnlyAllowedWebhooksCallForReplacement: a refusal from a webhook that
// is not on the allow list is final and reported in its own words, even
// when it would let a delete and a create through; --replace-past-webhook
// adds it.
func TestOnlyAllowedWebhooksCallForReplacement(t *testing.T) {
	const ns = "immutable"
	if err := env.CreateNamespace(context.Background(), ns, nil); err != nil {
		t.Fatal(err)
	}
	immutableNADs(t, env, ns)
	seed(t, []*nadv1.NetworkAttachmentDefinition{newNAD(ns, "n", nestedConfig("n"), nil)})
	before := listAll(t, ns)[ns+"/n"]

	r := runCLI(t, "migrate", "-n", ns)
	it := r.itemsByName()["n"]
	if r.code != 1 || it.Action != report.ActionFailed || it.Recreated ||
		!strings.Contains(it.Reason, `admission webhook "immutable-nads.policy.example" denied the request: NetworkAttachmentDefinitions are immutable by policy`) {
		t.Fatalf("exit %d, %s recreated=%v %q", r.code, it.Action, it.Recreated, it.Reason)
	}
	if after := listAll(t, ns)[ns+"/n"]; after.UID != before.UID || after.ResourceVersion != before.ResourceVersion {
		t.Fatalf("the NAD was replaced or written past a webhook that is not on the allow list")
	}

	r = runCLI(t, "migrate", "-n", ns, "--replace-past-webhook", "immutable-nads.policy.example")
	if it := r.itemsByName()["n"]; r.code != 0 || it.Action != report.ActionNormalized || !it.Recreated {
		t.Fatalf("with --replace-past-webhook: exit %d, %s recreated=%v %q", r.code, it.Action, it.Recreated, it.Reason)
	}
	checkNoBackups(t)
}

// TestForgedBackupCreatesNothing: a user who may create Secrets in the
// backup namespace writes a labelled Secret of the backups' type naming a
// NAD of their choosing; the run creates nothing from it and reports it.
func TestForgedBackupCreatesNothing(t *testing.T) {
	ctx := context.Background()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: backupNamespace, Name: "secret-writer"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create"}}}}
	binding := &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: backupNamespace, Name: "secret-writer"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "mallory"}}}
	for _, o := range []client.Object{role, binding} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(ctx, o) })
	}
	mallory, err := env.AddUser("mallory")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(mallory, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	original := map[string]any{"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"namespace": "kube-system", "name": "made-up", "uid": "0000-made-up"},
		"spec":     map[string]any{"config": nestedConfig("made-up")}}
	raw, _ := json.Marshal(original)
	forged := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: backupNamespace, Name: replace.BackupName("0000-made-up"),
			Labels:      map[string]string{replace.LabelBackup: "true", replace.LabelBackupUID: "0000-made-up"},
			Annotations: map[string]string{replace.AnnotationNAD: "kube-system/made-up", replace.AnnotationMode: "migrate", replace.AnnotationStep: string(replace.StepDeleted)}},
		Type: replace.BackupSecretType,
		Data: map[string][]byte{"original.json": raw, "signature": []byte("bm90IG91ciBrZXk=")},
	}
	if err := c.Create(ctx, forged); err != nil {
		t.Fatalf("mallory creating the look-alike: %v", err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, forged) })

	r := runCLI(t, "migrate", "-n", "kube-system")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (a look-alike backup needs a person)\n%s", r.code, r.errOut)
	}
	if got := r.report.Summary.RejectedBackups; len(got) != 1 || !strings.Contains(got[0], "Secret "+backupNamespace+"/"+forged.Name) || !strings.Contains(got[0], "signature does not match") {
		t.Errorf("rejected backups: %v", got)
	}
	if !strings.Contains(r.errOut, forged.Name) {
		t.Errorf("the summary does not name the look-alike:\n%s", r.errOut)
	}
	if n, ok := listAll(t, "kube-system")["kube-system/made-up"]; ok {
		t.Fatalf("a NAD was created from a forged backup: %v", n)
	}
}

// TestOneRunAtATime: a run meeting another's live (renewing) Lease waits, then exits 3
// naming the holder; a killed holder's Lease expires and the next run takes
// it.
func TestOneRunAtATime(t *testing.T) {
	ctx := context.Background()
	const ns = "one-run"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	seed(t, []*nadv1.NetworkAttachmentDefinition{newNAD(ns, "n", nestedConfig("n"), nil)})
	now := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: backupNamespace, Name: runlock.LeaseName},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To("upgrade-pre-hook_abc"), LeaseDurationSeconds: ptr.To[int32](30),
			AcquireTime: &now, RenewTime: &now},
	}
	// Earlier runs left the Lease released (no holder); another run holds
	// it now.
	cur := &coordinationv1.Lease{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(lease), cur); err == nil {
		lease.ResourceVersion = cur.ResourceVersion
		err = env.Client.Update(ctx, lease)
		if err != nil {
			t.Fatal(err)
		}
	} else if err := env.Client.Create(ctx, lease); err != nil {
		t.Fatal(err)
	}
	// A live holder renews; one that does not may be dead, and a waiting
	// run then waits on until its Lease may be taken.
	renewing, renewed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(renewed)
		for {
			select {
			case <-renewing:
				return
			case <-time.After(300 * time.Millisecond):
			}
			cur := &coordinationv1.Lease{}
			if err := env.Client.Get(ctx, client.ObjectKeyFromObject(lease), cur); err == nil {
				cur.Spec.RenewTime = ptr.To(metav1.NewMicroTime(time.Now()))
				_ = env.Client.Update(ctx, cur)
			}
		}
	}()
	r := runCLI(t, "migrate", "-n", ns, "--lease-wait", "2s")
	close(renewing)
	<-renewed
	if r.code != app.ExitStopped || !strings.Contains(r.errOut, "holds the Lease "+backupNamespace+"/"+runlock.LeaseName+": upgrade-pre-hook_abc") {
		t.Fatalf("exit %d, want %d naming the holder\n%s", r.code, app.ExitStopped, r.errOut)
	}
	if n := listAll(t, ns)[ns+"/n"]; n.Spec.Config != nestedConfig("n") {
		t.Fatalf("a run without the Lease wrote %s", n.Spec.Config)
	}
	// The holder was killed: it renews no more. A run counts the holder's
	// declared duration from its own first look at the Lease (no trust in
	// clocks), so a short one keeps this quick.
	old := metav1.NewMicroTime(time.Now().Add(-40 * time.Second))
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(lease), lease); err != nil {
		t.Fatal(err)
	}
	lease.Spec.RenewTime, lease.Spec.LeaseDurationSeconds = &old, ptr.To[int32](3)
	if err := env.Client.Update(ctx, lease); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, "migrate", "-n", ns, "--lease-wait", "1m"); r.code != 0 {
		t.Fatalf("after the holder's Lease expired: exit %d\n%s", r.code, r.errOut)
	}
	// Released at the end: the next run need not wait for it to expire.
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(lease), lease); err != nil {
		t.Fatal(err)
	}
	if h := ptr.Deref(lease.Spec.HolderIdentity, ""); h != "" {
		t.Errorf("the Lease is still held by %q after the run", h)
	}
}
