package migration

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/report"
)

func webhookDenial(msg string) error {
	return apierrors.NewInternalError(errors.New(`admission webhook "validator.harvester-system.harvester-network-webhook" denied the request: ` + msg))
}

var typeRule = webhookDenial("can't update nad a/n because nad cannot be updated from network type  to network type bridge")

func runWithBackups(t *testing.T, s *memStore, b *memBackups, o Options) *report.Report {
	t.Helper()
	if o.Backoff == (Backoff{}) {
		o.Backoff = fastBackoff
	}
	m := &Migrator{Store: s, Backups: b, Events: &recordedEvents{}, Log: logr.Discard(), Opts: o}
	rep, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestRecreate walks the recreate path through each way it can end, with
// faults injected into the store: nothing is deleted unless the new object
// would be admitted, and the NAD always exists at the end, as wanted or as
// it was, or its backup says where it is.
func TestRecreate(t *testing.T) {
	refuseUpdate := func(*memStore, string, int) error { return typeRule }
	for _, tc := range []struct {
		name string
		opts Options
		// setup injects faults; the update is always refused by the type rule.
		setup      func(s *memStore, b *memBackups)
		action     report.Action
		recreated  bool
		wantConfig string // what a/n holds at the end; "" means missing
		reason     []string
		deletes    int
		backupLeft bool
	}{
		{name: "refused in place, replaced by the flat form", action: report.ActionNormalized, recreated: true, wantConfig: flatOf, deletes: 1},
		{name: "never with --recreate=never", opts: Options{Recreate: RecreateNever}, action: report.ActionFailed, wantConfig: nested,
			reason: []string{"nad cannot be updated from network type"}},
		{name: "server dry run deletes nothing", opts: Options{DryRun: DryRunServer}, action: report.ActionWouldNormalize, recreated: true, wantConfig: nested},
		{name: "a create the validators would refuse deletes nothing",
			setup: func(s *memStore, _ *memBackups) {
				s.beforeCreate = func(*nadv1.NetworkAttachmentDefinition, bool) error {
					return webhookDenial("can't create nad a/n because the bridge name a-br does not include suffix -br")
				}
			},
			action: report.ActionFailed, wantConfig: nested, reason: []string{"nad cannot be updated", "creating it again would be refused too", "does not include suffix"}},
		{name: "a create another webhook would rewrite to a legacy form deletes nothing",
			setup: func(s *memStore, _ *memBackups) {
				s.mutate = func(n *nadv1.NetworkAttachmentDefinition) { n.Spec.Config = nested }
			},
			action: report.ActionFailed, wantConfig: nested, reason: []string{"as an admission webhook rewrites it"}},
		{name: "no backup, no delete",
			setup:  func(_ *memStore, b *memBackups) { b.failAll = errors.New("configmaps is forbidden") },
			action: report.ActionFailed, wantConfig: nested, reason: []string{"not replaced", "configmaps is forbidden"}},
		{name: "a refused delete leaves the NAD and removes the backup",
			setup: func(s *memStore, _ *memBackups) {
				s.beforeDelete = func(string, bool) error {
					return webhookDenial("can't delete nad a/n because it's still used by VM(s) a/vm1 which must remove the related networks and interfaces")
				}
			},
			action: report.ActionFailed, wantConfig: nested, reason: []string{"deleting it to create it again was refused too", "a/vm1"}},
		{name: "a create refused after the delete puts the original back",
			setup: func(s *memStore, _ *memBackups) {
				s.beforeCreate = func(n *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
					if !dryRun && n.Spec.Config == flatOf {
						return webhookDenial("refused for real")
					}
					return nil
				}
			},
			action: report.ActionFailed, wantConfig: nested, deletes: 1, reason: []string{"refused for real", "the original was created back"}},
		{name: "when no create succeeds the backup stays and says where",
			setup: func(s *memStore, _ *memBackups) {
				s.beforeCreate = func(_ *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
					if !dryRun {
						return webhookDenial("refused for real")
					}
					return nil
				}
			},
			action: report.ActionFailed, deletes: 1, backupLeft: true, reason: []string{"the NAD is missing", "its backup is in memory netconf-migrator-backup-a/n"}},
		{name: "a create that meets a NotFound is reported failed, not skipped as deleted",
			setup: func(s *memStore, _ *memBackups) {
				s.beforeCreate = func(_ *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
					if !dryRun {
						return apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "a")
					}
					return nil
				}
			},
			action: report.ActionFailed, deletes: 1, backupLeft: true, reason: []string{"the NAD is missing", "its backup is in memory netconf-migrator-backup-a/n"}},
		{name: "the answer to the create is lost: the retry finds our NAD",
			setup: func(s *memStore, _ *memBackups) {
				lost := false
				s.afterCreate = func(string) error {
					if lost {
						return nil
					}
					lost = true
					return apierrors.NewServiceUnavailable("injected: the answer was lost")
				}
			},
			action: report.ActionNormalized, recreated: true, wantConfig: flatOf, deletes: 1},
		{name: "another writer between read and delete: read again, then replace",
			setup: func(s *memStore, _ *memBackups) {
				once := false
				s.beforeDelete = func(key string, dryRun bool) error {
					if !dryRun && !once {
						once = true
						s.otherWriter(key, nested, "late")
					}
					return nil
				}
			},
			action: report.ActionNormalized, recreated: true, wantConfig: flatOf, deletes: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, b := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
			s.beforeUpdate = refuseUpdate
			if tc.setup != nil {
				tc.setup(s, b)
			}
			rep := runWithBackups(t, s, b, tc.opts)
			it, _ := action(rep, "a/n")
			if it.Action != tc.action || it.Recreated != tc.recreated {
				t.Errorf("%s recreated=%v (%q), want %s recreated=%v", it.Action, it.Recreated, it.Reason, tc.action, tc.recreated)
			}
			for _, r := range tc.reason {
				if !strings.Contains(it.Reason, r) {
					t.Errorf("reason %q lacks %q", it.Reason, r)
				}
			}
			got := ""
			if n, ok := s.nads["a/n"]; ok {
				got = n.Spec.Config
			}
			if got != tc.wantConfig {
				t.Errorf("a/n holds %q, want %q", got, tc.wantConfig)
			}
			if len(s.deletes) != tc.deletes {
				t.Errorf("%d deletes, want %d", len(s.deletes), tc.deletes)
			}
			if (len(b.saved) > 0) != tc.backupLeft {
				t.Errorf("backups left: %d, want left=%v", len(b.saved), tc.backupLeft)
			}
			if n, ok := s.nads["a/n"]; ok && got == flatOf && n.Annotations[nadv1.AnnotationOriginalConfig] != nested {
				t.Errorf("the recreated NAD lost the original for rollback: %v", n.Annotations)
			}
		})
	}
}

// TestResumeFinishesAnInterruptedRecreate: a run killed between the delete
// and the create left a backup and no NAD; the next run creates it first.
func TestResumeFinishesAnInterruptedRecreate(t *testing.T) {
	s, b := newMemStore(map[string]string{"a/n": nested, "a/stale": nested, "a/other": flatOf}), newMemBackups()
	orig := s.nads["a/n"].DeepCopy()
	wanted := orig.DeepCopy()
	wanted.Spec.Config = flatOf
	wanted.Annotations = map[string]string{nadv1.AnnotationOriginalConfig: nested}
	_ = b.Save(context.Background(), &Backup{Mode: ModeMigrate, Original: orig, Wanted: wanted})
	delete(s.nads, "a/n") // the interrupted run's delete
	// A backup whose NAD still exists: that run stopped before deleting.
	_ = b.Save(context.Background(), &Backup{Mode: ModeMigrate, Original: s.nads["a/stale"].DeepCopy(), Wanted: wanted})

	rep := runWithBackups(t, s, b, Options{})
	it, _ := action(rep, "a/n")
	if it.Action != report.ActionNormalized || !strings.Contains(it.Reason, "interrupted run") {
		t.Errorf("a/n: %s %q", it.Action, it.Reason)
	}
	if n := s.nads["a/n"]; n == nil || n.Spec.Config != flatOf {
		t.Fatalf("a/n was not created again: %v", n)
	}
	if len(b.saved) != 0 {
		t.Errorf("%d backups left", len(b.saved))
	}
	if rep.Summary.Total != 3 {
		t.Errorf("the report counts %d NADs, want 3 (each once)", rep.Summary.Total)
	}
	// The stale backup's NAD is migrated as usual (its update is allowed).
	if s.nads["a/stale"].Spec.Config != flatOf {
		t.Errorf("a/stale: %s", s.nads["a/stale"].Spec.Config)
	}
}

// TestResumeKeepsTheBackupOfANADSomeoneElseCreated: when another writer
// created the NAD again while it was missing, the backup is the only copy
// of the original and stays; the report says where it is.
func TestResumeKeepsTheBackupOfANADSomeoneElseCreated(t *testing.T) {
	s, b := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
	orig := s.nads["a/n"].DeepCopy()
	wanted := orig.DeepCopy()
	wanted.Spec.Config = flatOf
	_ = b.Save(context.Background(), &Backup{Mode: ModeMigrate, Original: orig, Wanted: wanted})
	s.nads["a/n"].UID = "someone-else"
	s.nads["a/n"].Spec.Config = `{"cniVersion":"0.3.1","type":"macvlan","master":"eth0"}`
	rep := runWithBackups(t, s, b, Options{})
	it, _ := action(rep, "a/n")
	if it.Action != report.ActionFailed || !strings.Contains(it.Reason, "another writer created this NAD again") || !strings.Contains(it.Reason, "memory netconf-migrator-backup-a/n") {
		t.Errorf("%s %q", it.Action, it.Reason)
	}
	if len(b.saved) != 1 || rep.Summary.Total != 1 {
		t.Errorf("%d backups kept, %d NADs counted; want 1 and 1", len(b.saved), rep.Summary.Total)
	}
}

// TestNeverRecreatesHarvesterManagedNADs: a NAD one of Harvester's settings
// manages is reported with Harvester's way out, never deleted.
func TestNeverRecreatesHarvesterManagedNADs(t *testing.T) {
	s, b := newMemStore(map[string]string{"harvester-system/vm-migration-network-abcde": nested}), newMemBackups()
	s.beforeUpdate = func(*memStore, string, int) error { return typeRule }
	rep := runWithBackups(t, s, b, Options{})
	it, _ := action(rep, "harvester-system/vm-migration-network-abcde")
	if it.Action != report.ActionFailed || len(s.deletes) != 0 || b.saves != 0 {
		t.Fatalf("%s, %d deletes, %d backups", it.Action, len(s.deletes), b.saves)
	}
	if !strings.Contains(it.Advice, "vm-migration-network setting") || !strings.Contains(it.Advice, "clear the setting and set it again") {
		t.Errorf("advice %q", it.Advice)
	}
}

// TestRollbackRecreates: a restore refused in place is done by creating
// the NAD again with the original config, opted out of our webhook.
func TestRollbackRecreates(t *testing.T) {
	s, b := newMemStore(map[string]string{"a/n": flatOf}), newMemBackups()
	s.nads["a/n"].Annotations = map[string]string{nadv1.AnnotationOriginalConfig: nested, nadv1.AnnotationNormalizedFrom: "nested"}
	// Harvester v1.6+: a change of the decoded type is refused, a metadata
	// update (dropping our annotations afterwards) is not.
	s.beforeUpdate = func(s *memStore, key string, _ int) error {
		if s.nads[key].Spec.Config == flatOf {
			return webhookDenial("can't update nad a/n because nad cannot be updated from network type bridge to network type ")
		}
		return nil
	}
	rep := runWithBackups(t, s, b, Options{Mode: ModeRollback})
	it, _ := action(rep, "a/n")
	n := s.nads["a/n"]
	if it.Action != report.ActionRestored || !it.Recreated || n.Spec.Config != nested || n.Labels[nadv1.LabelSkip] != "true" {
		t.Fatalf("%s recreated=%v %q; stored %s %v", it.Action, it.Recreated, it.Reason, n.Spec.Config, n.Labels)
	}
	if _, ok := n.Annotations[nadv1.AnnotationOriginalConfig]; ok {
		t.Errorf("the restored NAD keeps %v", n.Annotations)
	}
}
