// Package detect finds the NADs stored in a legacy form as they appear
// (written while the webhook was down, or by a client that bypassed it),
// counts them, warns once on each, and fixes them according to a setting,
// leaving alone a NAD another writer keeps setting back.
package detect

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
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/migration/runner"
)

// Fix says what the operator does with a NAD it finds in a legacy form.
type Fix string

const (
	// FixOff only counts and warns.
	FixOff Fix = "Off"
	// FixInPlace rewrites it in place where admission allows; never deletes.
	FixInPlace Fix = "InPlace"
	// FixReplace also replaces it when admission refuses the in-place
	// write, as a run with recreate Auto does (Lease, signed backup,
	// finalizers waited out).
	FixReplace Fix = "Replace"
)

// ParseFix accepts Off, InPlace or Replace.
func ParseFix(s string) (Fix, error) {
	switch f := Fix(s); f {
	case FixOff, FixInPlace, FixReplace:
		return f, nil
	}
	return "", fmt.Errorf("unknown fix setting %q (want Off, InPlace or Replace)", s)
}

// Event reasons on NADs.
const (
	ReasonLegacy    = "LegacyNetConf"
	ReasonContested = "ContestedNetConf"
	ReasonNotFixed  = "LegacyNetConfNotFixed"
)

// Legacy reports whether a form is one the operator counts and fixes
// (truncated ones it counts and reports: they cannot be fixed safely).
func Legacy(f netconf.Form) bool {
	return f == netconf.FormNested || f == netconf.FormDoubleEncoded || f == netconf.FormTruncated
}

// Reconciler watches NADs through a trimmed cache.
type Reconciler struct {
	// Cache is the manager's client: NADs come trimmed by Trim.
	Cache client.Reader
	// Runner gives the uncached client and how a replacement starts.
	Runner runner.Config
	Fix    Fix
	// Events receives the Warning Events (and the engine's).
	Events migration.Events
	// A NAD fixed FlapLimit times within FlapWindow and set back to a
	// legacy form again is left alone and reported as contested.
	FlapLimit  int
	FlapWindow time.Duration
	// LeaseWait is how long a replacement waits for another run's Lease
	// before it is tried again later.
	LeaseWait time.Duration
	Log       logr.Logger
	// Clock tells the time of the flap window (the real clock when nil).
	Clock clock.PassiveClock
	// A NAD whose fix failed is tried again after RetryFailed (an error: the
	// API server or a webhook away longer than the engine's budget), or
	// RetryReported (Harvester refused it: what refused may change without
	// the NAD changing, as a VM that stops), or at once when it changes.
	RetryFailed, RetryReported time.Duration

	mu        sync.Mutex
	forms     map[types.NamespacedName]netconf.Form
	warned    map[types.UID]netconf.Form
	fixes     map[types.NamespacedName][]time.Time
	contested map[types.NamespacedName]string
	notFixed  map[types.NamespacedName]notFixed
	// leftOpen is the resourceVersion of a NAD left to its open
	// replacement, once said.
	leftOpen map[types.NamespacedName]string
	open     *replace.OpenBackups
}

// SetupWithManager registers the controller: one worker, since NADs are
// fixed one at a time and a replacement holds the run Lease.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.FlapLimit <= 0 {
		r.FlapLimit = 3
	}
	if r.FlapWindow <= 0 {
		r.FlapWindow = 10 * time.Minute
	}
	if r.LeaseWait <= 0 {
		r.LeaseWait = 2 * time.Second
	}
	if r.Fix == "" {
		r.Fix = FixInPlace
	}
	r.forms = map[types.NamespacedName]netconf.Form{}
	r.warned = map[types.UID]netconf.Form{}
	r.fixes = map[types.NamespacedName][]time.Time{}
	r.contested = map[types.NamespacedName]string{}
	r.notFixed = map[types.NamespacedName]notFixed{}
	if r.RetryFailed <= 0 {
		r.RetryFailed = time.Minute
	}
	if r.RetryReported <= 0 {
		r.RetryReported = 10 * time.Minute
	}
	r.leftOpen = map[types.NamespacedName]string{}
	backups := r.Runner.BackupNamespace
	if backups == "" {
		backups = runner.DefaultBackupNamespace
	}
	r.open = &replace.OpenBackups{Client: r.Runner.Client, Namespace: backups, Earlier: r.Runner.EarlierBackupNamespace}
	registerMetrics()
	return ctrl.NewControllerManagedBy(mgr).
		Named("legacy-nads").
		For(&nadv1.NetworkAttachmentDefinition{}).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(r)
}

// Reconcile counts one NAD's form, and warns on and fixes a legacy one.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := r.Cache.Get(ctx, req.NamespacedName, nad); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName, "")
			return reconcile.Result{}, nil
		}
		return reconcile.Result{}, err
	}
	form := CachedForm(nad)
	r.count(req.NamespacedName, form)
	if !Legacy(form) || nad.DeletionTimestamp != nil {
		r.forget(req.NamespacedName, nad.UID)
		return reconcile.Result{}, nil
	}
	if nad.Labels[nadv1.LabelSkip] == "true" {
		return reconcile.Result{}, nil // opted out by a person, or by rollback
	}
	log := r.Log.WithValues(logging.KeyObject, req.String(), logging.KeyForm, form)
	r.warnOnce(ctx, nad, form)
	if r.Fix == FixOff || form == netconf.FormTruncated {
		return reconcile.Result{}, nil
	}
	r.mu.Lock()
	writer, contested := r.contested[req.NamespacedName]
	failed := r.notFixed[req.NamespacedName]
	recent := r.recentFixes(req.NamespacedName)
	r.mu.Unlock()
	if contested {
		return reconcile.Result{}, nil
	}
	if wait := failed.retryIn(nad.ResourceVersion, r.now()); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	if recent >= r.FlapLimit {
		writer = r.writer(ctx, req.NamespacedName)
		r.mu.Lock()
		r.contested[req.NamespacedName] = writer
		r.mu.Unlock()
		contestedNADs.Set(float64(r.numContested()))
		msg := fmt.Sprintf("another writer (field manager %q) set spec.config back to the %s form %d times within %s after netconf-migrator fixed it; netconf-migrator leaves this NAD alone: fix that writer, then the NAD (netconf-migrator migrate, or a NADMigration)", writer, form, recent, r.FlapWindow)
		log.Info("Leaving NetworkAttachmentDefinition that another writer keeps setting back to a legacy form", "fieldManager", writer, logging.KeyCount, recent)
		r.event(ctx, nad, corev1.EventTypeWarning, ReasonContested, msg)
		return reconcile.Result{}, nil
	}
	return r.fix(ctx, log, req.NamespacedName, nad)
}

// fix migrates the NAD with the engine, from the cached copy, which holds
// the config (Trim keeps a fixable one's): the in-place patch carries only
// what the fix changes and the cached resourceVersion, so it cannot drop
// what Trim left out and loses to any newer write (read again then, as a
// run does after a conflict). A copy without its config (a cache that
// drops every config) is read again first.
func (r *Reconciler) fix(ctx context.Context, log logr.Logger, key types.NamespacedName, cached *nadv1.NetworkAttachmentDefinition) (reconcile.Result, error) {
	// A NAD whose name has an open replacement is its owner's to decide:
	// it may be another writer's, standing where the original was deleted,
	// and a fix here would make it look like the replacement's create.
	where, err := r.open.For(ctx, key.Namespace, key.Name)
	if err != nil {
		return reconcile.Result{}, fmt.Errorf("looking for an open replacement of %s: %w", key, err)
	}
	if where != "" {
		r.mu.Lock()
		said := r.leftOpen[key] == cached.ResourceVersion
		r.leftOpen[key] = cached.ResourceVersion
		r.mu.Unlock()
		if !said {
			log.Info("Leaving NetworkAttachmentDefinition to its open replacement, whose owner decides what stands under the name", "backup", where)
		}
		return reconcile.Result{RequeueAfter: time.Minute}, nil
	}
	r.mu.Lock()
	delete(r.leftOpen, key)
	r.mu.Unlock()
	live := cached
	if cached.Spec.Config == "" {
		var err error
		if live, err = (migration.ClientStore{Client: r.Runner.Client}).Get(ctx, key.Namespace, key.Name); err != nil {
			return reconcile.Result{}, client.IgnoreNotFound(err)
		}
	}
	opts := migration.Options{Mode: migration.ModeMigrate, DryRun: migration.DryRunNone, Recreate: migration.RecreateNever, Concurrency: 1}
	var m *migration.Migrator
	if r.Fix == FixReplace {
		opts.Recreate = migration.RecreateAuto
		cfg := r.Runner
		cfg.Identity = fmt.Sprintf("%s_fix_%s", r.Runner.Identity, rand.Text()[:6])
		cfg.Log, cfg.LeaseWait, cfg.Events = r.Log, r.LeaseWait, normalOnly{r.Events}
		started, err := runner.Start(ctx, cfg, opts)
		if errors.Is(err, runlock.ErrHeld) || (err != nil && ctx.Err() != nil) {
			// A wait cancelled by the operator's stop is no failure: the
			// next start fixes the NAD.
			log.V(logging.Debug).Info("Waiting for another run to release the Lease before fixing", logging.KeyReason, err.Error())
			return reconcile.Result{RequeueAfter: 15 * time.Second}, nil
		}
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("starting the fix of %s: %w", key, err)
		}
		defer started.Release()
		m, ctx = started.Migrator, started.Context
	} else {
		// The engine names the NAD in its own log lines.
		m = &migration.Migrator{Store: migration.ClientStore{Client: r.Runner.Client}, Events: normalOnly{r.Events}, Log: r.Log, Opts: opts}
	}
	it := m.Fix(ctx, live)
	switch it.Action {
	case report.ActionNormalized:
		r.mu.Lock()
		r.fixes[key] = append(r.fixes[key], r.now())
		r.mu.Unlock()
		fixedNADs.Inc()
		log.Info("Fixed NetworkAttachmentDefinition stored in a legacy form", logging.KeyOutcome, it.Action, "recreated", it.Recreated)
	case report.ActionUnvisited, report.ActionMissing:
		return reconcile.Result{RequeueAfter: 15 * time.Second}, nil
	case report.ActionFailed, report.ActionReported:
		retry := r.RetryFailed
		if it.Action == report.ActionReported {
			retry = r.RetryReported
		}
		r.mu.Lock()
		before := r.notFixed[key]
		r.notFixed[key] = notFixed{rv: live.ResourceVersion, at: r.now(), retry: retry}
		r.mu.Unlock()
		if before.rv == live.ResourceVersion {
			// Said at the first try of this version; tried again later.
			log.V(logging.Debug).Info("Leaving NetworkAttachmentDefinition in a legacy form again", logging.KeyOutcome, it.Action, logging.KeyReason, it.Reason)
			return reconcile.Result{RequeueAfter: retry}, nil
		}
		msg := fmt.Sprintf("netconf-migrator could not fix this NAD with the fix setting %s: %s", r.Fix, it.Reason)
		if r.Fix == FixInPlace && it.Form == netconf.FormNested {
			msg += "; the setting Replace (or a NADMigration with recreate Auto) replaces it when no VM uses it"
		}
		if it.Advice != "" {
			msg += "; what to do: " + it.Advice
		}
		head, _ := logging.Cut(msg, 1024)
		r.event(ctx, live, corev1.EventTypeWarning, ReasonNotFixed, head)
		log.Info("Leaving NetworkAttachmentDefinition in a legacy form: it could not be fixed", logging.KeyOutcome, it.Action, logging.KeyReason, head, "retryIn", retry)
		return reconcile.Result{RequeueAfter: retry}, nil
	}
	return reconcile.Result{}, nil
}

// notFixed is a fix that failed: at which resourceVersion, when, and how
// long until it is tried again.
type notFixed struct {
	rv    string
	at    time.Time
	retry time.Duration
}

// retryIn says how long a NAD at resourceVersion rv waits before its fix
// is tried again: 0 when it changed since the failure (or none failed),
// never forever (TestChaos in CI, 2026-12-07: a NAD whose fix failed
// while the faults ran stayed nested for good after they stopped, the
// watch waiting for a change that never came).
func (f notFixed) retryIn(rv string, now time.Time) time.Duration {
	if f.rv == "" || f.rv != rv {
		return 0
	}
	return max(0, f.at.Add(f.retry).Sub(now))
}

func (r *Reconciler) now() time.Time {
	if r.Clock == nil {
		return time.Now()
	}
	return r.Clock.Now()
}

// normalOnly passes on the engine's Normal Events (what it rewrote) and
// drops its Warnings: the watch puts one Warning of its own on a NAD it
// could not fix, saying what would.
type normalOnly struct{ migration.Events }

func (e normalOnly) Event(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, typ, reason, msg string) {
	if e.Events != nil && typ == corev1.EventTypeNormal {
		e.Events.Event(ctx, nad, typ, reason, msg)
	}
}

func (r *Reconciler) recentFixes(key types.NamespacedName) int {
	cut := r.now().Add(-r.FlapWindow)
	kept := r.fixes[key][:0]
	for _, t := range r.fixes[key] {
		if t.After(cut) {
			kept = append(kept, t)
		}
	}
	r.fixes[key] = kept
	return len(kept)
}

func (r *Reconciler) numContested() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.contested)
}

// writer is the field manager that last wrote spec.config, other than
// netconf-migrator, read from the NAD's managedFields (the cache drops them).
func (r *Reconciler) writer(ctx context.Context, key types.NamespacedName) string {
	u := &metav1.PartialObjectMetadata{}
	u.SetGroupVersionKind(nadv1.GroupVersion.WithKind(nadv1.Kind))
	if err := r.Runner.Client.Get(ctx, key, u); err != nil {
		return "unknown (" + err.Error() + ")"
	}
	return LastConfigWriter(u.ManagedFields)
}

// LastConfigWriter names the manager whose entry owns spec.config and was
// written last, netconf-migrator's own entries aside.
func LastConfigWriter(entries []metav1.ManagedFieldsEntry) string {
	best, when := "unknown", time.Time{}
	for _, e := range entries {
		if e.Manager == migration.FieldManager || e.FieldsV1 == nil || !strings.Contains(string(e.FieldsV1.Raw), `"f:config"`) {
			continue
		}
		t := time.Time{}
		if e.Time != nil {
			t = e.Time.Time
		}
		if best == "unknown" || !t.Before(when) {
			best, when = e.Manager, t
		}
	}
	return best
}

func (r *Reconciler) warnOnce(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, form netconf.Form) {
	r.mu.Lock()
	seen := r.warned[nad.UID] == form
	r.warned[nad.UID] = form
	r.mu.Unlock()
	if seen {
		return
	}
	msg := fmt.Sprintf("spec.config is stored in the %s form, which Multus and Harvester reject; the fix setting is %s", form, r.Fix)
	switch {
	case form == netconf.FormTruncated:
		msg += "; a truncated config cannot be fixed safely: write the whole config again"
	case r.Fix == FixOff:
		msg += ": run a NADMigration or netconf-migrator migrate to fix it"
	default:
		msg += ": netconf-migrator fixes it now"
	}
	r.event(ctx, nad, corev1.EventTypeWarning, ReasonLegacy, msg)
}

func (r *Reconciler) event(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, typ, reason, msg string) {
	if r.Events != nil {
		r.Events.Event(ctx, nad, typ, reason, msg)
	}
}

// count keeps the form of every NAD for the gauge.
func (r *Reconciler) count(key types.NamespacedName, form netconf.Form) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.forms[key]; ok {
		if old == form {
			return
		}
		gaugeForm(old, -1)
	}
	r.forms[key] = form
	gaugeForm(form, 1)
}

// gaugeForm counts one NAD more (by 1) or less (by -1) in form.
func gaugeForm(form netconf.Form, by float64) {
	storedNADs.WithLabelValues(string(form)).Add(by)
	if Legacy(form) {
		legacyNADs.Add(by)
	}
}

// forget drops a NAD that is gone (uid empty) or clean.
func (r *Reconciler) forget(key types.NamespacedName, uid types.UID) {
	r.mu.Lock()
	if uid == "" {
		if old, ok := r.forms[key]; ok {
			gaugeForm(old, -1)
			delete(r.forms, key)
		}
		delete(r.fixes, key)
	} else {
		// Clean again: the next legacy write is warned on again. Its fixes
		// stay (pruned by the window): they are how a fight is seen.
		delete(r.warned, uid)
	}
	delete(r.notFixed, key)
	delete(r.leftOpen, key)
	_, wasContested := r.contested[key]
	delete(r.contested, key)
	n := len(r.contested)
	r.mu.Unlock()
	if wasContested {
		contestedNADs.Set(float64(n))
	}
}

var (
	storedNADs = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "netconf_migrator_stored_nads",
		Help: "NetworkAttachmentDefinitions stored in the cluster by spec.config form (nested, double-encoded and truncated are legacy forms).",
	}, []string{"form"})
	// legacyNADs is the one definition of "legacy" the chart's alert and
	// dashboard query: the forms Legacy names. Selecting forms in PromQL
	// let the two drift (the dashboard once counted conflists, empty and
	// invalid configs as legacy).
	legacyNADs = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "netconf_migrator_legacy_nads",
		Help: "NetworkAttachmentDefinitions stored in a legacy form the operator counts: nested, double-encoded or truncated.",
	})
	contestedNADs = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "netconf_migrator_contested_nads",
		Help: "NetworkAttachmentDefinitions left in a legacy form because another writer keeps setting them back.",
	})
	fixedNADs = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "netconf_migrator_fixed_nads_total",
		Help: "NetworkAttachmentDefinitions the operator found in a legacy form and fixed.",
	})
	legacyVMs = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "netconf_migrator_legacy_nad_vms",
		Help: "KubeVirt VirtualMachines and VirtualMachineInstances whose networks reference a NAD stored in a legacy form; a running instance cannot live-migrate.",
	}, []string{"kind"})
	registerOnce sync.Once
)
