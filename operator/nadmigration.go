// Package operator runs NADMigrations: the migrations and rollbacks a person
// or a tool (Fleet, Argo CD, Harvester's upgrade) asks for by creating an
// object, one at a time, through the same engine and the same Lease as a
// CLI run, with the outcome in the object's status.
package operator

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/migration/runner"
)

// Readiness lists the VMs and VMIs attached to NADs in a legacy form.
type Readiness interface {
	BlockedVMs(ctx context.Context) ([]v1alpha1.VMReference, error)
}

// Reconciler runs NADMigrations one at a time.
type Reconciler struct {
	// Client reads NADMigrations from the manager's cache and writes their
	// status.
	Client client.Client
	// Runner is how a run starts: the uncached client, the backup
	// namespace, the Lease. Its Identity is a prefix; each run adds to it.
	Runner runner.Config
	// LeaseWait is how long one attempt waits for another run's Lease
	// before the NADMigration says whose it is and waits again.
	LeaseWait time.Duration
	// Readiness, when set, lists the VMs a legacy NAD blocks in status.
	Readiness Readiness
	// ProgressInterval is how often status is updated during a run.
	ProgressInterval time.Duration
	// RetryAfter is how long a run that left NADs missing (or could not
	// start) waits before its next attempt; MaxAttempts bounds them.
	RetryAfter  time.Duration
	MaxAttempts int32
	Log         logr.Logger

	mu       sync.Mutex
	statusMu sync.Mutex      // one status write at a time (a run's progress and its outcome)
	base     context.Context // the manager's: ends on shutdown
	active   *active
	wake     chan event.TypedGenericEvent[*v1alpha1.NADMigration]
	running  sync.WaitGroup
}

type active struct {
	name   string
	uid    types.UID
	cancel context.CancelFunc
}

// SetupWithManager registers the controller; it runs only on the leader.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.ProgressInterval <= 0 {
		r.ProgressInterval = 2 * time.Second
	}
	if r.LeaseWait <= 0 {
		r.LeaseWait = 10 * time.Second
	}
	if r.RetryAfter <= 0 {
		r.RetryAfter = 30 * time.Second
	}
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = 5
	}
	r.wake = make(chan event.TypedGenericEvent[*v1alpha1.NADMigration], 16)
	if err := mgr.Add(r); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("nadmigration").
		For(&v1alpha1.NADMigration{}).
		WatchesRawSource(source.Channel(r.wake, &handler.TypedEnqueueRequestForObject[*v1alpha1.NADMigration]{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: 1}).
		Complete(r)
}

// Start keeps the manager's context for the runs, and on shutdown waits
// for the run in progress: it stops at the next NAD, and a replacement it
// started finishes first.
func (r *Reconciler) Start(ctx context.Context) error {
	r.mu.Lock()
	r.base = ctx
	r.mu.Unlock()
	<-ctx.Done()
	r.running.Wait()
	return nil
}

// Reconcile starts the next NADMigration when none runs, and stops the
// running one when it is deleted.
func (r *Reconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.base == nil {
		return reconcile.Result{RequeueAfter: time.Second}, nil
	}
	nm := &v1alpha1.NADMigration{}
	err := r.Client.Get(ctx, req.NamespacedName, nm)
	if err != nil && !apierrors.IsNotFound(err) {
		return reconcile.Result{}, err
	}
	gone := apierrors.IsNotFound(err) || nm.DeletionTimestamp != nil
	if a := r.active; a != nil {
		if a.name == req.Name && (gone || nm.UID != a.uid) {
			r.Log.Info("Stopping the NADMigration's run: it was deleted", logging.KeyObject, req.Name)
			a.cancel()
		}
		if !gone && a.name != req.Name && !finished(nm) {
			return reconcile.Result{}, r.queued(ctx, nm, fmt.Sprintf("waiting for NADMigration %s to finish", a.name))
		}
		return reconcile.Result{}, nil
	}
	next, err := r.next(ctx)
	if err != nil || next == nil {
		return reconcile.Result{}, err
	}
	if next.Name != req.Name && !gone && !finished(nm) {
		if err := r.queued(ctx, nm, fmt.Sprintf("waiting for NADMigration %s to finish", next.Name)); err != nil {
			return reconcile.Result{}, err
		}
	}
	if wait := r.retryWait(next); wait > 0 {
		return reconcile.Result{RequeueAfter: wait}, nil
	}
	return reconcile.Result{}, r.start(next)
}

// finished is a NADMigration whose outcome is final. One that says it is
// reconciling is not, whatever completionTime says: a writer that set
// completionTime (the owner of open replacements, when it created the
// NADs an attempt left missing) may have raced an attempt's start, and a
// NADMigration taken for finished while Running would never be resumed.
func finished(nm *v1alpha1.NADMigration) bool {
	return nm.Status.CompletionTime != nil && nm.Status.ObservedGeneration == nm.Generation &&
		!meta.IsStatusConditionTrue(nm.Status.Conditions, v1alpha1.ConditionReconciling)
}

// next is the NADMigration to run now: one a stopped operator left started
// first (it resumes), then the oldest.
func (r *Reconciler) next(ctx context.Context) (*v1alpha1.NADMigration, error) {
	list := &v1alpha1.NADMigrationList{}
	if err := r.Client.List(ctx, list); err != nil {
		return nil, err
	}
	observe(list.Items)
	var todo []*v1alpha1.NADMigration
	for i := range list.Items {
		nm := &list.Items[i]
		if nm.DeletionTimestamp == nil && !finished(nm) {
			todo = append(todo, nm)
		}
	}
	if len(todo) == 0 {
		return nil, nil
	}
	sort.Slice(todo, func(i, j int) bool {
		a, b := todo[i], todo[j]
		if (a.Status.StartTime != nil) != (b.Status.StartTime != nil) {
			return a.Status.StartTime != nil
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	return todo[0], nil
}

// retryWait is how long a NADMigration whose last attempt must be retried
// still waits.
func (r *Reconciler) retryWait(nm *v1alpha1.NADMigration) time.Duration {
	c := meta.FindStatusCondition(nm.Status.Conditions, v1alpha1.ConditionReconciling)
	if c == nil || c.Status != metav1.ConditionTrue || (c.Reason != v1alpha1.ReasonNADsMissing && c.Reason != v1alpha1.ReasonFailed) {
		return 0
	}
	return time.Until(c.LastTransitionTime.Add(r.RetryAfter))
}

// queued says a NADMigration waits for another.
func (r *Reconciler) queued(ctx context.Context, nm *v1alpha1.NADMigration, msg string) error {
	if c := meta.FindStatusCondition(nm.Status.Conditions, v1alpha1.ConditionReconciling); c != nil && c.Reason == v1alpha1.ReasonQueued && c.Message == msg {
		return nil
	}
	if nm.Status.StartTime != nil {
		return nil // started: its run reports itself
	}
	orig := nm.DeepCopy()
	nm.Status.ObservedGeneration = nm.Generation
	setConditions(&nm.Status, nm.Generation, metav1.ConditionTrue, v1alpha1.ReasonQueued, msg)
	return r.Client.Status().Patch(ctx, nm, client.MergeFrom(orig))
}

// setConditions sets the three conditions kstatus reads: reconciling says
// whether Reconciling is True (queued, running, retrying); otherwise
// Ready is True (reason Succeeded) or Stalled is True.
func setConditions(st *v1alpha1.NADMigrationStatus, gen int64, reconciling metav1.ConditionStatus, reason, msg string) {
	set := func(t string, s metav1.ConditionStatus) {
		meta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: t, Status: s, Reason: reason, Message: msg, ObservedGeneration: gen})
	}
	switch {
	case reconciling == metav1.ConditionTrue:
		set(v1alpha1.ConditionReconciling, metav1.ConditionTrue)
		set(v1alpha1.ConditionReady, metav1.ConditionFalse)
		set(v1alpha1.ConditionStalled, metav1.ConditionFalse)
	case reason == v1alpha1.ReasonSucceeded:
		set(v1alpha1.ConditionReconciling, metav1.ConditionFalse)
		set(v1alpha1.ConditionReady, metav1.ConditionTrue)
		set(v1alpha1.ConditionStalled, metav1.ConditionFalse)
	default:
		set(v1alpha1.ConditionReconciling, metav1.ConditionFalse)
		set(v1alpha1.ConditionReady, metav1.ConditionFalse)
		set(v1alpha1.ConditionStalled, metav1.ConditionTrue)
	}
}

// start marks nm started and runs it in the background (a run may take
// minutes; the controller's worker must stay free to see its deletion).
// Called with r.mu held.
func (r *Reconciler) start(nm *v1alpha1.NADMigration) error {
	ctx := r.base
	opts, err := options(nm.Spec)
	orig := nm.DeepCopy()
	now := metav1.Now()
	st := &nm.Status
	st.ObservedGeneration = nm.Generation
	if err != nil {
		st.CompletionTime = &now
		setConditions(st, nm.Generation, metav1.ConditionFalse, v1alpha1.ReasonInvalidSpec, err.Error())
		return r.Client.Status().Patch(ctx, nm, client.MergeFrom(orig))
	}
	if st.Attempts >= r.MaxAttempts {
		st.CompletionTime = &now
		setConditions(st, nm.Generation, metav1.ConditionFalse, v1alpha1.ReasonFailed, fmt.Sprintf("gave up after %d attempts; the last one said: %s", st.Attempts, condMessage(st)))
		return r.Client.Status().Patch(ctx, nm, client.MergeFrom(orig))
	}
	if st.StartTime == nil {
		st.StartTime = &now
	}
	st.Attempts++
	st.CompletionTime = nil
	setConditions(st, nm.Generation, metav1.ConditionTrue, v1alpha1.ReasonRunning, fmt.Sprintf("attempt %d started", st.Attempts))
	// On the status as read: if another writer changed it since (the
	// owner of open replacements ending it), the start conflicts and the
	// next reconcile decides again.
	if err := r.Client.Status().Patch(ctx, nm, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("marking NADMigration %s started: %w", nm.Name, err)
	}
	run, cancel := context.WithCancel(ctx)
	r.active = &active{name: nm.Name, uid: nm.UID, cancel: cancel}
	r.running.Add(1)
	go func() {
		defer r.running.Done()
		defer cancel()
		r.run(run, nm.DeepCopy(), opts)
		r.mu.Lock()
		r.active = nil
		r.mu.Unlock()
		r.wakeNext()
	}()
	return nil
}

func condMessage(st *v1alpha1.NADMigrationStatus) string {
	if c := meta.FindStatusCondition(st.Conditions, v1alpha1.ConditionReconciling); c != nil {
		return c.Message
	}
	return ""
}

// wakeNext has the controller look again at the NADMigrations waiting.
func (r *Reconciler) wakeNext() {
	if r.base.Err() != nil {
		return
	}
	next, err := r.next(r.base)
	if err != nil || next == nil {
		return
	}
	select {
	case r.wake <- event.TypedGenericEvent[*v1alpha1.NADMigration]{Object: next}:
	case <-r.base.Done():
	}
}

// options turns a spec into the engine's options (the namespaces are
// run one after the other).
func options(spec v1alpha1.NADMigrationSpec) (migration.Options, error) {
	o := migration.Options{Mode: migration.ModeMigrate, DryRun: migration.DryRunNone, Recreate: migration.RecreateAuto, Timeout: 30 * time.Minute}
	if spec.Operation == v1alpha1.OperationRollback {
		o.Mode = migration.ModeRollback
	}
	if spec.DryRun == v1alpha1.DryRunServer {
		o.DryRun = migration.DryRunServer
	}
	if spec.Recreate == v1alpha1.RecreateNever {
		o.Recreate = migration.RecreateNever
	}
	if spec.Timeout != nil && spec.Timeout.Duration > 0 {
		o.Timeout = spec.Timeout.Duration
	}
	if spec.Selector != nil {
		sel, err := metav1.LabelSelectorAsSelector(spec.Selector)
		if err != nil {
			return o, fmt.Errorf("spec.selector: %w", err)
		}
		o.Selector = sel
	}
	return o, nil
}

// run runs one attempt of nm and writes its outcome. ctx ends when nm is
// deleted or the operator stops: then no outcome is written, and a
// restarted operator resumes the run.
func (r *Reconciler) run(ctx context.Context, nm *v1alpha1.NADMigration, opts migration.Options) {
	log := r.Log.WithValues(logging.KeyObject, nm.Name)
	deadline := time.Now().Add(opts.Timeout)
	if nm.Status.StartTime != nil && nm.Status.Attempts > 1 {
		// A resumed run keeps the deadline of the first start.
		deadline = nm.Status.StartTime.Add(opts.Timeout)
	}
	cfg := r.Runner
	cfg.Identity = fmt.Sprintf("%s_%s_%s", r.Runner.Identity, nm.Name, rand.Text()[:6])
	cfg.Log = log
	cfg.LeaseWait = r.LeaseWait
	log.Info("Starting NADMigration", "operation", nm.Spec.Operation, "dryRun", nm.Spec.DryRun, "recreate", nm.Spec.Recreate, "attempt", nm.Status.Attempts)
	var started *runner.Run
	for {
		var err error
		opts.Timeout = time.Until(deadline)
		if opts.Timeout <= 0 && nm.Status.Attempts <= 1 {
			r.finish(ctx, log, nm, report.New(), fmt.Errorf("%w: the NADMigration's timeout was up while it waited for the run Lease", migration.ErrStopped), true)
			return
		}
		started, err = runner.Start(ctx, cfg, opts)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, runlock.ErrHeld) {
			r.patch(ctx, nm, func(st *v1alpha1.NADMigrationStatus) {
				setConditions(st, nm.Generation, metav1.ConditionTrue, v1alpha1.ReasonWaitingForLease, err.Error())
			})
			continue
		}
		r.retry(ctx, log, nm, v1alpha1.ReasonFailed, fmt.Sprintf("the run could not start: %v", err))
		return
	}
	defer started.Release()
	r.patch(ctx, nm, func(st *v1alpha1.NADMigrationStatus) {
		setConditions(st, nm.Generation, metav1.ConditionTrue, v1alpha1.ReasonRunning, fmt.Sprintf("attempt %d running", st.Attempts))
	})
	namespaces := append([]string(nil), nm.Spec.Namespaces...)
	if len(namespaces) == 0 {
		namespaces = []string{""}
	}
	rep := report.New()
	migrator := func(ns string) *migration.Migrator {
		o := opts
		o.Namespace = ns
		o.Timeout = max(time.Until(deadline), time.Nanosecond)
		base := started.Migrator
		return &migration.Migrator{Store: base.Store, Events: base.Events, Replacer: base.Replacer, Log: base.Log, Opts: o}
	}
	if time.Until(deadline) <= 0 {
		// A retry past the deadline still finishes first the replacements
		// earlier attempts left: their NADs are missing until then, and
		// the report names the ones still missing.
		var err error
		for _, ns := range namespaces {
			part, rerr := migrator(ns).Resume(started.Context)
			rep.Merge(part)
			err = errors.Join(err, rerr)
		}
		r.finish(ctx, log, nm, rep, errors.Join(fmt.Errorf("%w: the NADMigration's timeout was up; the replacements earlier attempts left were finished first", migration.ErrStopped), err), true)
		return
	}
	var runErr error
	done := int64(0)
	for _, ns := range namespaces {
		m := migrator(ns)
		stop := r.progress(started.Context, nm, m, done)
		part, err := m.Run(started.Context)
		stop()
		rep.Merge(part)
		done += int64(part.Summary.Total)
		if err != nil {
			runErr = err
			break
		}
	}
	if ctx.Err() != nil {
		// Deleted, or the operator is stopping: the NADs not visited stay
		// for a resumed run (or a new NADMigration).
		log.Info("NADMigration stopped before every NAD was visited", logging.KeyCount, rep.Summary.Total, logging.KeyReason, ctx.Err().Error())
		return
	}
	r.finish(ctx, log, nm, rep, runErr, errors.Is(runErr, migration.ErrStopped))
}

// progress updates status.total and status.changed while a run works.
func (r *Reconciler) progress(ctx context.Context, nm *v1alpha1.NADMigration, m *migration.Migrator, before int64) (stop func()) {
	t := time.NewTicker(r.ProgressInterval)
	quit, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		last := migration.Progress{}
		for {
			select {
			case <-t.C:
				p := m.Progress()
				if p == last {
					continue
				}
				last = p
				r.patch(ctx, nm, func(st *v1alpha1.NADMigrationStatus) {
					st.Total = int32(before + p.Seen)
					st.Changed = int32(p.Changed)
				})
			case <-quit:
				return
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() { t.Stop(); close(quit); <-done }
}

// retry ends an attempt that must be tried again after RetryAfter.
func (r *Reconciler) retry(ctx context.Context, log logr.Logger, nm *v1alpha1.NADMigration, reason, msg string) {
	log.Info("NADMigration will be tried again", logging.KeyReason, msg, "after", r.RetryAfter.String())
	r.patch(ctx, nm, func(st *v1alpha1.NADMigrationStatus) {
		setConditions(st, nm.Generation, metav1.ConditionTrue, reason, msg)
	})
	go func() {
		select {
		case <-time.After(r.RetryAfter):
			select {
			case r.wake <- event.TypedGenericEvent[*v1alpha1.NADMigration]{Object: nm}:
			case <-r.base.Done():
			}
		case <-r.base.Done():
		}
	}()
}

// finish writes an attempt's outcome: the report, the counts, the NADs
// that need a person, the VMs a legacy NAD blocks, and the conditions.
func (r *Reconciler) finish(ctx context.Context, log logr.Logger, nm *v1alpha1.NADMigration, rep *report.Report, runErr error, timedOut bool) {
	ref, err := r.storeReport(ctx, nm, rep)
	if err != nil {
		log.Error(err, "Storing the NADMigration's report failed")
	}
	var vms []v1alpha1.VMReference
	if r.Readiness != nil {
		if vms, err = r.Readiness.BlockedVMs(ctx); err != nil {
			log.Error(err, "Listing the VMs attached to legacy NADs failed")
		}
	}
	missing := rep.Count(report.ActionMissing) > 0
	if missing && nm.Status.Attempts < r.MaxAttempts {
		r.retry(ctx, log, nm, v1alpha1.ReasonNADsMissing, fmt.Sprintf("%d NAD(s) deleted to be replaced are missing; the next attempt creates them from their backups", rep.Count(report.ActionMissing)))
		r.patch(ctx, nm, func(st *v1alpha1.NADMigrationStatus) { fill(st, rep, ref, vms) })
		return
	}
	var reason, msg string
	switch {
	case timedOut:
		reason, msg = v1alpha1.ReasonTimedOut, fmt.Sprintf("stopped before every NAD was visited: %v", runErr)
	case missing:
		reason, msg = v1alpha1.ReasonNADsMissing, fmt.Sprintf("%d NAD(s) deleted to be replaced are still missing after %d attempts: status.nads names their backups", rep.Count(report.ActionMissing), nm.Status.Attempts)
	case runErr != nil:
		reason, msg = v1alpha1.ReasonFailed, runErr.Error()
	case rep.NeedsAttention():
		reason, msg = v1alpha1.ReasonNeedsAttention, fmt.Sprintf("%d NAD(s) need a person: status.nads says why and what to do", len(rep.Attention()))
	default:
		reason, msg = v1alpha1.ReasonSucceeded, fmt.Sprintf("%d NAD(s) visited, every one clean or fixed", rep.Summary.Total)
	}
	log.Info("Finished NADMigration", logging.KeyOutcome, reason, logging.KeyCount, rep.Summary.Total, "needAttention", len(rep.Attention()), "blockedVMs", len(vms))
	r.patch(ctx, nm, func(st *v1alpha1.NADMigrationStatus) {
		fill(st, rep, ref, vms)
		now := metav1.Now()
		st.CompletionTime = &now
		setConditions(st, nm.Generation, metav1.ConditionFalse, reason, msg)
	})
}

// fill copies a report's counts and the NADs that need a person.
func fill(st *v1alpha1.NADMigrationStatus, rep *report.Report, ref *v1alpha1.ReportReference, vms []v1alpha1.VMReference) {
	st.Total = int32(rep.Summary.Total)
	st.Actions = map[string]int32{}
	changed := 0
	for a, n := range rep.Summary.Actions {
		st.Actions[string(a)] = int32(n)
		switch a {
		case report.ActionNormalized, report.ActionWouldNormalize, report.ActionRestored, report.ActionWouldRestore:
			changed += n
		}
	}
	st.Changed = int32(changed)
	att := rep.Attention()
	st.NeedAttention = int32(len(att))
	st.NADs = nil
	for _, it := range att {
		if len(st.NADs) == v1alpha1.MaxListed {
			break
		}
		reason, _ := logging.Cut(it.Reason, 512)
		st.NADs = append(st.NADs, v1alpha1.NADOutcome{Namespace: it.Namespace, Name: it.Name, Form: string(it.Form), Action: string(it.Action), Reason: reason, Advice: it.Advice})
	}
	if len(vms) > v1alpha1.MaxListed {
		vms = vms[:v1alpha1.MaxListed]
	}
	st.BlockedVMs = vms
	st.Report = ref
}

// patch changes status with a merge patch on the latest copy (only this
// controller writes it). A NADMigration deleted meanwhile is left alone.
func (r *Reconciler) patch(ctx context.Context, nm *v1alpha1.NADMigration, change func(*v1alpha1.NADMigrationStatus)) {
	r.statusMu.Lock()
	defer r.statusMu.Unlock()
	orig := nm.DeepCopy()
	change(&nm.Status)
	err := r.Client.Status().Patch(context.WithoutCancel(ctx), nm, client.MergeFrom(orig))
	if err != nil && !apierrors.IsNotFound(err) {
		r.Log.Error(err, "Updating the NADMigration's status failed", logging.KeyObject, nm.Name)
	}
}

// ReportSecretType marks the Secrets holding NADMigration reports: the
// configs of every namespace in scope are in them, so they are kept where
// only the tool and cluster administrators read.
const ReportSecretType = corev1.SecretType(report.SecretType)

// storeReport keeps the whole report in a Secret of the backup namespace
// owned by nm, so it goes when nm goes (the garbage collector deletes it).
func (r *Reconciler) storeReport(ctx context.Context, nm *v1alpha1.NADMigration, rep *report.Report) (*v1alpha1.ReportReference, error) {
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the report: %w", err)
	}
	ns := r.Runner.BackupNamespace
	if ns == "" {
		ns = runner.DefaultBackupNamespace
	}
	// One Secret per attempt, created and never updated: the operator may
	// create Secrets in the backup namespace, not change them.
	name := fmt.Sprintf("nadmigration-%s-%d", nm.Name, nm.Status.Attempts)
	if len(name) > 253 {
		name = name[len(name)-253:]
	}
	sec := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app.kubernetes.io/name": "netconf-migrator"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: v1alpha1.GroupVersion.String(), Kind: v1alpha1.Kind, Name: nm.Name, UID: nm.UID}}},
		Type: ReportSecretType,
		Data: map[string][]byte{report.SecretKey: append(raw, '\n')},
	}
	if err := r.Runner.Client.Create(context.WithoutCancel(ctx), sec); err != nil {
		return nil, fmt.Errorf("storing the report in Secret %s/%s: %w", ns, name, err)
	}
	return &v1alpha1.ReportReference{Namespace: ns, Name: name, Key: report.SecretKey}, nil
}

// nadMigrations counts NADMigrations by the condition that is True, for
// the alert on a failed one.
var nadMigrations = prometheus.NewGaugeVec(prometheus.GaugeOpts{
	Name: "netconf_migrator_nadmigrations",
	Help: "NADMigrations by the condition that is True (Ready, Reconciling, Stalled).",
}, []string{"condition"})

var registerOnce sync.Once

func observe(items []v1alpha1.NADMigration) {
	registerOnce.Do(func() { metrics.Registry.MustRegister(nadMigrations) })
	counts := map[string]int{v1alpha1.ConditionReady: 0, v1alpha1.ConditionReconciling: 0, v1alpha1.ConditionStalled: 0}
	for i := range items {
		for _, c := range items[i].Status.Conditions {
			if _, ok := counts[c.Type]; ok && c.Status == metav1.ConditionTrue {
				counts[c.Type]++
			}
		}
	}
	for k, n := range counts {
		nadMigrations.WithLabelValues(k).Set(float64(n))
	}
}
