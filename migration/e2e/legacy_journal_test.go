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
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// configMapJournal is a journal as builds before backups moved to Secrets
// wrote it: a ConfigMap of the backup namespace, signed under the same key
// over the namespace, its name, the run, the mode, the step, the NAD's uid
// and namespace/name, and the original (each length-prefixed).
func configMapJournal(t *testing.T, key []byte, ns, name, uid, config string) *corev1.ConfigMap {
	t.Helper()
	original, err := json.Marshal(map[string]any{"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"namespace": ns, "name": name, "uid": uid}, "spec": map[string]any{"config": config}})
	if err != nil {
		t.Fatal(err)
	}
	cmName := replace.JournalName(types.UID(uid))
	const run, mode, step = "old-build-run", "migrate", "Deleted"
	mac := hmac.New(sha256.New, key)
	for _, part := range []string{backupNamespace, cmName, run, mode, step, uid, ns + "/" + name, string(original)} {
		fmt.Fprintf(mac, "%d:", len(part))
		mac.Write([]byte(part))
	}
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Namespace: backupNamespace, Name: cmName,
			Labels:      map[string]string{replace.LabelJournal: "true", replace.LabelJournalUID: uid},
			Annotations: map[string]string{replace.AnnotationNAD: ns + "/" + name, replace.AnnotationMode: mode, replace.AnnotationStep: step, replace.AnnotationRun: run}},
		Data: map[string]string{"original.json": string(original), "signature": base64.StdEncoding.EncodeToString(mac.Sum(nil))},
	}
}

// TestConfigMapJournalsOfAnEarlierBuildAreMovedAndResumed: a cluster
// upgraded from a build that kept journals in ConfigMaps holds one whose
// NAD is missing. The next run moves it into a Secret, creates the NAD
// from it and closes it; a ConfigMap the key does not verify is reported
// as a look-alike and never acted on. Before, neither was read: the NAD
// stayed missing and nothing said so.
func TestConfigMapJournalsOfAnEarlierBuildAreMovedAndResumed(t *testing.T) {
	ctx := context.Background()
	const ns = "configmap-journals"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	key, err := replace.LoadKey(ctx, env.Client, backupNamespace)
	if err != nil {
		t.Fatal(err)
	}
	good := configMapJournal(t, key, ns, "missing", "0000-cm-missing", nestedConfig("missing"))
	forged := configMapJournal(t, []byte(strings.Repeat("f", 32)), ns, "forged", "0000-cm-forged", nestedConfig("forged"))
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
		t.Errorf("the NAD of the ConfigMap journal was not created again, flat: %v", n)
	}
	if _, ok := nads[ns+"/forged"]; ok {
		t.Error("a NAD was created from a ConfigMap the key does not verify")
	}
	if got := r.report.Summary.RejectedBackups; len(got) != 1 || !strings.Contains(got[0], "ConfigMap "+backupNamespace+"/"+forged.Name) {
		t.Errorf("rejected backups: %v, want the forged ConfigMap", got)
	}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(good), &corev1.ConfigMap{}); !apierrors.IsNotFound(err) {
		t.Errorf("the moved ConfigMap journal is still there: %v", err)
	}
	checkNoBackups(t)
}
