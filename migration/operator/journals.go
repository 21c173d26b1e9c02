package operator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/migration/runner"
)

// Journals owns every open replacement, whichever entry point wrote its
// journal (a CLI run, the Job, the upgrade pre-hook, a NADMigration, the
// legacy-NAD watch): on the elected replica it looks at the journals every
// Interval, counts the NADs they leave missing, and drives each to its end
// under the run Lease: created again, closed because the NAD stands, or
// left for a person with the reason in the log and the gauges. A journal
// is an object in the backup namespace, so a restarted operator picks up
// every one; a NAD missing is never forgotten while its journal exists.
type Journals struct {
	// Runner gives the uncached client, the backup namespace and how a
	// run starts (the Lease, the key, the replacer).
	Runner    runner.Config
	LeaseWait time.Duration
	Interval  time.Duration
	Log       logr.Logger

	lastProblem string
}

// Start runs until ctx ends; the manager runs it on the leader only.
func (j *Journals) Start(ctx context.Context) error {
	if j.Interval <= 0 {
		j.Interval = 30 * time.Second
	}
	if j.LeaseWait <= 0 {
		j.LeaseWait = 10 * time.Second
	}
	registerJournalMetrics()
	t := time.NewTicker(j.Interval)
	defer t.Stop()
	for {
		j.pass(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// pass counts the open journals, resumes them when any is open, and counts
// again.
func (j *Journals) pass(ctx context.Context) {
	open, err := j.count(ctx)
	if err != nil {
		j.Log.Error(err, "Counting the open replacements failed")
		return
	}
	if open == 0 {
		return
	}
	j.resume(ctx)
	if _, err := j.count(ctx); err != nil {
		j.Log.Error(err, "Counting the open replacements failed")
	}
}

// count sets the gauges from the journals as stored (signed or not: a
// journal the key does not verify still names a NAD someone deleted) and
// what stands under each NAD's name.
func (j *Journals) count(ctx context.Context) (int, error) {
	list := &corev1.SecretList{}
	if err := j.Runner.Client.List(ctx, list, client.InNamespace(j.backupNamespace()), client.MatchingLabels{replace.LabelJournal: "true"}); err != nil {
		return 0, fmt.Errorf("listing the backups in %s: %w", j.backupNamespace(), err)
	}
	missing := 0
	for i := range list.Items {
		sec := &list.Items[i]
		ref, uid := sec.Annotations[replace.AnnotationNAD], sec.Labels[replace.LabelJournalUID]
		ns, name, ok := strings.Cut(ref, "/")
		if !ok {
			continue
		}
		nad := &nadv1.NetworkAttachmentDefinition{}
		err := j.Runner.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, nad)
		switch {
		case apierrors.IsNotFound(err):
			missing++
		case err != nil:
			return 0, fmt.Errorf("reading %s, which backup Secret %s/%s names: %w", ref, sec.Namespace, sec.Name, err)
		case string(nad.UID) == uid && nad.DeletionTimestamp != nil:
			missing++
		}
	}
	missingNADs.Set(float64(missing))
	openBackups.Set(float64(len(list.Items)))
	return len(list.Items), nil
}

func (j *Journals) backupNamespace() string {
	if j.Runner.BackupNamespace == "" {
		return runner.DefaultBackupNamespace
	}
	return j.Runner.BackupNamespace
}

// resume finishes every journal it may under the run Lease: a run holding
// the Lease is still working on its own (and resumes them itself), so this
// waits for the next pass.
func (j *Journals) resume(ctx context.Context) {
	cfg := j.Runner
	cfg.Identity = fmt.Sprintf("%s_journals_%s", j.Runner.Identity, rand.Text()[:6])
	cfg.LeaseWait = j.LeaseWait
	cfg.Log = j.Log
	started, err := runner.Start(ctx, cfg, migration.Options{Mode: migration.ModeMigrate, DryRun: migration.DryRunNone, Recreate: migration.RecreateAuto})
	if err != nil {
		if errors.Is(err, runlock.ErrHeld) {
			j.Log.V(logging.Debug).Info("Leaving the open replacements to the run that holds the Lease", logging.KeyReason, err.Error())
			return
		}
		// A missing key waits for an administrator (journals adopt): say
		// so once, not every pass.
		if msg := err.Error(); msg != j.lastProblem {
			j.lastProblem = msg
			j.Log.Error(err, "Open replacements cannot be finished")
		}
		return
	}
	defer started.Release()
	j.lastProblem = ""
	rep, err := started.Migrator.Resume(started.Context)
	if err != nil {
		j.Log.Error(err, "Finishing the open replacements failed")
	}
	done := map[string]report.Item{}
	for _, it := range rep.Items {
		switch it.Action {
		case report.ActionNormalized, report.ActionRestored, report.ActionUnchanged:
			resumedNADs.WithLabelValues("done").Inc()
			done[it.Ref()] = it
		default:
			resumedNADs.WithLabelValues("left").Inc()
			// The engine logged it with its reason; this names it as
			// waiting for the next pass or a person.
			j.Log.Info("Open replacement left for the next pass or a person", logging.KeyObject, it.Ref(), logging.KeyOutcome, it.Action, "backup", it.Backup)
		}
	}
	if len(done) > 0 {
		j.settle(ctx, done)
	}
}

// settle updates the NADMigrations whose status names as missing a NAD
// this pass created again: its entry says so, and once none is missing the
// NADMigration reads what its last attempt found apart from them (Ready,
// or Stalled for the NADs that need a person). A NADMigration that left a
// NAD missing keeps saying so until the NAD exists again.
func (j *Journals) settle(ctx context.Context, done map[string]report.Item) {
	list := &v1alpha1.NADMigrationList{}
	if err := j.Runner.Client.List(ctx, list); err != nil {
		j.Log.Error(err, "Listing the NADMigrations to update the ones that left NADs missing failed")
		return
	}
	for i := range list.Items {
		nm := &list.Items[i]
		orig := nm.DeepCopy()
		changed, missing := false, 0
		for k := range nm.Status.NADs {
			o := &nm.Status.NADs[k]
			if o.Action != string(report.ActionMissing) {
				continue
			}
			it, ok := done[o.Namespace+"/"+o.Name]
			if !ok {
				missing++
				continue
			}
			if nm.Status.Actions == nil {
				nm.Status.Actions = map[string]int32{}
			}
			nm.Status.Actions[string(report.ActionMissing)]--
			nm.Status.Actions[string(it.Action)]++
			o.Action, o.Reason, o.Advice = string(it.Action), "created again from its backup by the operator after this NADMigration's attempt", ""
			changed = true
		}
		if !changed {
			continue
		}
		if nm.Status.Actions[string(report.ActionMissing)] <= 0 {
			delete(nm.Status.Actions, string(report.ActionMissing))
		}
		kept := nm.Status.NADs[:0]
		for _, o := range nm.Status.NADs {
			if o.Action == string(report.ActionMissing) || (o.Action != string(report.ActionNormalized) && o.Action != string(report.ActionRestored) && o.Action != string(report.ActionUnchanged)) {
				kept = append(kept, o)
			}
		}
		nm.Status.NADs = kept
		nm.Status.NeedAttention = int32(len(kept))
		if c := meta.FindStatusCondition(nm.Status.Conditions, v1alpha1.ConditionReconciling); missing == 0 && c != nil && c.Reason == v1alpha1.ReasonNADsMissing ||
			missing == 0 && meta.IsStatusConditionTrue(nm.Status.Conditions, v1alpha1.ConditionStalled) && stalledFor(nm, v1alpha1.ReasonNADsMissing) {
			now := metav1.Now()
			nm.Status.CompletionTime = &now
			if len(kept) > 0 {
				setConditions(&nm.Status, nm.Generation, metav1.ConditionFalse, v1alpha1.ReasonNeedsAttention,
					fmt.Sprintf("the NADs it left missing were created again by the operator; %d NAD(s) need a person: status.nads says why and what to do", len(kept)))
			} else {
				setConditions(&nm.Status, nm.Generation, metav1.ConditionFalse, v1alpha1.ReasonSucceeded,
					"the NADs it left missing were created again by the operator; every other NAD was clean or fixed")
			}
		}
		if err := j.Runner.Client.Status().Patch(ctx, nm, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
			j.Log.Error(err, "Updating a NADMigration that left NADs missing failed; the next pass tries again", logging.KeyObject, nm.Name)
			continue
		}
		j.Log.Info("NADMigration's missing NADs were created again", logging.KeyObject, nm.Name, "stillMissing", missing)
	}
}

func stalledFor(nm *v1alpha1.NADMigration, reason string) bool {
	c := meta.FindStatusCondition(nm.Status.Conditions, v1alpha1.ConditionStalled)
	return c != nil && c.Reason == reason
}

var (
	missingNADs = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "netconf_migrator_missing_nads",
		Help: "NADs a replacement deleted that do not exist again yet (gone or terminating): each has a backup Secret in the backup namespace, and the operator creates it again as soon as it may.",
	})
	openBackups = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "netconf_migrator_open_backups",
		Help: "Backups of replacements not finished yet (journals), whichever entry point wrote them; one that stays open needs a person (netconf-migrator journals list).",
	})
	resumedNADs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "netconf_migrator_resumed_replacements_total",
		Help: "Open replacements the operator looked at, by outcome: done (created again or closed) or left (still missing, or for a person).",
	}, []string{"outcome"})
	journalMetricsOnce sync.Once
)

func registerJournalMetrics() {
	journalMetricsOnce.Do(func() { metrics.Registry.MustRegister(missingNADs, openBackups, resumedNADs) })
}
