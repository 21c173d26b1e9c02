package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// commit02 is the last commit whose build kept its backups beside the
// webhook, in netconf-migrator-system (VERSION 0.2.0): the next one,
// 4c74778, moved them to netconf-migrator-backups.
const commit02 = "a1d0efa661b976e06dea520e3dd4d7efd4028fc6"

// checkout writes the tree of commit into a directory of its own.
func checkout(t *testing.T, commit string) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("sh", "-c", fmt.Sprintf("git -C %q archive %s | tar -x -C %q", root, commit, dir))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("checking out %s (the tests need a clone with its history, not a shallow one): %v\n%s", commit, err, out)
	}
	return dir
}

// modRequires is what `go mod edit -json` says a go.mod requires.
func modRequires(t *testing.T, dir string) map[string]string {
	t.Helper()
	cmd := exec.Command("go", "mod", "edit", "-json")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go mod edit -json in %s: %v", dir, err)
	}
	var mod struct {
		Require []struct{ Path, Version string }
	}
	if err := json.Unmarshal(out, &mod); err != nil {
		t.Fatal(err)
	}
	req := map[string]string{}
	for _, r := range mod.Require {
		req[r.Path] = r.Version
	}
	return req
}

// buildAt builds the netconf-migrator binary of commit, its source as it
// was, each module it requires raised to this tree's version where this
// tree's is newer (golang.org/x/ patch and minor releases since 0.2), so
// the build cache serves the Kubernetes libraries both compile against.
func buildAt(t *testing.T, commit string) string {
	t.Helper()
	dir := checkout(t, commit)
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ours := modRequires(t, root)
	var edits []string
	for path, v := range modRequires(t, dir) {
		mine, ok := ours[path]
		if !ok {
			continue
		}
		a, aerr := version.ParseSemantic(v)
		b, berr := version.ParseSemantic(mine)
		if aerr == nil && berr == nil && b.GreaterThan(a) {
			edits = append(edits, "-require="+path+"@"+mine)
		}
	}
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off")
	if len(edits) > 0 {
		cmd := exec.Command("go", append([]string{"mod", "edit"}, edits...)...)
		cmd.Dir, cmd.Env = dir, env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go mod edit %v: %v\n%s", edits, err, out)
		}
	}
	bin := filepath.Join(t.TempDir(), "netconf-migrator-0.2")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/netconf-migrator")
	cmd.Dir, cmd.Env = dir, env
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s: %v\n%s", commit, err, out)
	}
	return bin
}

// installed is what applying a chart's render made: the operator's and
// the webhook's container arguments, and every object by
// kind/namespace/name.
type installed struct {
	args        []string
	webhookArgs []string
	objects     map[string]*unstructured.Unstructured
}

// chartInstall is how a test installs a chart.
type chartInstall struct {
	// values go over the chart's defaults, as --set does.
	values map[string]any
	// webhookURL (https://localhost:port) is where the rendered webhook
	// configuration sends admissions instead of the chart's Service: the
	// address the webhook's process serves here, its Service's stand-in.
	// Empty: the configuration is not applied (no webhook runs, and it
	// would send every NAD write to a Service no kubelet backs).
	webhookURL string
}

// upgradeChart applies chart over from as helm upgrade does: the new
// render applied, then every object of the earlier one the new one lacks
// deleted, unless Helm keeps it (helm.sh/resource-policy: keep, or a CRD
// of crds/). kubectl apply alone would leave the earlier version's RBAC
// in place, rights this version's chart no longer grants.
func upgradeChart(t *testing.T, env *testenv.Env, from installed, chart, namespace string, o chartInstall) installed {
	t.Helper()
	to := installChart(t, env, chart, namespace, o)
	for key, u := range from.objects {
		if _, ok := to.objects[key]; ok || u.GetKind() == "CustomResourceDefinition" || u.GetAnnotations()["helm.sh/resource-policy"] == "keep" {
			continue
		}
		if err := env.Client.Delete(context.Background(), u); err != nil && !apierrors.IsNotFound(err) {
			t.Fatalf("deleting %s, which the upgraded chart no longer makes: %v", key, err)
		}
	}
	return to
}

// installChart renders chart (a chart directory) as an install into
// namespace does, applies it, and returns what it made. The containers'
// arguments are the rendered ones, but for what no kubelet runs here:
// the probe and metrics addresses are off, the certificate directory is a
// temporary one, the webhook serves o.webhookURL's port on 127.0.0.1 with
// localhost in its certificate, and both talk to env (a caller gives a
// kubeconfig of the ServiceAccount's after them: the later flag wins).
func installChart(t *testing.T, env *testenv.Env, chart, namespace string, o chartInstall) installed {
	t.Helper()
	ctx := context.Background()
	out, err := testenv.RenderChart(testenv.ChartOptions{Chart: chart, Namespace: namespace, Kubeconfig: env.KubeconfigPath, Values: o.values})
	if err != nil {
		t.Fatal(err)
	}
	var webhookPort string
	if o.webhookURL != "" {
		u, err := url.Parse(o.webhookURL)
		if err != nil {
			t.Fatal(err)
		}
		webhookPort = u.Port()
	}
	var apply [][]byte
	docs := bytes.Split(out, []byte("\n---"))
	for _, doc := range docs {
		if !bytes.Contains(doc, []byte("kind: MutatingWebhookConfiguration")) {
			apply = append(apply, doc)
			continue
		}
		if o.webhookURL == "" {
			continue
		}
		mwc := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := yaml.Unmarshal(doc, mwc); err != nil {
			t.Fatalf("decoding the chart's webhook configuration: %v", err)
		}
		for i := range mwc.Webhooks {
			svc := mwc.Webhooks[i].ClientConfig.Service
			if svc == nil {
				t.Fatalf("the chart's webhook %s calls no Service", mwc.Webhooks[i].Name)
			}
			u := o.webhookURL + ptr.Deref(svc.Path, "/")
			mwc.Webhooks[i].ClientConfig.Service, mwc.Webhooks[i].ClientConfig.URL = nil, &u
		}
		raw, err := yaml.Marshal(mwc)
		if err != nil {
			t.Fatal(err)
		}
		apply = append(apply, append([]byte("\n"), raw...))
	}
	if _, stderr, err := env.Kubectl(ctx, bytes.Join(apply, []byte("\n---")), "apply", "--server-side", "--force-conflicts", "-f", "-"); err != nil {
		t.Fatalf("applying the chart rendered from %s: %v\n%s", chart, err, stderr)
	}
	made := installed{objects: map[string]*unstructured.Unstructured{}}
	for _, doc := range apply {
		u := &unstructured.Unstructured{}
		if yaml.Unmarshal(doc, &u.Object) != nil || u.GetKind() == "" {
			continue
		}
		if u.GetNamespace() == "" && u.GetKind() != "Namespace" && u.GetKind() != "CustomResourceDefinition" && !strings.HasPrefix(u.GetKind(), "Cluster") &&
			!strings.HasSuffix(u.GetKind(), "WebhookConfiguration") && !strings.HasPrefix(u.GetKind(), "ValidatingAdmissionPolicy") {
			u.SetNamespace(namespace)
		}
		made.objects[u.GetKind()+"/"+u.GetNamespace()+"/"+u.GetName()] = u
	}
	for _, doc := range docs {
		dep := &appsv1.Deployment{}
		if yaml.Unmarshal(doc, dep) != nil || dep.Kind != "Deployment" {
			continue
		}
		component := dep.Labels["app.kubernetes.io/component"]
		var args []string
		for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
			switch {
			case strings.HasPrefix(a, "--health-probe-bind-address="):
				a = "--health-probe-bind-address=0"
			case strings.HasPrefix(a, "--metrics-bind-address="):
				a = "--metrics-bind-address=0"
			case strings.HasPrefix(a, "--metrics-cert-dir="):
				continue
			case strings.HasPrefix(a, "--cert-dir="):
				a = "--cert-dir=" + t.TempDir()
			case strings.HasPrefix(a, "--port=") && webhookPort != "":
				a = "--port=" + webhookPort
			}
			args = append(args, a)
		}
		args = append(args, "--kubeconfig", env.KubeconfigPath)
		switch component {
		case "operator":
			made.args = args
		case "webhook":
			made.webhookArgs = append(args, "--host=127.0.0.1", "--extra-dns-names=localhost")
		}
	}
	if made.args == nil {
		t.Fatalf("the chart rendered from %s has no operator Deployment", chart)
	}
	return made
}

// TestTheToolUpgradesItself: a cluster runs the last build that kept its
// backups beside the webhook (0.2.0, commit02, built here from its
// commit), installed as users install it (its chart rendered and applied,
// its operator run with the rendered arguments), beside Harvester v1.6,
// and is killed with a replacement open. The build under test is then
// installed over it the same way (chart, CRD, backup namespace), and an
// administrator moves the earlier backups as the docs say: the NAD is
// created again, no backup is left in either namespace, and the served
// CRD is this build's.
func TestTheToolUpgradesItself(t *testing.T) {
	ctx := context.Background()
	opts, err := envOptions()
	if err != nil {
		t.Fatal(err)
	}
	env := testenv.StartT(t, opts)
	c := env.Client
	old := buildAt(t, commit02)
	bin := testenv.BuildBinary(t)
	v, err := exec.Command(bin, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	buildVersion := strings.TrimSpace(string(v))
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}

	harvester.Create(t, c, harvester.NewClusterNetwork("mgmt", 0))
	h := harvester.StartT(t, env, harvester.V16)
	ns := h.Namespace(t, "self-upgrade")
	nad := newNAD(ns, "vlan100", `{"NetConf":{"cniVersion":"0.3.1","name":"%s","type":"bridge","ipam":{}},"bridge":"mgmt-br","promiscMode":true,"vlan":100}`)
	nad.Labels = map[string]string{harvester.LabelClusterNetwork: "mgmt", harvester.LabelNetworkType: "L2VlanNetwork", harvester.LabelVlanID: "100"}
	h.Pause(func() {
		if err := c.Create(ctx, nad); err != nil {
			t.Fatal(err)
		}
	})
	h.Settle(t)
	before := &nadv1.NetworkAttachmentDefinition{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(nad), before); err != nil {
		t.Fatal(err)
	}

	// 0.2, installed from its own chart.
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ownNamespace, Name: "netconf-migrator-operator-6f4d9-old"},
		Spec: corev1.PodSpec{ServiceAccountName: "netconf-migrator-operator", Containers: []corev1.Container{{Name: "operator", Image: "netconf-migrator"}}}}
	harvester.Create(t, c, pod)
	if err := c.Get(ctx, client.ObjectKeyFromObject(pod), pod); err != nil {
		t.Fatal(err)
	}
	was := installChart(t, env, filepath.Join(checkout(t, commit02), "config", "chart", "netconf-migrator"), ownNamespace, chartInstall{})
	oldArgs := was.args
	h.Controllers.SetDown(true) // the deletion waits on Harvester's finalizers
	first := runContainer(t, old, pod, oldArgs)
	nm := &v1alpha1.NADMigration{ObjectMeta: metav1.ObjectMeta{Name: "before-the-upgrade"}, Spec: v1alpha1.NADMigrationSpec{Recreate: v1alpha1.RecreateAuto, Namespaces: []string{ns}}}
	harvester.Create(t, c, nm)
	t.Cleanup(func() { _ = c.Delete(ctx, nm) })
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 3*time.Minute, true, func(context.Context) (bool, error) {
		_, cur := formOn(t, env, ns, "vlan100")
		return cur != nil && cur.UID == before.UID && cur.DeletionTimestamp != nil, nil
	})
	if err != nil {
		got := &v1alpha1.NADMigration{}
		_ = c.Get(ctx, client.ObjectKeyFromObject(nm), got)
		status, _ := json.Marshal(got.Status)
		t.Fatalf("waiting for 0.2's operator to delete the nested NAD to replace it: %v\nthe NADMigration's status: %s\n0.2's log:\n%s", err, status, first.logs())
	}
	first.kill()
	earlier := &corev1.SecretList{}
	if err := c.List(ctx, earlier, client.InNamespace(ownNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil || len(earlier.Items) != 1 {
		t.Fatalf("0.2 left %d backups beside the webhook (%v), want its one open replacement\n%s", len(earlier.Items), err, first.logs())
	}
	h.Controllers.SetDown(false) // the deletion finishes: the NAD is gone
	waitFor(t, "Harvester's controllers to finish the deletion", func() (bool, error) {
		_, cur := formOn(t, env, ns, "vlan100")
		return cur == nil, nil
	})

	// This build, installed over it the same way: its chart applied, a new
	// Pod (a new image is a new ReplicaSet), the operator run with the
	// rendered arguments as its ServiceAccount under the chart's RBAC,
	// which may not list Secrets beside the webhook: 0.2's backup stays
	// there, reported, until the administrator moves it
	// (docs/operations.md).
	newArgs := upgradeChart(t, env, was, filepath.Join(root, "config", "chart", "netconf-migrator"), ownNamespace, chartInstall{}).args
	port, err := testenv.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", port)
	asOperator := asServiceAccount(t, env, ownNamespace, "netconf-migrator-operator")
	// The later flags win over the rendered ones.
	newArgs = append(newArgs, "--kubeconfig", asOperator, "--metrics-bind-address", metrics, "--metrics-secure=false")
	newPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ownNamespace, Name: "netconf-migrator-operator-8c2f1-new"},
		Spec: corev1.PodSpec{ServiceAccountName: "netconf-migrator-operator", Containers: []corev1.Container{{Name: "operator", Image: "netconf-migrator"}}}}
	harvester.Create(t, c, newPod)
	if err := c.Get(ctx, client.ObjectKeyFromObject(newPod), newPod); err != nil {
		t.Fatal(err)
	}
	second := runContainer(t, bin, newPod, newArgs)
	last := "not scraped"
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) {
		v, ok := scrape("http://"+metrics+"/metrics", "netconf_migrator_earlier_backups_unseen")
		if ok {
			last = fmt.Sprint(v)
		}
		return ok && v == 1, nil
	})
	if err != nil {
		t.Fatalf("this build's operator, as its ServiceAccount, did not report 0.2's backup it may not see: %v (last scraped: %s)\n%s", err, last, second.logs())
	}
	kept := &corev1.SecretList{}
	if err := c.List(ctx, kept, client.InNamespace(ownNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil || len(kept.Items) != 1 {
		t.Fatalf("0.2's backup beside the webhook before backups move: %d (%v), want it there still\n%s", len(kept.Items), err, second.logs())
	}
	// journals: the command's name in 0.2's docs, still an alias.
	move := exec.Command(bin, "journals", "move", "--from", ownNamespace, "--backup-namespace", backupNamespace, "--yes", "--kubeconfig", env.KubeconfigPath)
	if out, err := move.CombinedOutput(); err != nil {
		t.Fatalf("journals move: %v\n%s", err, out)
	}
	waitFor(t, "this build's operator to create the NAD again", func() (bool, error) {
		f, cur := formOn(t, env, ns, "vlan100")
		return cur != nil && cur.UID != before.UID && f == netconf.FormFlat, nil
	})
	// The backup goes once the NAD stands (created first, then closed).
	waitFor(t, "no backup left in either namespace", func() (bool, error) {
		for _, where := range []string{ownNamespace, backupNamespace} {
			left := &corev1.SecretList{}
			if err := c.List(ctx, left, client.InNamespace(where), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil || len(left.Items) != 0 {
				return false, err
			}
		}
		return true, nil
	})
	// The earlier key (0.2 named it netconf-migrator-journal-key) went
	// with the last backup it signed: nothing of the tool's is left beside
	// the webhook.
	for _, name := range []string{replace.EarlierKeySecretName, replace.KeySecretName} {
		if err := c.Get(ctx, client.ObjectKey{Namespace: ownNamespace, Name: name}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
			t.Errorf("a signing key %s beside the webhook: %v, want none once 0.2's backups moved", name, err)
		}
	}
	// 0.2's CRD (its chart's crds/, no release's) is this build's now,
	// applied by the operator through the binary's own wiring.
	waitFor(t, "this build's operator to apply its CRD", func() (bool, error) {
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := c.Get(ctx, client.ObjectKey{Name: "nadmigrations." + v1alpha1.GroupVersion.Group}, crd); err != nil {
			return false, err
		}
		return crd.Annotations[operator.AnnotationCRDVersion] == buildVersion, nil
	})
	// The NADMigration 0.2 started, and was killed in, is finished by this
	// build: not left Reconciling for ever.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 3*time.Minute, true, func(context.Context) (bool, error) {
		got := &v1alpha1.NADMigration{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(nm), got); err != nil {
			return false, err
		}
		return got.Status.CompletionTime != nil && meta.IsStatusConditionTrue(got.Status.Conditions, v1alpha1.ConditionReady), nil
	})
	if err != nil {
		got := &v1alpha1.NADMigration{}
		_ = c.Get(ctx, client.ObjectKeyFromObject(nm), got)
		status, _ := json.Marshal(got.Status)
		t.Errorf("the NADMigration 0.2 started: %v, want it Ready under this build\n%s\n%s", err, status, second.logs())
	}
}

// formOn is form against the control plane env.
func formOn(t testing.TB, env *testenv.Env, ns, name string) (netconf.Form, *nadv1.NetworkAttachmentDefinition) {
	t.Helper()
	n := &nadv1.NetworkAttachmentDefinition{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, n); err != nil {
		return "", nil
	}
	return netconf.Normalize([]byte(n.Spec.Config)).Form, n
}
