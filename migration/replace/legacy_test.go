package replace

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// TestMoveEarlierKeepsTheAgeAndVerifies: a backup an earlier version kept
// beside the webhook moves into the backup namespace signed under its key,
// keeps the time of its first writing (a move must not make an old backup
// look fresh to Replacer.ResumeWindow), and a change to that time breaks
// its signature. A look-alike stays where it is, and so does the earlier
// key while anything is left beside it; once nothing is, the key goes too.
func TestMoveEarlierKeepsTheAgeAndVerifies(t *testing.T) {
	ctx := context.Background()
	to, c := newBackups(t)
	earlierKey, err := LoadKey(ctx, c, "earlier")
	if err != nil {
		t.Fatal(err)
	}
	earlier := SecretBackups{Client: c, Namespace: "earlier", Key: earlierKey}
	j := &Backup{Run: "old-run", Mode: "migrate", Step: StepDeleting, Original: nad("a", "n", "uid-1", `{"type":"bridge"}`)}
	if err := earlier.Save(ctx, j); err != nil {
		t.Fatal(err)
	}
	// The fake client sets no creationTimestamp: give the earlier backup
	// an age, as the API server would have.
	long := time.Now().Add(-3 * time.Hour).Truncate(time.Second).UTC()
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "earlier", Name: BackupName("uid-1")}, sec); err != nil {
		t.Fatal(err)
	}
	sec.CreationTimestamp.Time = long
	if err := c.Update(ctx, sec); err != nil {
		t.Fatal(err)
	}
	forged := (&SecretBackups{Client: c, Namespace: "earlier", Key: []byte(strings.Repeat("f", 32))})
	if err := forged.Save(ctx, &Backup{Run: "x", Mode: "migrate", Step: StepDeleted, Original: nad("kube-system", "evil", "uid-x", `{}`)}); err != nil {
		t.Fatal(err)
	}

	e, err := MoveEarlier(ctx, c, "earlier", to)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Moved) != 1 || e.Moved[0] != "a/n" || len(e.Rejected) != 1 || e.KeyRemoved {
		t.Fatalf("first move: %+v; want a/n moved, the look-alike rejected, the earlier key kept", e)
	}
	got, rejected, err := to.List(ctx)
	if err != nil || len(got) != 1 || len(rejected) != 0 {
		t.Fatalf("after the move: %d backups, %v rejected, %v", len(got), rejected, err)
	}
	if !got[0].Written.Equal(long) || got[0].Step != StepDeleting || got[0].Run != "old-run" {
		t.Errorf("moved backup written %s (want %s), step %s, run %s", got[0].Written, long, got[0].Step, got[0].Run)
	}
	// Written is signed: making the moved backup look fresh breaks it.
	moved := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tool", Name: BackupName("uid-1")}, moved); err != nil {
		t.Fatal(err)
	}
	moved.Annotations[AnnotationWritten] = time.Now().UTC().Format(time.RFC3339)
	if _, err := to.read(moved); err == nil {
		t.Error("a moved backup whose time of writing was changed still verifies")
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "earlier", Name: BackupName("uid-1")}, &corev1.Secret{}); !apierrors.IsNotFound(err) {
		t.Errorf("the moved backup is still beside the webhook: %v", err)
	}

	// Once the look-alike is removed, the next move removes the key.
	if err := c.DeleteAllOf(ctx, &corev1.Secret{}, client.InNamespace("earlier"), client.MatchingLabels{LabelBackup: "true"}); err != nil {
		t.Fatal(err)
	}
	e, err = MoveEarlier(ctx, c, "earlier", to)
	if err != nil || !e.KeyRemoved || len(e.Moved) != 0 {
		t.Fatalf("second move: %+v, %v; want the earlier key removed", e, err)
	}
	if key, err := ReadKey(ctx, c, "earlier"); err != nil || key != nil {
		t.Errorf("the earlier key is still there (%v)", err)
	}
}

// TestABackupWithoutAMoveVerifiesAsBefore: a backup written by this
// version's Save, never moved, carries no time annotation and verifies
// under the signature every earlier version computed.
func TestABackupWithoutAMoveVerifiesAsBefore(t *testing.T) {
	ctx := context.Background()
	js, c := newBackups(t)
	if err := js.Save(ctx, &Backup{Run: "r", Mode: "migrate", Step: StepDeleting, Original: nad("a", "n", "uid-1", `{}`)}); err != nil {
		t.Fatal(err)
	}
	sec := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "tool", Name: BackupName(types.UID("uid-1"))}, sec); err != nil {
		t.Fatal(err)
	}
	if _, ok := sec.Annotations[AnnotationWritten]; ok {
		t.Errorf("a backup never moved carries %s", AnnotationWritten)
	}
	j, err := decode(sec)
	if err != nil {
		t.Fatal(err)
	}
	if string(sec.Data[keySignature]) != js.signature(sec.Name, j, sec.Data[keyOriginal], "") {
		t.Error("the signature of a backup never moved is not the one earlier versions computed")
	}
}
