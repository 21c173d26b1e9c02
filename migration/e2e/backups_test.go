package e2e

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/cmd/netconf-migrator/app"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// runBackups runs the backups command in-process as an administrator.
func runBackups(t *testing.T, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	code := app.Execute(append([]string{"backups"}, append(args, "--kubeconfig", env.KubeconfigPath)...), nil, &out, &errOut)
	return result{code: code, out: out.String(), errOut: errOut.String()}
}

func keyExists(t *testing.T) bool {
	t.Helper()
	err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: backupNamespace, Name: replace.KeySecretName}, &corev1.Secret{})
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	return err == nil
}

// killedRunsBackup is the backup a killed migrate run left for the NAD
// ns/name (uid) holding config, at step.
func killedRunsBackup(ns, name, uid, config string, step replace.Step) *replace.Backup {
	return &replace.Backup{Run: "killed-run", Mode: "migrate", Step: step, Original: &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"namespace": ns, "name": name, "uid": uid},
		"spec":     map[string]any{"config": config},
	}}}
}

// TestALostKeyStopsTheRunUntilAnAdministratorAdopts: the signing key
// Secret is deleted while a backup of a missing NAD exists. A run then
// makes no new key (which would make the backup look forged and leave the
// NAD missing for good): it stops with exit 3 and says how to recover. An
// administrator reviews the backup with `backups adopt`, which shows the
// diff and changes nothing without --yes; with --yes it is signed again,
// and the next run creates the NAD.
func TestALostKeyStopsTheRunUntilAnAdministratorAdopts(t *testing.T) {
	ctx := context.Background()
	const ns = "lost-key"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	key, err := replace.LoadKey(ctx, env.Client, backupNamespace)
	if err != nil {
		t.Fatal(err)
	}
	js := replace.SecretBackups{Client: env.Client, Namespace: backupNamespace, Key: key}
	j := killedRunsBackup(ns, "n", "0000-lost-key", nestedConfig("lost"), replace.StepDeleted)
	if err := js.Save(ctx, j); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.Delete(ctx, j) })
	if err := env.Client.Delete(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: backupNamespace, Name: replace.KeySecretName}}); err != nil {
		t.Fatal(err)
	}

	r := runCLI(t, "migrate", "-n", ns)
	if r.code != app.ExitStopped || !strings.Contains(r.errOut, "signing key is missing while backups exist") ||
		!strings.Contains(r.errOut, j.Name) || !strings.Contains(r.errOut, "netconf-migrator backups adopt") {
		t.Fatalf("migrate with the key gone: exit %d, want %d naming the backup and the way out\n%s", r.code, app.ExitStopped, r.errOut)
	}
	if keyExists(t) {
		t.Fatal("a run made a new signing key while a backup existed")
	}

	r = runBackups(t, "list")
	if r.code != 0 || !strings.Contains(r.out, ns+"/n") || !strings.Contains(r.out, "missing") {
		t.Fatalf("backups list: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	r = runBackups(t, "adopt")
	if r.code != app.ExitAttention || !strings.Contains(r.out, "NAD "+ns+"/n (uid 0000-lost-key)") || !strings.Contains(r.out, "under the name now: missing") ||
		!strings.Contains(r.out, `-  "NetConf": {`) || !strings.Contains(r.errOut, "--yes") {
		t.Fatalf("backups adopt without --yes: exit %d, want %d with the diff\n%s%s", r.code, app.ExitAttention, r.out, r.errOut)
	}
	if keyExists(t) {
		t.Fatal("backups adopt without --yes made a key")
	}
	r = runBackups(t, "adopt", "--yes")
	if r.code != 0 || !strings.Contains(r.out, "Adopted the backup of "+ns+"/n") {
		t.Fatalf("backups adopt --yes: exit %d\n%s%s", r.code, r.out, r.errOut)
	}

	r = runCLI(t, "migrate", "-n", ns)
	if r.code != 0 {
		t.Fatalf("migrate after the adoption: exit %d\n%s", r.code, r.errOut)
	}
	n, ok := listAll(t, ns)[ns+"/n"]
	if !ok || netconf.Normalize([]byte(n.Spec.Config)).Form != netconf.FormFlat {
		t.Fatalf("the NAD was not created from the adopted backup: %v", n)
	}
	checkNoBackups(t)
}

// TestAPersonsDeleteAfterAKilledRunIsNotUndone: a run was killed after
// saving a NAD's backup (step Deleting) and before its delete; long after,
// a person deleted the NAD. The next run cannot tell whose delete removed
// it: it reports the NAD with its backup named, creates nothing, and keeps
// the original. Before, it created the NAD again. A person then decides:
// backups restore creates one, backups discard drops the other's backup.
func TestAPersonsDeleteAfterAKilledRunIsNotUndone(t *testing.T) {
	ctx := context.Background()
	const ns = "deleted-by-a-person"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	key, err := replace.LoadKey(ctx, env.Client, backupNamespace)
	if err != nil {
		t.Fatal(err)
	}
	js := replace.SecretBackups{Client: env.Client, Namespace: backupNamespace, Key: key}
	var backups []*replace.Backup
	for _, name := range []string{"restored", "discarded"} {
		j := killedRunsBackup(ns, name, "0000-"+name, nestedConfig(name), replace.StepDeleting)
		if err := js.Save(ctx, j); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = js.Delete(ctx, j) })
		backups = append(backups, j)
	}
	time.Sleep(2 * time.Second) // past the run's --resume-window below

	r := runCLI(t, "migrate", "-n", ns, "--resume-window", "1s")
	items := r.itemsByName()
	if r.code != 1 || len(listAll(t, ns)) != 0 {
		t.Fatalf("exit %d, %d NADs; want 1 and nothing created\n%s", r.code, len(listAll(t, ns)), r.errOut)
	}
	for _, j := range backups {
		it := items[j.Original.GetName()]
		if it.Action != report.ActionFailed || it.Backup != js.Where(j) || !strings.Contains(it.Reason, "cannot be told") {
			t.Errorf("%s: %s, backup %q, %q", j.Ref(), it.Action, it.Backup, it.Reason)
		}
	}
	if r := runBackups(t, "restore", ns+"/restored"); r.code != app.ExitAttention || !strings.Contains(r.out, "step Deleting") {
		t.Fatalf("backups restore without --yes: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	if r := runBackups(t, "restore", ns+"/restored", "--yes"); r.code != 0 {
		t.Fatalf("backups restore --yes: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	if r := runBackups(t, "discard", ns+"/discarded", "--yes"); r.code != 0 {
		t.Fatalf("backups discard --yes: exit %d\n%s%s", r.code, r.out, r.errOut)
	}
	if r := runCLI(t, "migrate", "-n", ns, "--resume-window", "1s"); r.code != 0 {
		t.Fatalf("after the decisions: exit %d\n%s", r.code, r.errOut)
	}
	nads := listAll(t, ns)
	if n, ok := nads[ns+"/restored"]; !ok || netconf.Normalize([]byte(n.Spec.Config)).Form != netconf.FormFlat || len(nads) != 1 {
		t.Fatalf("after restore and discard: %v", nads)
	}
	checkNoBackups(t)
}
