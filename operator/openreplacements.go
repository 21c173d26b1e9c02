package operator

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/migration/runner"
)

// OpenReplacements owns every open replacement, whichever entry point wrote its
// backup (a CLI run, the Job, the upgrade pre-hook, a NADMigration, the
// legacy-NAD watch): on the elected replica it looks at the backups every
// Interval, counts the NADs they leave missing, and drives each to its end
// under the run Lease: created again, closed because the NAD stands, or
// left for a person with the reason in the log and the gauges. A backup
// is an object in the backup namespace, so a restarted operator picks up
// every one; a NAD missing is never forgotten while its backup exists.
type OpenReplacements struct {
	// Runner gives the uncached client, the backup namespace and how a
	// run starts (the Lease, the key, the replacer).
	Runner    runner.Config
	LeaseWait time.Duration
	Interval  time.Duration
	Log       logr.Logger
	// Elected is closed once this replica leads (the manager's Elected);
	// nil: it leads from the start.
	Elected <-chan struct{}

	lastProblem string
	lastEarlier string
}

// NeedLeaderElection is false: every replica counts the open
// replacements from its start, so netconf_migrator_missing_nads is
// exported at once, not only once a leader is elected (the election waits
// out a killed predecessor's Lease). Only the leader finishes them.
func (j *OpenReplacements) NeedLeaderElection() bool { return false }

// Start runs until ctx ends: it counts every Interval, and once this
// replica leads it also finishes the open replacements, the first time
// as soon as it is elected.
func (j *OpenReplacements) Start(ctx context.Context) error {
	if j.Interval <= 0 {
		j.Interval = 30 * time.Second
	}
	if j.LeaseWait <= 0 {
		j.LeaseWait = 10 * time.Second
	}
	registerBackupMetrics()
	t := time.NewTicker(j.Interval)
	defer t.Stop()
	elected := j.Elected
	for {
		if elected == nil {
			j.pass(ctx)
		} else if _, err := j.count(ctx); err != nil && ctx.Err() == nil {
			j.Log.Error(err, "Counting the open replacements failed")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-elected:
			elected = nil
		}
	}
}

// pass counts the open backups, resumes them when any is open, and counts
// again.
func (j *OpenReplacements) pass(ctx context.Context) {
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

// count sets the gauges from replace's census of the open backups, and
// says once when an earlier version's backups may wait where this
// identity may not look.
func (j *OpenReplacements) count(ctx context.Context) (int, error) {
	earlier := j.Runner.EarlierBackupNamespace
	if earlier == "" {
		earlier = runner.EarlierBackupNamespace
	}
	cs, err := replace.Count(ctx, j.Runner.Client, j.backupNamespace(), earlier)
	// The unseen gauge follows the earlier key, which Count reads before
	// any NAD: a NAD it could not read does not hold it.
	if cs.EarlierUnseen {
		unseenEarlier.Set(1)
		if msg := "earlier:" + earlier; msg != j.lastEarlier {
			j.lastEarlier = msg
			j.Log.Info("The signing key of an earlier version is still in its namespace, so backups it kept there may wait; this operator may not list Secrets there: an administrator moves them",
				"namespace", earlier, "command", "netconf-migrator backups move --from "+earlier)
		}
	} else if err == nil {
		unseenEarlier.Set(0)
		j.lastEarlier = ""
	}
	if err != nil {
		return 0, err
	}
	missingNADs.Set(float64(cs.Missing))
	openBackups.Set(float64(cs.Open))
	return cs.Open, nil
}

func (j *OpenReplacements) backupNamespace() string {
	if j.Runner.BackupNamespace == "" {
		return runner.DefaultBackupNamespace
	}
	return j.Runner.BackupNamespace
}

// resume finishes every backup it may under the run Lease: a run holding
// the Lease is still working on its own (and resumes them itself), so this
// waits for the next pass.
func (j *OpenReplacements) resume(ctx context.Context) {
	cfg := j.Runner
	cfg.Identity = fmt.Sprintf("%s_backups_%s", j.Runner.Identity, rand.Text()[:6])
	cfg.LeaseWait = j.LeaseWait
	cfg.Log = j.Log
	started, err := runner.Start(ctx, cfg, migration.Options{Mode: migration.ModeMigrate, DryRun: migration.DryRunNone, Recreate: migration.RecreateAuto})
	if err != nil {
		if ctx.Err() != nil {
			// Stopping during the wait: the next start resumes them.
			return
		}
		if errors.Is(err, runlock.ErrHeld) {
			j.Log.V(logging.Debug).Info("Leaving the open replacements to the run that holds the Lease", logging.KeyReason, err.Error())
			return
		}
		// A missing key waits for an administrator (backups adopt): say
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
// this pass created again: its entry goes and its count moves to the action
// taken, and once none is missing the NADMigration reads what its last
// attempt found apart from them (Ready, or Stalled for the NADs that need a
// person). A NADMigration that left a NAD missing keeps saying so until the
// NAD exists again. Conflicts with the NADMigration's own run are retried
// here: the next pass no longer knows these NADs.
func (j *OpenReplacements) settle(ctx context.Context, done map[string]report.Item) {
	list := &v1alpha1.NADMigrationList{}
	if err := j.Runner.Client.List(ctx, list); err != nil {
		j.Log.Error(err, "Listing the NADMigrations to update the ones that left NADs missing failed")
		return
	}
	for i := range list.Items {
		key := client.ObjectKeyFromObject(&list.Items[i])
		created, missing := 0, 0
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			nm := &v1alpha1.NADMigration{}
			if err := j.Runner.Client.Get(ctx, key, nm); err != nil {
				return client.IgnoreNotFound(err)
			}
			orig := nm.DeepCopy()
			if created, missing = createdAgain(&nm.Status, done); created == 0 {
				return nil
			}
			return j.Runner.Client.Status().Patch(ctx, nm, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{}))
		})
		switch {
		case err != nil:
			j.Log.Error(err, "Updating a NADMigration that left NADs missing failed", logging.KeyObject, key.Name)
		case created > 0:
			j.Log.Info("Updated a NADMigration whose missing NADs were created again", logging.KeyObject, key.Name, logging.KeyCount, created, "stillMissing", missing)
		}
	}
}

// createdAgain moves the NADs of st that done created again from missing to
// what was done, and returns how many it moved and how many are still
// missing.
func createdAgain(st *v1alpha1.NADMigrationStatus, done map[string]report.Item) (created, missing int) {
	kept := st.NADs[:0]
	for _, o := range st.NADs {
		it, ok := done[o.Namespace+"/"+o.Name]
		switch {
		case o.Action != string(report.ActionMissing):
		case !ok:
			missing++
		default:
			if st.Actions == nil {
				st.Actions = map[string]int32{}
			}
			st.Actions[string(report.ActionMissing)]--
			st.Actions[string(it.Action)]++
			created++
			continue // it needs no person any more
		}
		kept = append(kept, o)
	}
	if created == 0 {
		return 0, missing
	}
	if st.Actions[string(report.ActionMissing)] <= 0 {
		delete(st.Actions, string(report.ActionMissing))
	}
	st.NADs = kept
	st.NeedAttention = max(st.NeedAttention-int32(created), int32(len(kept)))
	waiting := reasonOf(st, v1alpha1.ConditionReconciling) == v1alpha1.ReasonNADsMissing || reasonOf(st, v1alpha1.ConditionStalled) == v1alpha1.ReasonNADsMissing
	if missing > 0 || !waiting {
		return created, missing
	}
	now := metav1.Now()
	st.CompletionTime = &now
	gen := st.ObservedGeneration
	if len(kept) > 0 {
		setConditions(st, gen, metav1.ConditionFalse, v1alpha1.ReasonNeedsAttention,
			fmt.Sprintf("the NADs it left missing were created again by the operator; %d NAD(s) need a person: status.nads says why and what to do", len(kept)))
	} else {
		setConditions(st, gen, metav1.ConditionFalse, v1alpha1.ReasonSucceeded,
			"the NADs it left missing were created again by the operator; every other NAD was clean or fixed")
	}
	return created, missing
}

// reasonOf is the reason of st's condition typ when it is True.
func reasonOf(st *v1alpha1.NADMigrationStatus, typ string) string {
	if c := meta.FindStatusCondition(st.Conditions, typ); c != nil && c.Status == metav1.ConditionTrue {
		return c.Reason
	}
	return ""
}

var (
	missingNADs = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "netconf_migrator_missing_nads",
		Help: "NADs a replacement deleted that do not exist again yet (gone or terminating): each has a backup Secret in the backup namespace, and the operator creates it again as soon as it may.",
	})
	openBackups = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "netconf_migrator_open_backups",
		Help: "Backups of replacements not finished yet, whichever entry point wrote them; one that stays open needs a person (netconf-migrator backups list).",
	})
	resumedNADs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "netconf_migrator_resumed_replacements_total",
		Help: "Open replacements the operator looked at, by outcome: done (created again or closed) or left (still missing, or for a person).",
	}, []string{"outcome"})
	unseenEarlier = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "netconf_migrator_earlier_backups_unseen",
		Help: "1 while the signing key of an earlier version is still in the namespace it kept its backups in (beside the webhook), where the operator may not list Secrets: backups may wait there; an administrator moves them with netconf-migrator backups move.",
	})
	backupMetricsOnce sync.Once
)

func registerBackupMetrics() {
	backupMetricsOnce.Do(func() {
		metrics.Registry.MustRegister(missingNADs, openBackups, resumedNADs, unseenEarlier)
		// Both outcomes exist from the start, so a rate reads 0, not nothing.
		resumedNADs.WithLabelValues("done")
		resumedNADs.WithLabelValues("left")
	})
}
