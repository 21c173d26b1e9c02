package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/cmd/netconf-migrator/app"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

const (
	jobNamespace = "netconf-migrator-system"
	jobSA        = "system:serviceaccount:" + jobNamespace + ":netconf-migrator-job"
)

var jobGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + jobNamespace, "system:authenticated"}

// TestJobRBAC applies the Job's shipped ServiceAccount, ClusterRole and
// binding, then acts as that ServiceAccount: a full migrate and rollback
// work, anything else is denied.
func TestJobRBAC(t *testing.T) {
	ctx := context.Background()
	applyJobRBAC(t)
	const ns = "rbac"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{suiteLabel: "rbac"}
	seed(t, population(ns, 200, labels))
	asJob := kubeconfigAs(t, jobSA, jobGroups...)
	// The summary Events other tests' runs left are not this test's.
	earlier := map[string]bool{}
	var prior corev1.EventList
	if err := fastClient(t).List(ctx, &prior, client.InNamespace(backupNamespace)); err != nil {
		t.Fatal(err)
	}
	for _, e := range prior.Items {
		earlier[e.Name] = true
	}

	// All namespaces, as the Job runs, narrowed to this suite by label.
	// The kubelet creates the termination-log file; the run fills it.
	termination := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(termination, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "migrate", "-l", suiteLabel+"=rbac", "--kubeconfig", asJob, "--termination-message-path", termination,
		"--report-secret", backupNamespace+"/netconf-migrator-report")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (two truncated NADs)\n%s", r.code, r.errOut)
	}
	var msg struct {
		Total, ExitCode int
		Actions         map[string]int
	}
	if raw, err := os.ReadFile(termination); err != nil || json.Unmarshal(raw, &msg) != nil || msg.Total != 200 || msg.ExitCode != 1 || msg.Actions["normalized"] != 24 {
		t.Errorf("termination message %+v (%v), want total 200, exit 1, 24 normalized", msg, err)
	}
	sec := &corev1.Secret{}
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: backupNamespace, Name: "netconf-migrator-report"}, sec); err != nil {
		t.Errorf("the Job's report Secret: %v", err)
	} else if stored := report.New(); sec.Type != report.SecretType || json.Unmarshal(sec.Data[report.SecretKey], stored) != nil || stored.Summary.Total != 200 {
		t.Errorf("the report Secret (type %s) holds %.200q", sec.Type, sec.Data[report.SecretKey])
	}
	if got := r.report.Summary.Actions[report.ActionNormalized]; got != 24 {
		t.Errorf("normalized %d, want 24: %v", got, r.report.Summary.Actions)
	}
	if got := r.report.Summary.Actions[report.ActionFailed]; got != 0 {
		t.Errorf("%d failed as the Job's ServiceAccount: %v", got, r.report.Items)
	}
	var events corev1.EventList
	if err := fastClient(t).List(ctx, &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	// By default (--events=failures) no Event on the 24 NADs rewritten, none
	// failed; one summary Event on the run's Lease.
	if len(events.Items) != 0 {
		t.Errorf("%d events recorded on NADs by default, want 0 (none needs a person)", len(events.Items))
	}
	summaries := func() []corev1.Event {
		var all corev1.EventList
		if err := fastClient(t).List(ctx, &all, client.InNamespace(backupNamespace)); err != nil {
			t.Fatal(err)
		}
		var out []corev1.Event
		for _, e := range all.Items {
			if e.Reason == migration.ReasonRunSummary && e.InvolvedObject.Kind == "Lease" && !earlier[e.Name] {
				out = append(out, e)
			}
		}
		return out
	}
	if s := summaries(); len(s) != 1 || s[0].Type != corev1.EventTypeWarning || !strings.Contains(s[0].Message, "normalized=24") || !strings.Contains(s[0].Message, "reported=2") {
		t.Errorf("summary Events %+v, want one Warning counting 24 normalized and 2 reported", s)
	}
	if r := runCLI(t, "rollback", "-l", suiteLabel+"=rbac", "--kubeconfig", asJob, "--events=all"); r.code != 0 || r.report.Summary.Actions[report.ActionRestored] != 24 {
		t.Errorf("rollback as the Job: exit %d, %v\n%s", r.code, r.report.Summary.Actions, r.errOut)
	}
	if err := fastClient(t).List(ctx, &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	if len(events.Items) != 24 {
		t.Errorf("rollback --events=all recorded %d events as the Job's ServiceAccount, want 24", len(events.Items))
	}
	if r := runCLI(t, "migrate", "-l", suiteLabel+"=rbac", "--kubeconfig", asJob, "--events=none"); r.code != 1 {
		t.Errorf("migrate --events=none: exit %d\n%s", r.code, r.errOut)
	}
	if s := summaries(); len(s) != 2 {
		t.Errorf("%d summary Events after a run with --events=none, want the 2 of the runs before", len(s))
	}

	cfg := rest.CopyConfig(env.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: jobSA, Groups: jobGroups}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: "nad-00001"}, nad); err != nil {
		t.Fatalf("the Job cannot read a NAD: %v", err)
	}
	otherCRD := &apiextensionsv1.CustomResourceDefinition{}
	for name, op := range map[string]func() error{
		"list secrets elsewhere": func() error { return c.List(ctx, &corev1.SecretList{}, client.InNamespace(ns)) },
		"get a secret": func() error {
			return c.Get(ctx, types.NamespacedName{Namespace: "kube-system", Name: "x"}, &corev1.Secret{})
		},
		"list pods":          func() error { return c.List(ctx, &corev1.PodList{}) },
		"update a NAD":       func() error { return c.Update(ctx, nad.DeepCopy()) },
		"list CRDs":          func() error { return c.List(ctx, &apiextensionsv1.CustomResourceDefinitionList{}) },
		"get another CRD":    func() error { return c.Get(ctx, types.NamespacedName{Name: "other.example.com"}, otherCRD) },
		"update the NAD CRD": func() error { return updateNADCRD(ctx, c) },
		"list events":        func() error { return c.List(ctx, &corev1.EventList{}, client.InNamespace(ns)) },
		"create a configmap": func() error {
			return c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "x"}})
		},
		"list secrets cluster-wide": func() error { return c.List(ctx, &corev1.SecretList{}) },
		"list NAD namespaces":       func() error { return c.List(ctx, &corev1.NamespaceList{}) },
	} {
		if err := op(); !apierrors.IsForbidden(err) {
			t.Errorf("the Job's ServiceAccount may %s: %v", name, err)
		}
	}
}

// TestJobRBACRecreates replaces a NAD as the Job's ServiceAccount with only
// the shipped RBAC: Harvester v1.6 refuses the in-place update, and the
// backup goes to the Job's namespace.
func TestJobRBACRecreates(t *testing.T) {
	applyJobRBAC(t)
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	h := harvester.StartT(t, env, harvester.V16)
	ns := h.Namespace(t, "rbac-recreate")
	seed(t, []*nadv1.NetworkAttachmentDefinition{newNAD(ns, "n", nestedConfig("n"), harvesterLabels())})
	// Once Harvester's controllers have labelled it: a run that reads the
	// NAD before their write is judged against it by the validator, which
	// refuses the update (another label set) before the conflict shows.
	h.Settle(t)
	// A server dry run as an identity with the Job's ClusterRole but not
	// its Role in the backup namespace: the NAD would be replaced, and the
	// rights to keep its backup are named beside it.
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "job-without-backups"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "netconf-migrator-job"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "job-without-backups"}},
	}
	harvester.Create(t, env.Client, binding)
	r := runCLI(t, "migrate", "--dry-run=server", "-n", ns, "--kubeconfig", kubeconfigAs(t, "job-without-backups", "system:authenticated"))
	secrets := report.Need{}
	for _, n := range r.report.Summary.Needs {
		if n.What == "create or get or list or update or delete secrets in namespace "+backupNamespace {
			secrets = n
		}
	}
	if it := r.itemsByName()["n"]; r.code != 1 || it.Action != report.ActionWouldNormalize || !it.Recreated ||
		secrets.For != report.NeedForReplace || !slices.Equal(secrets.NADs, []string{ns + "/n"}) ||
		!strings.Contains(r.errOut, "    - create or get or list or update or delete secrets in namespace "+backupNamespace+", for the 1 NAD(s) it would replace: "+ns+"/n\n") {
		t.Errorf("server dry run without the backup namespace's Role: exit %d, %+v, needs %+v; want exit 1, n would be recreated, and the Secret rights named beside it\n%s", r.code, it, r.report.Summary.Needs, r.errOut)
	}
	// As the Job itself: nothing needed.
	if r := runCLI(t, "migrate", "--dry-run=server", "-n", ns, "--kubeconfig", kubeconfigAs(t, jobSA, jobGroups...)); r.code != 0 || len(r.report.Summary.Needs) != 0 || !r.itemsByName()["n"].Recreated {
		t.Errorf("server dry run as the Job: exit %d, needs %+v\n%s", r.code, r.report.Summary.Needs, r.errOut)
	}
	r = runCLI(t, "migrate", "-n", ns, "--kubeconfig", kubeconfigAs(t, jobSA, jobGroups...))
	if it := r.itemsByName()["n"]; r.code != 0 || it.Action != report.ActionNormalized || !it.Recreated {
		t.Fatalf("exit %d: %+v\n%s", r.code, it, r.errOut)
	}
	checkNoBackups(t)
}

// applyJobRBAC applies the shipped namespace and Job RBAC, as a user would.
func applyJobRBAC(t *testing.T) {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config/namespace/namespace.yaml", "config/job/rbac.yaml"} {
		if _, stderr, err := env.Kubectl(context.Background(), nil, "apply", "--server-side", "-f", filepath.Join(root, f)); err != nil {
			t.Fatalf("kubectl apply %s: %v\n%s", f, err, stderr)
		}
	}
}

func updateNADCRD(ctx context.Context, c client.Client) error {
	crd := &apiextensionsv1.CustomResourceDefinition{}
	if err := c.Get(ctx, types.NamespacedName{Name: nadv1.CRDName}, crd); err != nil {
		return err
	}
	return c.Update(ctx, crd)
}

// TestPreflight wants exit 2 and one sentence for an identity without the
// Job's role and for a cluster without the NAD CRD.
func TestPreflight(t *testing.T) {
	termination := filepath.Join(t.TempDir(), "termination-log")
	if err := os.WriteFile(termination, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, "migrate", "--kubeconfig", kubeconfigAs(t, "nobody", "system:authenticated"), "--termination-message-path", termination)
	if r.code != 2 || !strings.Contains(r.errOut, "may not read the CustomResourceDefinition "+nadv1.CRDName) {
		t.Errorf("no permissions: exit %d\n%s", r.code, r.errOut)
	}
	if r.hasReport {
		t.Error("a preflight failure wrote a report")
	}
	// In a Pod, the termination message says why the run never started.
	var msg struct {
		ExitCode int    `json:"exitCode"`
		Error    string `json:"error"`
	}
	if raw, err := os.ReadFile(termination); err != nil || json.Unmarshal(raw, &msg) != nil || msg.ExitCode != 2 ||
		!strings.Contains(msg.Error, "may not read the CustomResourceDefinition") {
		t.Errorf("termination message after a preflight failure: %q (%v), want exit code 2 and the reason", raw, err)
	}

	// May read the CRD and review itself, may only list NADs.
	ctx := context.Background()
	c := fastClient(t)
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "preflight-lister"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"apiextensions.k8s.io"}, Resources: []string{"customresourcedefinitions"}, ResourceNames: []string{nadv1.CRDName}, Verbs: []string{"get"}},
			{APIGroups: []string{"authorization.k8s.io"}, Resources: []string{"selfsubjectaccessreviews"}, Verbs: []string{"create"}},
			{APIGroups: []string{nadv1.GroupVersion.Group}, Resources: []string{"network-attachment-definitions"}, Verbs: []string{"get", "list"}},
		},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "preflight-lister"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "lister"}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	r = runCLI(t, "migrate", "--kubeconfig", kubeconfigAs(t, "lister", "system:authenticated"))
	if want := "This identity may not patch or create or delete NetworkAttachmentDefinitions in all namespaces; grant the netconf-migrator-job ClusterRole (config/job), or pass --recreate=never"; r.code != 2 || !strings.Contains(r.errOut, want) {
		t.Errorf("list only: exit %d, want 2 and %q\n%s", r.code, want, r.errOut)
	}
	r = runCLI(t, "migrate", "--recreate=never", "--kubeconfig", kubeconfigAs(t, "lister", "system:authenticated"))
	if want := "This identity may not patch NetworkAttachmentDefinitions in all namespaces; grant"; r.code != 2 || !strings.Contains(r.errOut, want) {
		t.Errorf("list only, --recreate=never: exit %d, want 2 and %q\n%s", r.code, want, r.errOut)
	}
	// --dry-run=server is authorized as a write: refused at once.
	if r := runCLI(t, "migrate", "--dry-run=server", "-l", "nothing=here", "--kubeconfig", kubeconfigAs(t, "lister", "system:authenticated")); r.code != 2 {
		t.Errorf("list only, server dry run: exit %d, want 2\n%s", r.code, r.errOut)
	}
	// --dry-run=client sends no write: a read-only identity sees what a
	// migration would do, and what the real run would need beside the
	// NADs that need it; it exits 1 on those needs.
	const needsNS = "preflight-needs"
	if err := env.CreateNamespace(ctx, needsNS, nil); err != nil {
		t.Fatal(err)
	}
	needsLabels := map[string]string{suiteLabel: needsNS}
	seed(t, []*nadv1.NetworkAttachmentDefinition{
		newNAD(needsNS, "a", nestedConfig("a"), needsLabels), newNAD(needsNS, "b", nestedConfig("b"), needsLabels),
		newNAD(needsNS, "flat", `{"cniVersion":"1.0.0","name":"flat","type":"bridge","bridge":"br0"}`, needsLabels),
	})
	r = runCLI(t, "migrate", "--dry-run=client", "-l", suiteLabel+"="+needsNS, "--kubeconfig", kubeconfigAs(t, "lister", "system:authenticated"))
	needs := map[string]report.Need{}
	for _, n := range r.report.Summary.Needs {
		needs[n.What] = n
	}
	nads := []string{needsNS + "/a", needsNS + "/b"}
	const whenRefused = " (to replace a NAD whose update in place admission refuses)"
	for what, want := range map[string]report.Need{
		"patch NetworkAttachmentDefinitions in all namespaces":                                            {For: report.NeedForRewrite, NADs: nads},
		"create or delete NetworkAttachmentDefinitions in all namespaces" + whenRefused:                   {For: report.NeedForRewrite, NADs: nads},
		"create or get or list or update or delete secrets in namespace " + backupNamespace + whenRefused: {For: report.NeedForRewrite, NADs: nads},
		"create leases in namespace " + backupNamespace:                                                   {For: report.NeedForRun},
		"get or update leases named netconf-migrator-run in namespace " + backupNamespace:                 {For: report.NeedForRun},
		// The signing key by either name: 0.2's is read where it is left.
		"get secrets named " + replace.KeySecretName + " in namespace " + backupNamespace + whenRefused:        {For: report.NeedForRewrite, NADs: nads},
		"get secrets named " + replace.EarlierKeySecretName + " in namespace " + backupNamespace + whenRefused: {For: report.NeedForRewrite, NADs: nads},
	} {
		got, ok := needs[what]
		if !ok || got.For != want.For || !slices.Equal(got.NADs, want.NADs) || got.Advice == "" {
			t.Errorf("need %q: %+v, want for %s, NADs %v and advice", what, got, want.For, want.NADs)
		}
	}
	if r.code != 1 || r.report.Summary.Actions[report.ActionWouldNormalize] != 2 || len(needs) != 7 ||
		!strings.Contains(r.errOut, "the real run would need what this identity lacks:\n    - patch NetworkAttachmentDefinitions in all namespaces, for the 2 NAD(s) it would rewrite: "+needsNS+"/a, "+needsNS+"/b\n") {
		t.Errorf("list only, client dry run: exit %d, %v, %d needs, want exit 1, 2 would-normalize and 7 needs named in the summary\n%s", r.code, r.report.Summary.Actions, len(needs), r.errOut)
	}
	// An identity with every right: the same dry run needs nothing, exit 0.
	if r := runCLI(t, "migrate", "--dry-run=client", "-l", suiteLabel+"="+needsNS); r.code != 0 || len(r.report.Summary.Needs) != 0 || r.report.Summary.Actions[report.ActionWouldNormalize] != 2 {
		t.Errorf("administrator, client dry run: exit %d, needs %+v, %v\n%s", r.code, r.report.Summary.Needs, r.report.Summary.Actions, r.errOut)
	}

	// A server dry run checks everything the real run needs: with the
	// backup namespace missing, and an identity that may not create it, it
	// must not promise a real run that then cannot start. It reports the
	// namespace as a need of every run and exits 1; the real run exits 2.
	// Everything a run needs, anywhere, but no namespaces.
	everywhere := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "preflight-no-namespaces"},
		Rules: append(append([]rbacv1.PolicyRule{}, role.Rules...),
			rbacv1.PolicyRule{APIGroups: []string{nadv1.GroupVersion.Group}, Resources: []string{"network-attachment-definitions"}, Verbs: []string{"patch", "create", "delete"}},
			rbacv1.PolicyRule{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"create", "get", "list", "update", "delete"}},
			rbacv1.PolicyRule{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create", "get", "update"}}),
	}
	everywhereBinding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "preflight-no-namespaces"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: everywhere.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: "User", Name: "no-namespaces"}},
	}
	for _, o := range []client.Object{everywhere, everywhereBinding} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	noNamespaces := kubeconfigAs(t, "no-namespaces", "system:authenticated")
	r = runCLI(t, "migrate", "--dry-run=server", "-l", "nothing=here", "--backup-namespace", "no-such-namespace", "--kubeconfig", noNamespaces)
	if want := "    - the namespace no-such-namespace, which does not exist, and this identity may not create it, for every run\n      what to do: create it (kubectl create namespace no-such-namespace) or pass --backup-namespace\n"; r.code != 1 || !strings.Contains(r.errOut, want) || len(r.report.Summary.Needs) != 1 {
		t.Errorf("server dry run, backup namespace missing, may not create it: exit %d, needs %+v, want 1 and %q\n%s", r.code, r.report.Summary.Needs, want, r.errOut)
	}
	r = runCLI(t, "migrate", "-l", "nothing=here", "--backup-namespace", "no-such-namespace", "--kubeconfig", noNamespaces)
	if want := "The namespace no-such-namespace, where the run keeps its Lease and the backups of the NADs it replaces, does not exist, and this identity may not create it"; r.code != 2 || !strings.Contains(r.errOut, want) {
		t.Errorf("real run, backup namespace missing, may not create it: exit %d, want 2 and %q\n%s", r.code, want, r.errOut)
	}
	// An identity that may create it (a person's, as a first step by hand):
	// the dry run goes on and creates nothing; the real run makes the
	// namespace, as helm --create-namespace does, restricted.
	r = runCLI(t, "migrate", "--dry-run=server", "-l", "nothing=here", "--backup-namespace", "made-by-the-run")
	if r.code != 0 {
		t.Errorf("server dry run, backup namespace missing, may create it: exit %d, want 0\n%s", r.code, r.errOut)
	}
	if err := c.Get(ctx, client.ObjectKey{Name: "made-by-the-run"}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
		t.Errorf("a dry run made the backup namespace: %v", err)
	}
	r = runCLI(t, "migrate", "-l", "nothing=here", "--backup-namespace", "made-by-the-run")
	made := &corev1.Namespace{}
	if err := c.Get(ctx, client.ObjectKey{Name: "made-by-the-run"}, made); r.code != 0 || err != nil || made.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("the real run, backup namespace missing: exit %d, namespace %v (%v)\n%s", r.code, made.Labels, err, r.errOut)
	}

	if testing.Short() {
		return
	}
	bare := testenv.StartT(t, testenv.Options{WithoutNADCRD: true})
	var out, errOut strings.Builder
	code := app.Execute([]string{"migrate", "--kubeconfig", bare.KubeconfigPath, "--termination-message-path", ""}, nil, &out, &errOut)
	if code != 2 || !strings.Contains(errOut.String(), "is not installed") || !strings.Contains(errOut.String(), nadv1.CRDName) {
		t.Errorf("no NAD CRD: exit %d\n%s", code, errOut.String())
	}
}
