package e2e

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// configMapBackup is a backup as builds before backups moved to Secrets
// wrote it: a ConfigMap of their backup namespace (netconf-migrator-system,
// beside the webhook), signed under the same key
// over the namespace, its name, the run, the mode, the step, the NAD's uid
// and namespace/name, and the original (each length-prefixed).
func configMapBackup(t *testing.T, key []byte, ns, name, uid, config string) *corev1.ConfigMap {
	t.Helper()
	original, err := json.Marshal(map[string]any{"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"namespace": ns, "name": name, "uid": uid}, "spec": map[string]any{"config": config}})
	if err != nil {
		t.Fatal(err)
	}
	cmName := replace.BackupName(types.UID(uid))
	const run, mode, step = "old-build-run", "migrate", "Deleted"
	mac := hmac.New(sha256.New, key)
	for _, part := range []string{earlierNamespace, cmName, run, mode, step, uid, ns + "/" + name, string(original)} {
		fmt.Fprintf(mac, "%d:", len(part))
		mac.Write([]byte(part))
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: earlierNamespace, Name: cmName,
			Labels:      map[string]string{replace.LabelBackup: "true", replace.LabelBackupUID: uid},
			Annotations: map[string]string{replace.AnnotationNAD: ns + "/" + name, replace.AnnotationMode: mode, replace.AnnotationStep: step, replace.AnnotationRun: run}},
		Data: map[string]string{"original.json": string(original), "signature": base64.StdEncoding.EncodeToString(mac.Sum(nil))},
	}
}

// TestConfigMapBackupsOfAnEarlierBuildAreMovedAndResumed: a cluster
// upgraded from a build that kept backups in ConfigMaps holds one whose
// NAD is missing. The next run moves it into a Secret, creates the NAD
// from it and closes it; a ConfigMap the key does not verify is reported
// as a look-alike and never acted on. Before, neither was read: the NAD
// stayed missing and nothing said so.
func TestConfigMapBackupsOfAnEarlierBuildAreMovedAndResumed(t *testing.T) {
	ctx := context.Background()
	const ns = "configmap-backups"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	key, err := replace.LoadKey(ctx, env.Client, earlierNamespace)
	if err != nil {
		t.Fatal(err)
	}
	good := configMapBackup(t, key, ns, "missing", "0000-cm-missing", nestedConfig("missing"))
	forged := configMapBackup(t, []byte(strings.Repeat("f", 32)), ns, "forged", "0000-cm-forged", nestedConfig("forged"))
	for _, cm := range []*corev1.ConfigMap{good, forged} {
		if err := env.Client.Create(ctx, cm); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, forged) })

	r := runCLI(t, "migrate", "-n", ns)
	if r.code != 1 {
		t.Fatalf("exit %d, want 1 (a look-alike backup needs a person)\n%s", r.code, r.errOut)
	}
	nads := listAll(t, ns)
	if n, ok := nads[ns+"/missing"]; !ok || netconf.Normalize([]byte(n.Spec.Config)).Form != netconf.FormFlat {
		t.Errorf("the NAD of the ConfigMap backup was not created again, flat: %v", n)
	}
	if _, ok := nads[ns+"/forged"]; ok {
		t.Error("a NAD was created from a ConfigMap the key does not verify")
	}
	if got := r.report.Summary.RejectedBackups; len(got) != 1 || !strings.Contains(got[0], "ConfigMap "+earlierNamespace+"/"+forged.Name) {
		t.Errorf("rejected backups: %v, want the forged ConfigMap", got)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(good), &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Errorf("the moved ConfigMap backup is still there: %v", err)
	}
	checkNoBackups(t)
}

// earlierBackup stores a backup as versions up to 0.2 did: a Secret beside
// the webhook, signed under the key kept there, whose NAD is missing.
func earlierBackup(t *testing.T, ns, name, uid string) {
	t.Helper()
	ctx := context.Background()
	key, err := replace.LoadKey(ctx, env.Client, earlierNamespace)
	if err != nil {
		t.Fatal(err)
	}
	original := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"namespace": ns, "name": name, "uid": uid}, "spec": map[string]any{"config": nestedConfig(name)}}}
	js := replace.SecretBackups{Client: env.Client, Namespace: earlierNamespace, Key: key}
	if err := js.Save(ctx, &replace.Backup{Run: "v0.2-run", Mode: "migrate", Step: replace.StepDeleted, Original: original}); err != nil {
		t.Fatal(err)
	}
}

// earlierLeft counts the backups left beside the webhook, and whether the
// earlier key is still there.
func earlierLeft(t *testing.T) (int, bool) {
	t.Helper()
	list := &corev1.SecretList{}
	if err := env.Client.List(context.Background(), list, client.InNamespace(earlierNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil {
		t.Fatal(err)
	}
	key, err := replace.ReadKey(context.Background(), env.Client, earlierNamespace)
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Items), key != nil
}

// TestBackupsBesideTheWebhookAreMovedByAnAdministrator (finding 10): the
// Job's ServiceAccount no longer lists Secrets beside the webhook, so a
// backup a 0.2 run left there is out of its sight: its run says so, names
// the command, and touches nothing. backups move shows the backups and,
// with --yes, moves them into the backup namespace and removes the earlier
// key; the Job's next run creates the NADs.
func TestBackupsBesideTheWebhookAreMovedByAnAdministrator(t *testing.T) {
	ctx := context.Background()
	applyJobRBAC(t)
	const ns = "earlier-by-move"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	earlierBackup(t, ns, "a", "0000-earlier-a")
	earlierBackup(t, ns, "b", "0000-earlier-b")
	asJob := kubeconfigAs(t, jobSA, jobGroups...)

	r := runCLI(t, "migrate", "-n", ns, "--kubeconfig", asJob)
	if r.code != 0 || !strings.Contains(r.errOut, "Backups of an earlier version may wait where this run cannot look") || !strings.Contains(r.errOut, "backups move --from "+earlierNamespace) {
		t.Errorf("the Job's run: exit %d, want 0 and a line naming backups move\n%s", r.code, r.errOut)
	}
	if n, key := earlierLeft(t); n != 2 || !key {
		t.Fatalf("after the Job's run: %d backups and key %v beside the webhook, want both untouched", n, key)
	}

	r = runBackups(t, "move")
	if r.code != 1 || strings.Count(r.out, "the earlier key verifies it: moved") != 2 || !strings.Contains(r.out, ns+"/a") {
		t.Fatalf("backups move without --yes: exit %d, want 1 and both backups shown\n%s%s", r.code, r.out, r.errOut)
	}
	if n, _ := earlierLeft(t); n != 2 {
		t.Fatalf("backups move without --yes moved something: %d left", n)
	}
	r = runBackups(t, "move", "--yes")
	if r.code != 0 || strings.Count(r.out, "Moved the backup of") != 2 || !strings.Contains(r.out, "Removed the earlier signing key") {
		t.Fatalf("backups move --yes: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	if n, key := earlierLeft(t); n != 0 || key {
		t.Fatalf("after the move: %d backups and key %v beside the webhook, want none", n, key)
	}

	r = runCLI(t, "migrate", "-n", ns, "--kubeconfig", asJob)
	if r.code != 0 {
		t.Fatalf("the Job's run after the move: exit %d\n%s", r.code, r.errOut)
	}
	nads := listAll(t, ns)
	for _, name := range []string{"a", "b"} {
		if n, ok := nads[ns+"/"+name]; !ok || netconf.Normalize([]byte(n.Spec.Config)).Form != netconf.FormFlat {
			t.Errorf("NAD %s/%s was not created again, flat: %v", ns, name, n)
		}
	}
	checkNoBackups(t)
}

// TestBackupsBesideTheWebhookAreMovedByAnAdministratorsRun: a migrate run
// with the rights to list Secrets beside the webhook (a cluster
// administrator's, the Harvester upgrade Job's) moves what a 0.2 run left
// there by itself, creates the NAD, and removes the earlier key.
func TestBackupsBesideTheWebhookAreMovedByAnAdministratorsRun(t *testing.T) {
	ctx := context.Background()
	const ns = "earlier-by-run"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	ensureBackupNamespace(t)
	earlierBackup(t, ns, "c", "0000-earlier-c")
	r := runCLI(t, "migrate", "-n", ns)
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.errOut)
	}
	if n, ok := listAll(t, ns)[ns+"/c"]; !ok || netconf.Normalize([]byte(n.Spec.Config)).Form != netconf.FormFlat {
		t.Errorf("NAD %s/c was not created again, flat: %v", ns, n)
	}
	if n, key := earlierLeft(t); n != 0 || key {
		t.Errorf("after the run: %d backups and key %v beside the webhook, want none", n, key)
	}
	checkNoBackups(t)
}
