package migration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/harvester"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration/replace"
)

func denialBy(webhook, msg string) error {
	return apierrors.NewInternalError(errors.New(`admission webhook "` + webhook + `" denied the request: ` + msg))
}

func webhookDenial(msg string) error {
	return denialBy("validator.harvester-system.harvester-network-webhook", msg)
}

var typeRule = webhookDenial("can't update nad a/n because nad cannot be updated from network type  to network type bridge")

func newReplacer(s *memStore, j *memBackups) *replace.Replacer {
	return &replace.Replacer{
		Objects: memObjects{s}, Backups: j, Log: logr.Discard(), Run: "test-run",
		Finalizers: harvester.Finalizers(), Webhooks: harvester.Webhooks(),
		Budget: time.Second, Poll: time.Millisecond,
	}
}

func runWithBackups(t *testing.T, s *memStore, j *memBackups, o Options) *report.Report {
	t.Helper()
	rep, err := runReplacing(context.Background(), s, newReplacer(s, j), o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func runReplacing(ctx context.Context, s *memStore, r *replace.Replacer, o Options) (*report.Report, error) {
	if o.Backoff == (Backoff{}) {
		o.Backoff = fastBackoff
	}
	m := &Migrator{Store: s, Replacer: r, Events: &recordedEvents{}, Log: logr.Discard(), Opts: o}
	return m.Run(ctx)
}

// harvesterFinalizers puts the manager's and the agent's finalizers on a
// NAD, as Harvester v1.6 does to every NAD, and has a controller remove
// them a moment after a delete.
func harvesterFinalizers(s *memStore, key string) {
	s.nads[key].Finalizers = []string{harvester.FinalizerManager, harvester.FinalizerAgent}
	s.controller = func(s *memStore, key string) {
		time.Sleep(5 * time.Millisecond)
		s.finalize(key)
	}
}

// leaseLostWhen fences r's writes by a run Lease that is lost whenever
// lost says so (asked before each write), as runlock.Held.Fence answers.
func leaseLostWhen(r *replace.Replacer, lost func() bool) {
	fence := func() (time.Time, error) {
		if lost() {
			return time.Time{}, runlock.ErrLost
		}
		return time.Now().Add(time.Minute), nil
	}
	r.Objects, r.Backups = replace.FencedObjects(r.Objects, fence), replace.FencedBackups(r.Backups, fence)
}

// TestRecreate walks the replacement through each way it can end, with
// faults injected into the store: nothing is deleted unless the new object
// would be admitted and every finalizer has a known controller, and the
// NAD always exists at the end, as wanted or as it was, or the report says
// it is missing and where its backup is.
func TestRecreate(t *testing.T) {
	refuseUpdate := func(*memStore, string, int) error { return typeRule }
	for _, tc := range []struct {
		name string
		opts Options
		// setup injects faults; the update is refused by the type rule
		// unless setup changes beforeUpdate.
		setup      func(s *memStore, j *memBackups, r *replace.Replacer)
		action     report.Action
		recreated  bool
		wantConfig string // what a/n holds at the end; "" means missing
		reason     []string
		deletes    int
		backupLeft bool
		backupStep replace.Step
	}{
		{name: "refused in place, replaced by the flat form", action: report.ActionNormalized, recreated: true, wantConfig: flatOf, deletes: 1},
		{name: "never with --recreate=never", opts: Options{Recreate: RecreateNever}, action: report.ActionFailed, wantConfig: nested,
			reason: []string{"nad cannot be updated from network type"}},
		{name: "server dry run deletes nothing", opts: Options{DryRun: DryRunServer}, action: report.ActionWouldNormalize, recreated: true, wantConfig: nested},
		{name: "Harvester's finalizers: waits until its controllers are done, then creates",
			setup:  func(s *memStore, _ *memBackups, _ *replace.Replacer) { harvesterFinalizers(s, "a/n") },
			action: report.ActionNormalized, recreated: true, wantConfig: flatOf, deletes: 1},
		{name: "a finalizer no known controller removes: nothing deleted, the finalizer named",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				s.nads["a/n"].Finalizers = []string{"example.com/keep"}
			},
			action: report.ActionFailed, wantConfig: nested, reason: []string{"nad cannot be updated", "finalizer example.com/keep", "--replace-finalizer"}},
		{name: "a NAD someone else deleted, still terminating: never deleted again nor created again",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				harvesterFinalizers(s, "a/n")
				s.controller = nil // its deletion waits on Harvester's controllers
				s.nads["a/n"].DeletionTimestamp = &metav1.Time{Time: time.Now()}
			},
			action: report.ActionFailed, wantConfig: nested, reason: []string{"nad cannot be updated", "being deleted (by someone else)", "never created again"}},
		{name: "a finalizer given with --replace-finalizer is waited out",
			setup: func(s *memStore, _ *memBackups, r *replace.Replacer) {
				s.nads["a/n"].Finalizers = []string{"example.com/keep"}
				s.controller = func(s *memStore, key string) { s.finalize(key) }
				r.Finalizers["example.com/keep"] = "example's controller"
			},
			action: report.ActionNormalized, recreated: true, wantConfig: flatOf, deletes: 1},
		{name: "a finalizer held past the budget: missing, backup kept at step Deleted, finalizer and controller named",
			setup: func(s *memStore, _ *memBackups, r *replace.Replacer) {
				harvesterFinalizers(s, "a/n")
				s.controller = nil // the controller is down
				r.Budget = 50 * time.Millisecond
			},
			action: report.ActionMissing, wantConfig: nested, deletes: 1, backupLeft: true, backupStep: replace.StepDeleted,
			reason: []string{"missing", "still terminating", harvester.FinalizerManager, "network controller manager", "memory netconf-migrator-backup-a/n", "the next run goes on"}},
		{name: "a refusal from a webhook not on the allow list is final, in its own words",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				s.beforeUpdate = func(*memStore, string, int) error {
					return denialBy("immutable-nads.kyverno.example", "NADs are immutable")
				}
			},
			action: report.ActionFailed, wantConfig: nested, reason: []string{`admission webhook "immutable-nads.kyverno.example" denied the request: NADs are immutable`}},
		{name: "a webhook added with --replace-past-webhook calls for a replacement",
			setup: func(s *memStore, _ *memBackups, r *replace.Replacer) {
				s.beforeUpdate = func(*memStore, string, int) error { return denialBy("immutable-nads.example", "no") }
				r.Webhooks = append(r.Webhooks, "immutable-nads.example")
			},
			action: report.ActionNormalized, recreated: true, wantConfig: flatOf, deletes: 1},
		{name: "v1.6 (agent finalizers): a NAD on the same cluster network Harvester cannot decode does not hold the replacement",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				harvesterFinalizers(s, "a/n")
				s.nads["a/n"].Labels = map[string]string{harvester.LabelClusterNetwork: "mgmt"}
				s.rv++
				s.nads["b/double"] = &nadv1.NetworkAttachmentDefinition{
					ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "double", UID: "b/double", ResourceVersion: "99", Labels: map[string]string{harvester.LabelClusterNetwork: "mgmt"}},
					Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: `"{\"type\":\"bridge\"}"`},
				}
			},
			action: report.ActionNormalized, recreated: true, wantConfig: flatOf, deletes: 1},
		{name: "v1.7+ (the manager's finalizer alone): a NAD on the same cluster network Harvester cannot decode: nothing deleted, that NAD named",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				harvesterFinalizers(s, "a/n")
				s.nads["a/n"].Finalizers = []string{harvester.FinalizerManager}
				s.nads["a/n"].Labels = map[string]string{harvester.LabelClusterNetwork: "mgmt"}
				s.rv++
				s.nads["b/double"] = &nadv1.NetworkAttachmentDefinition{
					ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "double", UID: "b/double", ResourceVersion: "99", Labels: map[string]string{harvester.LabelClusterNetwork: "mgmt"}},
					Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: `"{\"type\":\"bridge\"}"`},
				}
			},
			action: report.ActionFailed, wantConfig: nested, reason: []string{"NAD b/double on the same cluster network mgmt", "stays terminating", "fix or remove b/double first"}},
		{name: "v1.7 with every NAD older than the upgrade: the wait runs out and the report names the NAD that blocks the cleanup",
			setup: func(s *memStore, _ *memBackups, r *replace.Replacer) {
				harvesterFinalizers(s, "a/n")
				s.controller = nil // its cleanup fails on b/double
				r.Budget = 50 * time.Millisecond
				s.nads["a/n"].Labels = map[string]string{harvester.LabelClusterNetwork: "mgmt"}
				s.nads["b/double"] = &nadv1.NetworkAttachmentDefinition{
					ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "double", UID: "b/double", ResourceVersion: "99", Labels: map[string]string{harvester.LabelClusterNetwork: "mgmt"}},
					Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: `"{\"type\":\"bridge\"}"`},
				}
			},
			action: report.ActionMissing, wantConfig: nested, deletes: 1, backupLeft: true, backupStep: replace.StepDeleted,
			reason: []string{"still terminating", harvester.FinalizerManager, "NAD b/double on the same cluster network mgmt", "fix or remove b/double first"}},
		{name: "a create the validators would refuse deletes nothing",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				s.beforeCreate = func(*nadv1.NetworkAttachmentDefinition, bool) error {
					return webhookDenial("can't create nad a/n because the bridge name a-br does not include suffix -br")
				}
			},
			action: report.ActionFailed, wantConfig: nested, reason: []string{"nad cannot be updated", "creating it again would be refused too", "does not include suffix"}},
		{name: "a create another webhook would rewrite to a legacy form deletes nothing",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				s.mutate = func(n *nadv1.NetworkAttachmentDefinition) { n.Spec.Config = nested }
			},
			action: report.ActionFailed, wantConfig: nested, reason: []string{"as an admission webhook rewrites it"}},
		{name: "no backup, no delete",
			setup: func(_ *memStore, j *memBackups, _ *replace.Replacer) {
				j.failAll = errors.New("configmaps is forbidden")
			},
			action: report.ActionFailed, wantConfig: nested, reason: []string{"not replaced", "configmaps is forbidden"}},
		{name: "transient errors saving the backup are retried",
			setup:  func(_ *memStore, j *memBackups, _ *replace.Replacer) { j.failSaves = 2 },
			action: report.ActionNormalized, recreated: true, wantConfig: flatOf, deletes: 1},
		{name: "the run's Lease lost after the backup was saved: no delete is sent, the backup stays for the next holder",
			setup: func(_ *memStore, _ *memBackups, r *replace.Replacer) {
				// Up for the backup's save, down from then on.
				calls := 0
				leaseLostWhen(r, func() bool { calls++; return calls > 1 })
			},
			action: report.ActionUnvisited, wantConfig: nested, backupLeft: true, backupStep: replace.StepDeleting,
			reason: []string{"no longer provably holds the run Lease", "nothing was deleted"}},
		{name: "our delete's answer is lost and the run's Lease falls before the retry: missing, with its backup, not 'nothing was deleted' (issue 35, N1)",
			setup: func(s *memStore, _ *memBackups, r *replace.Replacer) {
				up := true
				s.beforeDelete = func(key string, dryRun bool) error {
					if !dryRun && s.nads[key] != nil {
						delete(s.nads, key)
						s.deletes = append(s.deletes, key)
						up = false
						return apierrors.NewServiceUnavailable("injected: the answer was lost")
					}
					return nil
				}
				leaseLostWhen(r, func() bool { return !up })
			},
			action: report.ActionMissing, deletes: 1, backupLeft: true, backupStep: replace.StepDeleting,
			reason: []string{"missing: deleted to be created again", "deleted by a delete whose answer was lost", "no longer provably holds the run Lease"}},
		{name: "our delete's answer is lost, it had not landed, and the run's Lease falls before the retry: nothing was deleted",
			setup: func(s *memStore, _ *memBackups, r *replace.Replacer) {
				up := true
				s.beforeDelete = func(key string, dryRun bool) error {
					if !dryRun && up {
						up = false
						return apierrors.NewServiceUnavailable("injected: refused before it landed")
					}
					return nil
				}
				leaseLostWhen(r, func() bool { return !up })
			},
			action: report.ActionUnvisited, wantConfig: nested, backupLeft: true, backupStep: replace.StepDeleting,
			reason: []string{"no longer provably holds the run Lease", "nothing was deleted"}},
		{name: "another writer creates a flat NAD of its own under the name before our create: theirs, reported, the original kept in the backup",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				s.beforeCreate = func(n *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
					if !dryRun && s.nads["a/n"] == nil {
						s.rv++
						s.nads["a/n"] = &nadv1.NetworkAttachmentDefinition{
							ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "n", UID: "theirs", ResourceVersion: strconv.Itoa(s.rv),
								ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "argocd-controller", Operation: metav1.ManagedFieldsOperationUpdate}}},
							Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"0.3.1","type":"macvlan","master":"eth0"}`},
						}
					}
					return nil
				}
			},
			action: report.ActionFailed, wantConfig: `{"cniVersion":"0.3.1","type":"macvlan","master":"eth0"}`, deletes: 1, backupLeft: true, backupStep: replace.StepDeleted,
			reason: []string{"field manager argocd-controller", "uid theirs", "that NAD is theirs", "the original is kept in memory netconf-migrator-backup-a/n"}},
		{name: "a refused delete leaves the NAD and removes the backup",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				s.beforeDelete = func(string, bool) error {
					return webhookDenial("can't delete nad a/n because it's still used by VM(s) a/vm1 which must remove the related networks and interfaces")
				}
			},
			action: report.ActionFailed, wantConfig: nested, reason: []string{"deleting it to create it again was refused too", "a/vm1"}},
		{name: "someone else deletes it between our read and our delete: not created again",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				s.beforeDelete = func(key string, dryRun bool) error {
					if !dryRun {
						delete(s.nads, key)
					}
					return nil
				}
			},
			action: report.ActionFailed, reason: []string{"deleted by someone else before it could be replaced", "not created again"}},
		{name: "our delete's answer is lost and the retry meets NotFound: ours, created",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				s.beforeDelete = func(key string, dryRun bool) error {
					if !dryRun && s.nads[key] != nil {
						delete(s.nads, key)
						s.deletes = append(s.deletes, key)
						return apierrors.NewServiceUnavailable("injected: the answer was lost")
					}
					return nil
				}
			},
			action: report.ActionNormalized, recreated: true, wantConfig: flatOf, deletes: 1},
		{name: "a create refused after the delete puts the original back",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				s.beforeCreate = func(n *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
					if !dryRun && n.Spec.Config == flatOf {
						return webhookDenial("refused for real")
					}
					return nil
				}
			},
			action: report.ActionFailed, wantConfig: nested, deletes: 1, reason: []string{"refused for real", "the original was created back"}},
		{name: "when no create succeeds the NAD is reported missing with its backup",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				s.beforeCreate = func(_ *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
					if !dryRun {
						return webhookDenial("refused for real")
					}
					return nil
				}
			},
			action: report.ActionMissing, deletes: 1, backupLeft: true, backupStep: replace.StepDeleted,
			reason: []string{"missing", "the backup is at memory netconf-migrator-backup-a/n"}},
		{name: "a create that meets a NotFound is reported missing, not skipped as deleted",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
				s.beforeCreate = func(_ *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
					if !dryRun {
						return apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "a")
					}
					return nil
				}
			},
			action: report.ActionMissing, deletes: 1, backupLeft: true, backupStep: replace.StepDeleted,
			reason: []string{"missing", "the backup is at memory netconf-migrator-backup-a/n"}},
		{name: "the answer to the create is lost: the retry finds our NAD",
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
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
			setup: func(s *memStore, _ *memBackups, _ *replace.Replacer) {
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
			s, j := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
			s.beforeUpdate = refuseUpdate
			uid := s.nads["a/n"].UID
			r := newReplacer(s, j)
			if tc.setup != nil {
				tc.setup(s, j, r)
			}
			rep, err := runReplacing(context.Background(), s, r, tc.opts)
			if err != nil {
				t.Fatal(err)
			}
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
			// Whatever a replacement created (as wanted, or the original
			// back) carries the uid it replaced: its proof of ownership.
			if n := s.nads["a/n"]; n != nil && slices.Contains(s.creates, "a/n") && n.Annotations[replace.AnnotationReplaces] != string(uid) {
				t.Errorf("a/n, created by the replacement, carries %s=%q, want the uid it replaced, %s", replace.AnnotationReplaces, n.Annotations[replace.AnnotationReplaces], uid)
			}
			if len(s.deletes) != tc.deletes {
				t.Errorf("%d deletes, want %d", len(s.deletes), tc.deletes)
			}
			if (len(j.saved) > 0) != tc.backupLeft {
				t.Errorf("backups left: %d, want left=%v", len(j.saved), tc.backupLeft)
			}
			for _, b := range j.saved {
				if b.Step != tc.backupStep || b.Run != "test-run" || b.UID() != "a/n" {
					t.Errorf("backup left at step %q by run %q for uid %q, want step %q by test-run for a/n", b.Step, b.Run, b.UID(), tc.backupStep)
				}
				if it.Backup != "memory "+b.Name {
					t.Errorf("the report names backup %q, want memory %s", it.Backup, b.Name)
				}
			}
			if n, ok := s.nads["a/n"]; ok && got == flatOf {
				if n.Annotations[nadv1.AnnotationOriginalConfig] != nested {
					t.Errorf("the recreated NAD lost the original for rollback: %v", n.Annotations)
				}
				if len(n.Finalizers) != 0 {
					t.Errorf("the recreated NAD carries the old object's finalizers %v; their controllers add their own", n.Finalizers)
				}
				if tc.recreated && tc.opts.DryRun == DryRunNone && (it.PreviousUID != "a/n" || it.UID != string(n.UID)) {
					t.Errorf("report says uid %q -> %q, want a/n -> %s", it.PreviousUID, it.UID, n.UID)
				}
			}
		})
	}
}

// TestAStartedReplacementFinishesAfterSIGTERM: the run is canceled right
// after the first delete; that replacement has its own budget and creates
// the NAD, which is never reported unvisited while missing. The other NAD,
// whose replacement waits for the one slot, is not started after the stop.
// Two workers share the list, so either NAD may be the first.
func TestAStartedReplacementFinishesAfterSIGTERM(t *testing.T) {
	s, j := newMemStore(map[string]string{"a/n": nested, "a/z": nested}), newMemBackups()
	s.beforeUpdate = func(*memStore, string, int) error { return typeRule }
	harvesterFinalizers(s, "a/n")
	harvesterFinalizers(s, "a/z")
	ctx, cancel := context.WithCancel(context.Background())
	var first string
	s.beforeDelete = func(key string, dryRun bool) error {
		if !dryRun && first == "" {
			first = key
			cancel()
		}
		return nil
	}
	rep, err := runReplacing(ctx, s, newReplacer(s, j), Options{Concurrency: 1, ReplaceConcurrency: 1})
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("run ended with %v, want ErrStopped", err)
	}
	if first == "" {
		t.Fatal("nothing was deleted")
	}
	other := map[string]string{"a/n": "a/z", "a/z": "a/n"}[first]
	it, _ := action(rep, first)
	if it.Action != report.ActionNormalized || !it.Recreated || s.nads[first] == nil || s.nads[first].Spec.Config != flatOf {
		t.Fatalf("%s: %s %q, stored %v", first, it.Action, it.Reason, s.nads[first])
	}
	if z, _ := action(rep, other); z.Action != report.ActionUnvisited || s.nads[other] == nil || s.nads[other].Spec.Config != nested {
		t.Errorf("%s, not started before the stop: %s, stored %v", other, z.Action, s.nads[other])
	}
	if len(j.saved) != 0 {
		t.Errorf("%d backups left", len(j.saved))
	}
}

// TestAStopDuringTheDryRunDeletesNothing: the run stops while the dry run
// of the create is in flight (its answer still comes back); the NAD is not
// deleted, no backup is written, and it is reported unvisited.
func TestAStopDuringTheDryRunDeletesNothing(t *testing.T) {
	s, j := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
	s.beforeUpdate = func(*memStore, string, int) error { return typeRule }
	harvesterFinalizers(s, "a/n")
	ctx, cancel := context.WithCancel(context.Background())
	s.beforeCreate = func(_ *nadv1.NetworkAttachmentDefinition, dryRun bool) error {
		if dryRun {
			cancel()
		}
		return nil
	}
	rep, err := runReplacing(ctx, s, newReplacer(s, j), Options{Concurrency: 1})
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("run ended with %v, want ErrStopped", err)
	}
	if it, _ := action(rep, "a/n"); it.Action != report.ActionUnvisited {
		t.Errorf("a/n: %s %q, want unvisited", it.Action, it.Reason)
	}
	if len(s.deletes) != 0 || s.nads["a/n"] == nil || s.nads["a/n"].Spec.Config != nested {
		t.Errorf("deleted %v after the stop; stored %v", s.deletes, s.nads["a/n"])
	}
	if len(j.saved) != 0 {
		t.Errorf("%d backups written after the stop", len(j.saved))
	}
}

func backupOf(s *memStore, key string, step replace.Step) *replace.Backup {
	return &replace.Backup{Run: "killed-run", Mode: ModeMigrate, Step: step, Original: toUnstructured(s.nads[key])}
}

// TestResumeFinishesAnInterruptedRecreate: a run killed between the delete
// and the create left a backup and no NAD; the next run creates it first,
// computing what to create from the original alone.
func TestResumeFinishesAnInterruptedRecreate(t *testing.T) {
	s, j := newMemStore(map[string]string{"a/n": nested, "a/stale": nested, "a/other": flatOf, "a/terminating": nested}), newMemBackups()
	_ = j.Save(context.Background(), backupOf(s, "a/n", replace.StepDeleted))
	delete(s.nads, "a/n") // the interrupted run's delete
	// A backup whose NAD still exists: that run stopped before deleting.
	_ = j.Save(context.Background(), backupOf(s, "a/stale", replace.StepDeleting))
	// Deleted, still terminating behind Harvester's finalizers.
	harvesterFinalizers(s, "a/terminating")
	_ = j.Save(context.Background(), backupOf(s, "a/terminating", replace.StepDeleted))
	now := metav1.Now()
	s.nads["a/terminating"].DeletionTimestamp = &now
	go s.controller(s, "a/terminating")

	rep := runWithBackups(t, s, j, Options{})
	for _, key := range []string{"a/n", "a/terminating"} {
		it, _ := action(rep, key)
		if it.Action != report.ActionNormalized || !strings.Contains(it.Reason, "interrupted run") || !it.Recreated {
			t.Errorf("%s: %s %q", key, it.Action, it.Reason)
		}
		n := s.nads[key]
		if n == nil || n.Spec.Config != flatOf || n.Annotations[nadv1.AnnotationOriginalConfig] != nested {
			t.Fatalf("%s was not created again as wanted: %v", key, n)
		}
	}
	if len(j.saved) != 0 {
		t.Errorf("%d backups left", len(j.saved))
	}
	if rep.Summary.Total != 4 {
		t.Errorf("the report counts %d NADs, want 4 (each once)", rep.Summary.Total)
	}
	// The stale backup's NAD is visited as usual: refused in place (the
	// store refuses nothing here), so migrated in place.
	if s.nads["a/stale"].Spec.Config != flatOf {
		t.Errorf("a/stale: %s", s.nads["a/stale"].Spec.Config)
	}
}

// TestResumeCreatesOnlyFromSignedBackups: a look-alike backup is reported,
// and nothing is created from it.
func TestResumeCreatesOnlyFromSignedBackups(t *testing.T) {
	s, j := newMemStore(map[string]string{"a/flat": flatOf}), newMemBackups()
	j.rejected = []replace.Rejected{{Where: "ConfigMap netconf-migrator-system/netconf-migrator-backup-forged", Reason: "its signature does not match"}}
	rep := runWithBackups(t, s, j, Options{})
	if len(s.creates) != 0 {
		t.Errorf("created %v from a look-alike backup", s.creates)
	}
	if len(rep.Summary.RejectedBackups) != 1 || !strings.Contains(rep.Summary.RejectedBackups[0], "netconf-migrator-backup-forged") || !rep.NeedsAttention() {
		t.Errorf("report: %v, needs attention %v", rep.Summary.RejectedBackups, rep.NeedsAttention())
	}
}

// TestResumeKeepsTheBackupOfANADSomeoneElseCreated: when another writer
// created the NAD again while it was missing, with another config than the
// run would create (legacy or flat alike), that NAD is theirs and the
// backup, the only copy of the original, stays; the report says where.
// Only a NAD holding exactly the config the run would create, or one this
// tool provably created for this backup (AnnotationReplaces, set in its
// create), closes it. Our field manager proves nothing: issue 35's N2 lost
// the original when our in-place fix of their NAD was taken for our create.
func TestResumeKeepsTheBackupOfANADSomeoneElseCreated(t *testing.T) {
	const otherVLAN = `{"cniVersion":"0.3.1","name":"n","type":"bridge","bridge":"mgmt-br","vlan":99}`
	const withMTU = `{"cniVersion":"0.3.1","name":"n","type":"bridge","bridge":"mgmt-br","vlan":100,"mtu":1500}`
	for _, tc := range []struct {
		name, config string
		// ours: it carries our field manager; proof: AnnotationReplaces
		// with the backup's uid ("other": another uid).
		ours  bool
		proof string
		keep  bool
		// closedAs is the action when the backup is closed.
		closedAs report.Action
	}{
		{name: "a legacy form", config: nested, keep: true},
		{name: "a flat config that is not the original's", config: `{"cniVersion":"0.3.1","type":"macvlan","master":"eth0"}`, keep: true},
		{name: "exactly the config the run would create", config: flatOf, closedAs: report.ActionUnchanged},
		{name: "their NAD, fixed in place by this tool: our field manager on another config", config: otherVLAN, ours: true, keep: true},
		{name: "a NAD carrying the proof of another backup", config: otherVLAN, ours: true, proof: "other", keep: true},
		{name: "our create for this backup, its answer lost, as other webhooks left it", config: withMTU, ours: true, proof: "a/n", closedAs: report.ActionNormalized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, j := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
			jr := backupOf(s, "a/n", replace.StepDeleted)
			_ = j.Save(context.Background(), jr)
			s.nads["a/n"].UID = "someone-else"
			s.nads["a/n"].Spec.Config = tc.config
			if tc.ours {
				s.nads["a/n"].ManagedFields = []metav1.ManagedFieldsEntry{{Manager: FieldManager, Operation: metav1.ManagedFieldsOperationUpdate}}
			}
			switch tc.proof {
			case "a/n":
				s.nads["a/n"].Annotations = map[string]string{replace.AnnotationReplaces: string(jr.UID())}
			case "other":
				s.nads["a/n"].Annotations = map[string]string{replace.AnnotationReplaces: "b/m"}
			}
			rep := runWithBackups(t, s, j, Options{})
			it, _ := action(rep, "a/n")
			switch {
			case tc.keep && (it.Action != report.ActionFailed || !strings.Contains(it.Reason, "another writer created this NAD again") ||
				!strings.Contains(it.Reason, "that NAD is theirs") || !strings.Contains(it.Reason, "memory netconf-migrator-backup-a/n")):
				t.Errorf("%s %q, want the backup kept and their NAD reported", it.Action, it.Reason)
			case tc.closedAs == report.ActionUnchanged && (it.Action != report.ActionUnchanged || !strings.Contains(it.Reason, "another writer created it meanwhile")):
				t.Errorf("%s %q, want it closed as another writer's create", it.Action, it.Reason)
			case tc.closedAs == report.ActionNormalized && (it.Action != report.ActionNormalized || !strings.Contains(it.Reason, "created again from its backup")):
				t.Errorf("%s %q, want it closed as our create", it.Action, it.Reason)
			}
			if (len(j.saved) == 1) != tc.keep || rep.Summary.Total != 1 || len(s.creates) != 0 {
				t.Errorf("%d backups kept, %d NADs counted, created %v", len(j.saved), rep.Summary.Total, s.creates)
			}
			if s.nads["a/n"].Spec.Config != tc.config {
				t.Errorf("the NAD standing was changed to %s", s.nads["a/n"].Spec.Config)
			}
		})
	}
}

// TestNeverRecreatesHarvesterManagedNADs: a NAD one of Harvester's settings
// manages is reported with Harvester's way out, never deleted.
func TestNeverRecreatesHarvesterManagedNADs(t *testing.T) {
	s, j := newMemStore(map[string]string{"harvester-system/vm-migration-network-abcde": nested}), newMemBackups()
	s.beforeUpdate = func(*memStore, string, int) error { return typeRule }
	rep := runWithBackups(t, s, j, Options{})
	it, _ := action(rep, "harvester-system/vm-migration-network-abcde")
	if it.Action != report.ActionFailed || len(s.deletes) != 0 || j.saves != 0 {
		t.Fatalf("%s, %d deletes, %d backups", it.Action, len(s.deletes), j.saves)
	}
	if !strings.Contains(it.Advice, "vm-migration-network setting") || !strings.Contains(it.Advice, "clear the setting and set it again") {
		t.Errorf("advice %q", it.Advice)
	}
}

// TestRollbackRecreates: a restore refused in place is done by creating
// the NAD again with the original config, opted out of our webhook.
func TestRollbackRecreates(t *testing.T) {
	s, j := newMemStore(map[string]string{"a/n": flatOf}), newMemBackups()
	s.nads["a/n"].Annotations = map[string]string{nadv1.AnnotationOriginalConfig: nested, nadv1.AnnotationNormalizedFrom: "nested"}
	harvesterFinalizers(s, "a/n")
	// Harvester v1.6+: a change of the decoded type is refused, a metadata
	// update (dropping our annotations afterwards) is not.
	s.beforeUpdate = func(s *memStore, key string, _ int) error {
		if s.nads[key].Spec.Config == flatOf {
			return webhookDenial("can't update nad a/n because nad cannot be updated from network type bridge to network type ")
		}
		return nil
	}
	rep := runWithBackups(t, s, j, Options{Mode: ModeRollback})
	it, _ := action(rep, "a/n")
	n := s.nads["a/n"]
	if it.Action != report.ActionRestored || !it.Recreated || n.Spec.Config != nested || n.Labels[nadv1.LabelSkip] != "true" {
		t.Fatalf("%s recreated=%v %q; stored %s %v", it.Action, it.Recreated, it.Reason, n.Spec.Config, n.Labels)
	}
	// None of the tool's annotations stays, the replacement's proof
	// included (the docs say rollback removes them).
	for k := range n.Annotations {
		if strings.HasPrefix(k, "netconf-migrator.harvesterhci.io/") {
			t.Errorf("the restored NAD keeps netconf-migrator's annotation %s=%s", k, n.Annotations[k])
		}
	}
}

// TestStartupErrorsAreTransient: an API server that keeps failing while
// the run lists the backups it must finish ends the run with ErrStartup
// (exit 3, which a Job retries), not a failure that fails the Job for good;
// a refusal (Forbidden) stays final.
func TestStartupErrorsAreTransient(t *testing.T) {
	for _, tc := range []struct {
		err       error
		transient bool
	}{
		{apierrors.NewServiceUnavailable("etcd leader changed"), true},
		{apierrors.NewForbidden(schema.GroupResource{Resource: "configmaps"}, "", errors.New("no")), false},
	} {
		s, j := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
		j.listErr = tc.err
		_, err := runReplacing(context.Background(), s, newReplacer(s, j), Options{})
		if err == nil || errors.Is(err, ErrStartup) != tc.transient {
			t.Errorf("%v: run ended with %v, want ErrStartup=%v", tc.err, err, tc.transient)
		}
		if s.nads["a/n"].Spec.Config != nested {
			t.Errorf("%v: a NAD was written before the backups were read", tc.err)
		}
	}
}

// TestOneListingPerClusterNetwork: the check that a deletion can finish
// lists a cluster network's NADs once for every replacement on it, not
// once each (3,000 NADs listed for each of 600 replacements made a run
// 100 times slower than in place).
func TestOneListingPerClusterNetwork(t *testing.T) {
	configs := map[string]string{}
	for _, k := range []string{"a/1", "a/2", "a/3", "a/4"} {
		configs[k] = nested
	}
	s, j := newMemStore(configs), newMemBackups()
	s.beforeUpdate = func(*memStore, string, int) error { return typeRule }
	for k := range configs {
		harvesterFinalizers(s, k)
		s.nads[k].Labels = map[string]string{harvester.LabelClusterNetwork: "mgmt"}
	}
	rep := runWithBackups(t, s, j, Options{})
	if got := rep.Count(report.ActionNormalized); got != len(configs) {
		t.Fatalf("%d replaced, want %d", got, len(configs))
	}
	if s.objectLists != 1 {
		t.Errorf("the cluster network's NADs were listed %d times for %d replacements, want once", s.objectLists, len(configs))
	}
}

// TestAClusterNetworkIsListedInPages: the check that a deletion can finish
// reads a large cluster network a page at a time, and finds a NAD it
// cannot decode on the last page.
func TestAClusterNetworkIsListedInPages(t *testing.T) {
	configs := map[string]string{"a/n": nested}
	for i := range 1200 {
		configs[fmt.Sprintf("c/%04d", i)] = flatOf
	}
	s, j := newMemStore(configs), newMemBackups()
	s.beforeUpdate = func(*memStore, string, int) error { return typeRule }
	for k := range configs {
		s.nads[k].Labels = map[string]string{harvester.LabelClusterNetwork: "mgmt"}
	}
	harvesterFinalizers(s, "a/n")
	s.nads["a/n"].Finalizers = []string{harvester.FinalizerManager} // v1.7+
	s.rv++
	s.nads["z/double"] = &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: "z", Name: "double", UID: "z/double", ResourceVersion: "99", Labels: map[string]string{harvester.LabelClusterNetwork: "mgmt"}},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: `"{\"type\":\"bridge\"}"`},
	}
	rep := runWithBackups(t, s, j, Options{})
	it, _ := action(rep, "a/n")
	if it.Action != report.ActionFailed || !strings.Contains(it.Reason, "NAD z/double on the same cluster network mgmt") {
		t.Errorf("a/n: %s %q, want failed, naming z/double", it.Action, it.Reason)
	}
	if s.nads["a/n"].Spec.Config != nested || len(s.deletes) != 0 {
		t.Errorf("a/n was deleted (%v) or changed: %s", s.deletes, s.nads["a/n"].Spec.Config)
	}
	if s.objectLists != 1 || s.objectPages != 3 {
		t.Errorf("%d listings in %d pages, want 1 in 3 (1,202 NADs, 500 a page)", s.objectLists, s.objectPages)
	}
}

// TestAListingOutlivesTheReplacementThatStartedIt: a replacement whose
// budget runs out while its cluster network is listed stops waiting; the
// listing goes on, and the next replacement uses it instead of listing
// again (one slow listing per caller piled up behind a lock before).
func TestAListingOutlivesTheReplacementThatStartedIt(t *testing.T) {
	s, j := newMemStore(map[string]string{"a/1": nested, "a/2": nested}), newMemBackups()
	for _, k := range []string{"a/1", "a/2"} {
		harvesterFinalizers(s, k)
		s.nads[k].Labels = map[string]string{harvester.LabelClusterNetwork: "mgmt"}
	}
	release := make(chan struct{})
	s.beforeObjectList = func(string) error { <-release; return nil }
	r := newReplacer(s, j)
	r.Want, r.Accepts, r.Retry = Want, Accepts, fastBackoff.Retry
	replace := func(ctx context.Context, key string) error {
		n := s.nads[key]
		_, err := r.Replace(ctx, ModeMigrate, types.NamespacedName{Namespace: n.Namespace, Name: n.Name}, n.UID, n.ResourceVersion, typeRule, true)
		return err
	}
	short, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := replace(short, "a/1"); err == nil || !strings.Contains(err.Error(), "waiting for the listing of the NADs of cluster network mgmt") {
		t.Fatalf("a/1 with its budget spent during the listing: %v", err)
	}
	close(release)
	if err := replace(context.Background(), "a/2"); err != nil {
		t.Fatalf("a/2: %v", err)
	}
	if s.objectLists != 1 {
		t.Errorf("the cluster network was listed %d times, want once", s.objectLists)
	}
}

// lostAnswer is the API server's answer to a replacement's delete getting
// lost: landed says whether the delete was done; resend, whether client-go
// sent it again (a 5xx with Retry-After), the resend's answer coming back
// as replace.Resent; otherwise the answer is a timeout.
type lostAnswer struct {
	memObjects
	landed, resend bool
}

func (o lostAnswer) Delete(ctx context.Context, obj *unstructured.Unstructured, dryRun bool) error {
	if dryRun {
		return o.memObjects.Delete(ctx, obj, true)
	}
	if o.landed {
		if err := o.memObjects.Delete(ctx, obj, false); err != nil {
			return err
		}
	}
	if o.resend {
		return &replace.Resent{Err: o.memObjects.Delete(ctx, obj, false)}
	}
	return apierrors.NewServerTimeout(nadGR, "delete", 2)
}

// TestADeleteWhoseAnswerWasLost: a replacement's delete that landed, whose
// answer was lost (a timeout, or a resend's 409 or 404), is finished: the
// NAD is created again, never left deleted without its backup. One that
// did not land leaves the NAD as it was and no backup.
func TestADeleteWhoseAnswerWasLost(t *testing.T) {
	for _, tc := range []struct {
		name               string
		finalizers         bool
		landed, resend     bool
		wantRecreated      bool
		wantAction         report.Action
		wantConfig, reason string
	}{
		{name: "landed, terminating, the resend answered 409", finalizers: true, landed: true, resend: true, wantRecreated: true, wantAction: report.ActionNormalized, wantConfig: flatOf},
		{name: "landed, gone, the resend answered 404", landed: true, resend: true, wantRecreated: true, wantAction: report.ActionNormalized, wantConfig: flatOf},
		{name: "landed, terminating, answered by a timeout", finalizers: true, landed: true, wantRecreated: true, wantAction: report.ActionNormalized, wantConfig: flatOf},
		{name: "did not land, answered by a timeout", finalizers: true, wantAction: report.ActionFailed, wantConfig: nested, reason: "deleting it to create it again failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, j := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
			s.beforeUpdate = func(*memStore, string, int) error { return typeRule }
			if tc.finalizers {
				harvesterFinalizers(s, "a/n")
			}
			r := newReplacer(s, j)
			r.Objects = lostAnswer{memObjects{s}, tc.landed, tc.resend}
			rep, err := runReplacing(context.Background(), s, r, Options{})
			if err != nil && tc.wantAction != report.ActionFailed {
				t.Fatal(err)
			}
			it, _ := action(rep, "a/n")
			if it.Action != tc.wantAction || it.Recreated != tc.wantRecreated || !strings.Contains(it.Reason, tc.reason) {
				t.Errorf("a/n: %s recreated=%v %q", it.Action, it.Recreated, it.Reason)
			}
			if n := s.nads["a/n"]; n == nil || n.Spec.Config != tc.wantConfig {
				t.Errorf("a/n stored %v, want config %s", n, tc.wantConfig)
			}
			if len(j.saved) != 0 {
				t.Errorf("%d backups left", len(j.saved))
			}
		})
	}
}

// TestTheResumeWindowIsTheClocks: a backup left at step Deleting whose NAD
// is gone is finished within the resume window of its writing and left for
// a person after it, by the Replacer's clock: no test sleeps through a
// window.
func TestTheResumeWindowIsTheClocks(t *testing.T) {
	written := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		after   time.Duration
		created bool
	}{
		{"within the window", replace.DefaultResumeWindow - time.Minute, true},
		{"past the window", replace.DefaultResumeWindow + time.Second, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, j := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
			jr := backupOf(s, "a/n", replace.StepDeleting)
			jr.Written = written
			_ = j.Save(context.Background(), jr)
			delete(s.nads, "a/n") // deleted, by that run or by a person
			r := newReplacer(s, j)
			r.Clock = clocktesting.NewFakePassiveClock(written.Add(tc.after))
			rep, err := runReplacing(context.Background(), s, r, Options{})
			if err != nil {
				t.Fatal(err)
			}
			it, _ := action(rep, "a/n")
			_, exists := s.nads["a/n"]
			if exists != tc.created || (len(j.saved) == 0) != tc.created {
				t.Errorf("%s after its writing: created %v, backup kept %v, want created %v (%s %q)", tc.after, exists, len(j.saved) == 1, tc.created, it.Action, it.Reason)
			}
			if !tc.created && !strings.Contains(it.Reason, "cannot be told") {
				t.Errorf("past the window: %s %q, want it left for a person", it.Action, it.Reason)
			}
		})
	}
}
