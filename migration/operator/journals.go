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
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
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
	for _, it := range rep.Items {
		switch it.Action {
		case report.ActionNormalized, report.ActionRestored, report.ActionUnchanged:
			resumedNADs.WithLabelValues("done").Inc()
		default:
			resumedNADs.WithLabelValues("left").Inc()
			// The engine logged it with its reason; this names it as
			// waiting for the next pass or a person.
			j.Log.Info("Open replacement left for the next pass or a person", logging.KeyObject, it.Ref(), logging.KeyOutcome, it.Action, "backup", it.Backup)
		}
	}
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
