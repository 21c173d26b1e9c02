package migration

import (
	"context"
	"errors"
	"fmt"
	"github.com/harvester/netconf-migrator/internal/harvester"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/configdiff"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// Mode is what a run does to each NAD.
type Mode string

const (
	// ModeMigrate rewrites nested and double-encoded configs.
	ModeMigrate Mode = "migrate"
	// ModeRollback restores the configs a migration rewrote.
	ModeRollback Mode = "rollback"
)

// DryRun is kubectl's --dry-run.
type DryRun string

const (
	DryRunNone   DryRun = "none"
	DryRunClient DryRun = "client" // nothing is sent
	DryRunServer DryRun = "server" // the API server and its webhooks see every write; nothing is stored
)

// ParseDryRun accepts none, client or server.
func ParseDryRun(s string) (DryRun, error) {
	switch d := DryRun(s); d {
	case DryRunNone, DryRunClient, DryRunServer:
		return d, nil
	}
	return "", fmt.Errorf("unknown dry-run mode %q (want none, client or server)", s)
}

// Event reasons.
const (
	ReasonNormalized     = "Normalized"
	ReasonNormalizeFail  = "NormalizeFailed"
	ReasonRestored       = "Restored"
	ReasonRestoreFailed  = "RestoreFailed"
	ReasonChangedSince   = "ChangedSinceMigration"
	defaultPageSize      = 500
	defaultConcurrency   = 4
	defaultMaxConflicts  = 10
	defaultProgressEvery = 10 * time.Second
)

// Options shape a run.
type Options struct {
	Mode      Mode
	Namespace string          // empty: all namespaces
	Selector  labels.Selector // nil: every NAD
	PageSize  int64
	// Concurrency is how many NADs are written at once.
	Concurrency int
	DryRun      DryRun
	Profile     netconf.Profile
	Backoff     Backoff
	// MaxConflicts bounds how often one NAD is read again after another
	// writer won the race.
	MaxConflicts int
	// Diff, when set, receives a unified diff of spec.config for every change.
	Diff io.Writer
	// ProgressInterval is how often a progress line is logged.
	ProgressInterval time.Duration
	// Recreate allows replacing a NAD whose in-place write admission
	// refuses (default auto; needs Migrator.Replacer).
	Recreate Recreate
	// Timeout bounds the whole run (0: none). When it is up, or ctx is
	// canceled, no NAD is started any more: the ones not written are
	// reported unvisited and Run returns ErrStopped.
	Timeout time.Duration
	// NADBudget bounds how long one NAD's transient errors are retried
	// (default 1 minute), so one unreachable webhook cannot hold a run.
	NADBudget time.Duration
}

// ErrStopped is returned when a run ends before visiting every NAD in
// scope: its Timeout was up or its context was canceled (SIGTERM).
var ErrStopped = errors.New("stopped before every NAD was visited")

const defaultNADBudget = time.Minute

// Progress counts what a run has done so far.
type Progress struct {
	Seen, Changed, Failed, Pages int64
}

// Migrator is the engine: it lists NADs page by page and hands them to
// workers that normalize (or restore) and write them.
type Migrator struct {
	Store  Store
	Events Events // may be nil
	// Replacer replaces the NADs admission refuses to change in place;
	// nil: never replace. Run fills its Want, Accepts and Retry when unset.
	Replacer *replace.Replacer
	Log      logr.Logger
	Opts     Options

	// run is the run's context: done when the run has to stop.
	run context.Context
	// left are the NADs listed but not handed out when the run stopped.
	left                         []*nadv1.NetworkAttachmentDefinition
	seen, changed, failed, pages atomic.Int64
	diffMu                       sync.Mutex
}

// ErrList is returned when NADs cannot be listed: the run stopped early.
var ErrList = errors.New("listing NetworkAttachmentDefinitions")

func (m *Migrator) defaults() {
	o := &m.Opts
	if o.Mode == "" {
		o.Mode = ModeMigrate
	}
	if o.PageSize <= 0 {
		o.PageSize = defaultPageSize
	}
	if o.Concurrency <= 0 {
		o.Concurrency = defaultConcurrency
	}
	if o.DryRun == "" {
		o.DryRun = DryRunNone
	}
	if o.Profile == "" {
		o.Profile = netconf.ProfileHarvester
	}
	if o.Backoff == (Backoff{}) {
		o.Backoff = DefaultBackoff
	}
	if o.MaxConflicts <= 0 {
		o.MaxConflicts = defaultMaxConflicts
	}
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = defaultProgressEvery
	}
	if o.Recreate == "" {
		o.Recreate = RecreateAuto
	}
	if o.NADBudget <= 0 {
		o.NADBudget = defaultNADBudget
	}
	if r := m.Replacer; r != nil {
		if r.Want == nil {
			r.Want = Want
		}
		if r.Accepts == nil {
			r.Accepts = Accepts
		}
		if r.Retry == nil {
			// Waiting on the context given: the replacer hands each step
			// the context whose end should stop its retries.
			r.Retry = o.Backoff.Retry
		}
		if r.Budget <= 0 {
			r.Budget = DefaultReplaceBudget
		}
	}
}

// DefaultReplaceBudget bounds one replacement from its delete on: Harvester's
// controllers remove their finalizers about a second after a delete.
const DefaultReplaceBudget = 2 * time.Minute

// ErrStartup is returned when the API server kept failing while the run
// started (finishing earlier replacements): a later run may not meet it.
var ErrStartup = errors.New("the API server kept failing while the run started")

// Progress returns the counters so far.
func (m *Migrator) Progress() Progress {
	return Progress{Seen: m.seen.Load(), Changed: m.changed.Load(), Failed: m.failed.Load(), Pages: m.pages.Load()}
}

// Run visits every NAD in scope once and returns the report. A NAD that
// fails never stops the run. An error is returned when listing fails for
// good, or wrapping ErrStopped when the run stops early, with the report of
// what was done until then.
func (m *Migrator) Run(ctx context.Context) (*report.Report, error) {
	m.defaults()
	rep := report.New()
	run := ctx
	if m.Opts.Timeout > 0 {
		var cancel context.CancelFunc
		run, cancel = context.WithTimeout(ctx, m.Opts.Timeout)
		defer cancel()
	}
	m.run = run
	// Requests outlive a stop (one sent finishes); waiting does not.
	requests := context.WithoutCancel(run)
	// First the replacements an interrupted run left half done: their NADs
	// are missing until created again.
	resumed, err := m.resume(withWait(requests, run), rep)
	if err != nil && run.Err() == nil {
		if Classify(err) == Retry {
			return rep, fmt.Errorf("%w: finishing the replacements an earlier run started: %w", ErrStartup, err)
		}
		return rep, fmt.Errorf("finishing the replacements an earlier run started: %w", err)
	}
	work := make(chan *nadv1.NetworkAttachmentDefinition, m.Opts.Concurrency)
	var wg sync.WaitGroup
	for range m.Opts.Concurrency {
		wg.Go(func() {
			for nad := range work {
				it := m.visit(requests, nad)
				rep.Add(it)
				m.seen.Add(1)
				switch it.Action {
				case report.ActionNormalized, report.ActionWouldNormalize, report.ActionRestored, report.ActionWouldRestore:
					m.changed.Add(1)
				case report.ActionFailed:
					m.failed.Add(1)
				}
			}
		})
	}
	stopProgress := m.reportProgress()
	last, err := m.list(withWait(requests, run), work, resumed)
	close(work)
	wg.Wait()
	stopProgress()
	if run.Err() != nil {
		for _, nad := range m.left {
			rep.Add(m.unvisited(nad))
			m.seen.Add(1)
		}
		if n := len(m.left); n > 0 {
			last = m.left[n-1].Namespace + "/" + m.left[n-1].Name
		}
		rep.Summary.Stopped = stopReason(run, m.Opts.Timeout, last, err == nil)
		return rep, fmt.Errorf("%w: %s", ErrStopped, rep.Summary.Stopped)
	}
	return rep, err
}

// Fix migrates (or restores) one NAD as a run would, with the run's
// retries and replacement, for a caller that found it itself (the
// operator's watch). ctx bounds it like a run's context: once done, the
// write not yet sent is not started and the NAD is reported unvisited.
func (m *Migrator) Fix(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) report.Item {
	m.defaults()
	m.run = ctx
	return m.visit(context.WithoutCancel(ctx), nad)
}

// stopReason says why and where a run stopped.
func stopReason(run context.Context, timeout time.Duration, last string, listed bool) string {
	why := "the run was canceled (SIGTERM or interrupt)"
	if errors.Is(run.Err(), context.DeadlineExceeded) {
		why = fmt.Sprintf("the run's --timeout of %s was up", timeout)
	}
	switch {
	case listed:
		return why + "; every NAD was listed, the report names the ones not written"
	case last == "":
		return why + "; no NAD was listed"
	}
	return fmt.Sprintf("%s; NADs after %s (in namespace/name order) were not listed", why, last)
}

// visit handles one NAD with its own retry budget. Once the run has to
// stop, a NAD not yet started, or whose write did not land, is reported
// unvisited: no Event, no failure, the next run visits it.
func (m *Migrator) visit(requests context.Context, nad *nadv1.NetworkAttachmentDefinition) report.Item {
	if m.run.Err() != nil {
		return m.unvisited(nad)
	}
	wait, cancel := context.WithTimeout(m.run, m.Opts.NADBudget)
	defer cancel()
	ctx := withWait(requests, wait)
	if m.Opts.Mode == ModeRollback {
		return m.rollback(ctx, nad)
	}
	return m.migrate(ctx, nad)
}

func (m *Migrator) unvisited(nad *nadv1.NetworkAttachmentDefinition) report.Item {
	return report.Item{Namespace: nad.Namespace, Name: nad.Name, Form: netconf.Normalize([]byte(nad.Spec.Config)).Form,
		Action: report.ActionUnvisited, Reason: "the run stopped before this NAD was written"}
}

// list feeds every NAD in scope to work, page by page, so memory holds at
// most one page and the workers' NADs whatever the number of NADs.
func (m *Migrator) list(ctx context.Context, work chan<- *nadv1.NetworkAttachmentDefinition, resumed map[string]bool) (last string, err error) {
	// When the continue token expires (etcd compacted the revision it
	// reads), the API server's 410 carries a token to go on from the same
	// key at the current revision, and the listing takes it; without one it
	// starts again from the top. Either way the API server lists in key
	// order (namespace/name), so skipping the keys up to the last one
	// handed out visits each NAD once with no memory of the NADs seen. NADs
	// created meanwhile with keys before it were not in the first snapshot
	// either; the webhook sees those writes.
	restarted := false
	cont := ""
	for {
		var page *nadv1.NetworkAttachmentDefinitionList
		_, err := m.Opts.Backoff.retry(ctx, func() error {
			var err error
			page, err = m.Store.List(ctx, m.Opts.Namespace, m.Opts.Selector, m.Opts.PageSize, cont)
			return err
		})
		if cont != "" && (apierrors.IsResourceExpired(err) || apierrors.IsGone(err)) {
			restarted, cont = true, expiredContinue(err)
			how := "from the start"
			if cont != "" {
				how = "with the token the API server returned"
			}
			m.Log.Info("Listing again "+how+": the continue token expired", logging.KeyReason, err.Error(), "after", last)
			continue
		}
		if err != nil {
			return last, fmt.Errorf("%w (page %d): %w", ErrList, m.pages.Load()+1, err)
		}
		m.pages.Add(1)
		for i := range page.Items {
			nad := &page.Items[i]
			key := nad.Namespace + "/" + nad.Name
			if (restarted && key <= last) || resumed[key] {
				continue
			}
			select {
			case work <- nad:
				last = key
			case <-waitOf(ctx).Done():
				// The rest of this page was read: those NADs are known
				// and reported unvisited by name.
				for j := i; j < len(page.Items); j++ {
					if k := page.Items[j].Namespace + "/" + page.Items[j].Name; !resumed[k] {
						m.left = append(m.left, page.Items[j].DeepCopy())
					}
				}
				return last, waitOf(ctx).Err()
			}
		}
		if cont = page.Continue; cont == "" {
			return last, nil
		}
	}
}

// expiredContinue is the continue token an expired-token 410 carries, or "".
func expiredContinue(err error) string {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return se.Status().ListMeta.Continue
	}
	return ""
}

func (m *Migrator) reportProgress() (stop func()) {
	t := time.NewTicker(m.Opts.ProgressInterval)
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-t.C:
				p := m.Progress()
				m.Log.Info("Visiting NetworkAttachmentDefinitions", "seen", p.Seen, "changed", p.Changed, "failed", p.Failed, "pages", p.Pages)
			case <-quit:
				return
			}
		}
	}()
	return func() { t.Stop(); close(quit); <-done }
}

// migrate normalizes one NAD and writes it, reading it again after a
// conflict so another writer's change is never overwritten.
func (m *Migrator) migrate(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) report.Item {
	it := report.Item{Namespace: nad.Namespace, Name: nad.Name}
	log := m.Log.WithValues(logging.KeyObject, it.Ref())
	for conflicts := 0; ; conflicts++ {
		res := netconf.Normalize([]byte(nad.Spec.Config))
		it.Form = res.Form
		log := log.WithValues(logging.KeyForm, res.Form)
		switch {
		case res.Form == netconf.FormTruncated || res.Form == netconf.FormInvalid:
			it.Action, it.Reason = report.ActionReported, fmt.Sprintf("%s: %s", res.Reason.Code, res.Reason.Message)
			log.Info("Leaving NetworkAttachmentDefinition that cannot be normalized safely", logging.KeyOutcome, it.Action, logging.KeyReason, it.Reason)
			return it
		case !res.Changed:
			it.Action = report.ActionUnchanged
			if res.Form != netconf.FormEmpty {
				it.Violations = netconf.Validate(res.Config, m.Opts.Profile)
			}
			return it
		}
		it.Violations = netconf.Validate(res.Config, m.Opts.Profile)
		if nad.Labels[nadv1.LabelSkip] == "true" {
			// Opted out by a person, or by rollback: an automatic run (the
			// upgrade pre-hook) must not undo that.
			it.Action, it.Reason = report.ActionSkipped, "opted out with the label "+nadv1.LabelSkip+"=true; remove it to have the NAD migrated"
			log.Info("Skipping NetworkAttachmentDefinition opted out by label", logging.KeyOutcome, it.Action)
			return it
		}
		if m.Opts.DryRun == DryRunClient {
			it.Action = report.ActionWouldNormalize
			m.diff(it.Ref(), nad.Spec.Config, string(res.Config))
			log.Info("Would rewrite NetworkAttachmentDefinition config to the flat form", logging.KeyOutcome, it.Action)
			return it
		}
		upd := nad.DeepCopy()
		upd.Spec.Config = string(res.Config)
		if upd.Annotations == nil {
			upd.Annotations = map[string]string{}
		}
		upd.Annotations[nadv1.AnnotationOriginalConfig] = nad.Spec.Config
		upd.Annotations[nadv1.AnnotationNormalizedFrom] = string(res.Form)
		stored, err := m.write(ctx, nad, upd)
		stored, replacedBy, err := m.replaceIfRefused(ctx, nad, stored, err)
		switch {
		case err == nil:
			it.Action = report.ActionNormalized
			if m.Opts.DryRun == DryRunServer {
				it.Action = report.ActionWouldNormalize
			}
			event := fmt.Sprintf("netconf-migrator rewrote spec.config from the %s form to the flat CNI form; the original is in the annotation %s", res.Form, nadv1.AnnotationOriginalConfig)
			if replacedBy != nil {
				replaced(&it, replacedBy)
				m.diff(it.Ref(), nad.Spec.Config, stored.Spec.Config)
				logReplaced(log, it, "Replaced NetworkAttachmentDefinition by one in the flat form: its in-place update was refused")
				event = fmt.Sprintf("netconf-migrator deleted and created this NAD again in the flat CNI form (an admission webhook refused the in-place update); the original config is in the annotation %s", nadv1.AnnotationOriginalConfig)
			} else {
				m.diff(it.Ref(), nad.Spec.Config, string(res.Config))
				log.Info("Rewrote NetworkAttachmentDefinition config to the flat form", logging.KeyOutcome, it.Action)
			}
			if m.Opts.DryRun == DryRunNone {
				m.event(ctx, stored, corev1.EventTypeNormal, ReasonNormalized, event)
			}
			return it
		case Classify(err) == Conflict && conflicts < m.Opts.MaxConflicts:
			log.V(logging.Debug).Info("Reading NetworkAttachmentDefinition again after a conflicting write", logging.KeyReason, err.Error())
			fresh, final := m.reread(ctx, log, nad, it, ReasonNormalizeFail)
			if final != nil {
				return *final
			}
			if fresh.Spec.Config == upd.Spec.Config && fresh.Annotations[nadv1.AnnotationOriginalConfig] == nad.Spec.Config {
				// Our own write landed before its answer was lost.
				it.Action = report.ActionNormalized
				m.diff(it.Ref(), nad.Spec.Config, upd.Spec.Config)
				return it
			}
			nad = fresh
			continue
		case Classify(err) == Gone:
			return m.skipped(log, it)
		default:
			return m.fail(ctx, log, nad, it, ReasonNormalizeFail, err)
		}
	}
}

// replaceFailed is a replacement that failed for good: whatever it wraps
// (the namespace NotFound on a create, a conflict deep inside), the NAD is
// neither read again nor skipped as deleted; it is reported with the
// message, which may say where its backup is.
type replaceFailed struct{ error }

func (e replaceFailed) Unwrap() error { return e.error }

// acceptFlat takes a config a create would store when it needs no
// normalizing (another webhook may have added keys, such as Harvester's mtu).
func acceptFlat(config string) bool {
	r := netconf.Normalize([]byte(config))
	return !r.Changed && r.Form != netconf.FormTruncated && r.Form != netconf.FormInvalid && r.Form != netconf.FormEmpty
}

// rollback restores the original config of a NAD the migration rewrote,
// only when its config is still exactly what the migration wrote. The
// original never exists only in memory: a server-side dry run shows the
// restore would be stored as the original before anything is written, the
// restoring write keeps the annotation that holds it, and the annotation is
// removed only once the stored config is checked.
func (m *Migrator) rollback(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) report.Item {
	it := report.Item{Namespace: nad.Namespace, Name: nad.Name}
	log := m.Log.WithValues(logging.KeyObject, it.Ref())
	for conflicts := 0; ; conflicts++ {
		it.Form = netconf.Normalize([]byte(nad.Spec.Config)).Form
		orig, ok := nad.Annotations[nadv1.AnnotationOriginalConfig]
		if !ok {
			it.Action, it.Violations = report.ActionUnchanged, nil
			return it
		}
		restored := nad.Spec.Config == orig // an earlier rollback stopped before dropping the annotation
		if wrote := netconf.Normalize([]byte(orig)); !restored && (!wrote.Changed || string(wrote.Config) != nad.Spec.Config) {
			it.Action = report.ActionReported
			it.Reason = "spec.config changed since netconf-migrator rewrote it; the original stays in the annotation " + nadv1.AnnotationOriginalConfig + " and is not restored"
			log.Info("Leaving NetworkAttachmentDefinition changed since the migration", logging.KeyOutcome, it.Action)
			if m.Opts.DryRun == DryRunNone {
				m.event(ctx, nad, corev1.EventTypeWarning, ReasonChangedSince, it.Reason)
			}
			return it
		}
		if m.Opts.DryRun == DryRunClient {
			it.Action = report.ActionWouldRestore
			m.diff(it.Ref(), nad.Spec.Config, orig)
			return it
		}
		upd := nad.DeepCopy()
		upd.Spec.Config = orig
		// Opted out of our webhook, which would otherwise flatten the
		// restored config again on this very write, and on later ones.
		if upd.Labels == nil {
			upd.Labels = map[string]string{}
		}
		upd.Labels[nadv1.LabelSkip] = "true"
		stored, err := m.restoreWrite(ctx, nad, upd, orig)
		stored, replacedBy, err := m.replaceIfRefused(ctx, nad, stored, err)
		switch {
		case err == nil:
			if replacedBy != nil {
				replaced(&it, replacedBy)
			}
		case Classify(err) == Conflict && conflicts < m.Opts.MaxConflicts:
			fresh, final := m.reread(ctx, log, nad, it, ReasonRestoreFailed)
			if final != nil {
				return *final
			}
			nad = fresh
			continue
		case Classify(err) == Gone:
			return m.skipped(log, it)
		default:
			return m.fail(ctx, log, nad, it, ReasonRestoreFailed, err)
		}
		it.Action = report.ActionRestored
		if m.Opts.DryRun == DryRunServer {
			it.Action = report.ActionWouldRestore
			m.diff(it.Ref(), nad.Spec.Config, orig)
			return it
		}
		if stored.Spec.Config != orig {
			// Rewritten between the dry run and the write: the annotation
			// still holds the original.
			return m.fail(ctx, log, stored, it, ReasonRestoreFailed, fmt.Errorf(
				"an admission webhook rewrote the restored config, so the NAD holds %s; the original stays in the annotation %s", stored.Spec.Config, nadv1.AnnotationOriginalConfig))
		}
		if err := m.dropAnnotations(ctx, stored, orig); err != nil {
			it.Reason = fmt.Sprintf("restored, but the annotation %s could not be removed (the next rollback removes it): %v", nadv1.AnnotationOriginalConfig, err)
			log.Error(logged(err), "Removing netconf-migrator's annotations from the restored NetworkAttachmentDefinition failed")
		}
		m.diff(it.Ref(), nad.Spec.Config, orig)
		log.Info("Restored the original NetworkAttachmentDefinition config", logging.KeyOutcome, it.Action, "recreated", it.Recreated)
		m.event(ctx, stored, corev1.EventTypeNormal, ReasonRestored, "netconf-migrator restored the spec.config it had rewritten")
		return it
	}
}

// errWouldRewrite is a restore another admission webhook would rewrite.
type errWouldRewrite struct{ stored string }

func (e *errWouldRewrite) Error() string {
	return fmt.Sprintf("an admission webhook would rewrite the restored config to %s; nothing was written, the original stays in the annotation %s", e.stored, nadv1.AnnotationOriginalConfig)
}

// restoreWrite writes a restore after a server-side dry run of it showed
// the API server would store the original as it is.
func (m *Migrator) restoreWrite(ctx context.Context, cur, upd *nadv1.NetworkAttachmentDefinition, orig string) (*nadv1.NetworkAttachmentDefinition, error) {
	if m.Opts.DryRun == DryRunNone {
		probe := upd.DeepCopy()
		if _, err := m.Opts.Backoff.retry(ctx, func() error { return m.Store.Patch(ctx, cur, probe, true) }); err != nil {
			return nil, err
		}
		if probe.Spec.Config != orig {
			return nil, &errWouldRewrite{stored: probe.Spec.Config}
		}
	}
	return m.write(ctx, cur, upd)
}

// dropAnnotations removes netconf-migrator's annotations from a NAD whose
// stored config is the restored original, reading it again after a
// conflict as long as it still holds the original.
func (m *Migrator) dropAnnotations(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, orig string) error {
	for conflicts := 0; ; conflicts++ {
		upd := nad.DeepCopy()
		delete(upd.Annotations, nadv1.AnnotationOriginalConfig)
		delete(upd.Annotations, nadv1.AnnotationNormalizedFrom)
		_, err := m.write(ctx, nad, upd)
		if err == nil || Classify(err) != Conflict || conflicts >= m.Opts.MaxConflicts {
			return err
		}
		fresh, gone, gerr := m.get(ctx, nad)
		switch {
		case gone:
			return nil
		case gerr != nil:
			return gerr
		case fresh.Spec.Config != orig:
			return fmt.Errorf("spec.config changed since it was restored; the annotation stays")
		}
		nad = fresh
	}
}

// write changes orig (as read) into nad and returns the object as the API
// server answered it (after every mutating webhook).
func (m *Migrator) write(ctx context.Context, orig, nad *nadv1.NetworkAttachmentDefinition) (*nadv1.NetworkAttachmentDefinition, error) {
	var stored *nadv1.NetworkAttachmentDefinition
	_, err := m.Opts.Backoff.retry(ctx, func() error {
		stored = nad.DeepCopy()
		return m.Store.Patch(ctx, orig, stored, m.Opts.DryRun == DryRunServer)
	})
	return stored, err
}

// reread reads the NAD again after another writer was first: the fresh
// object, or the item that ends the NAD's visit (deleted meanwhile, or the
// read failed).
func (m *Migrator) reread(ctx context.Context, log logr.Logger, nad *nadv1.NetworkAttachmentDefinition, it report.Item, reason string) (*nadv1.NetworkAttachmentDefinition, *report.Item) {
	fresh, gone, err := m.get(ctx, nad)
	switch {
	case gone:
		it = m.skipped(log, it)
		return nil, &it
	case err != nil:
		it = m.fail(ctx, log, nad, it, reason, err)
		return nil, &it
	}
	return fresh, nil
}

func (m *Migrator) get(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition) (fresh *nadv1.NetworkAttachmentDefinition, gone bool, err error) {
	_, err = m.Opts.Backoff.retry(ctx, func() error {
		var err error
		fresh, err = m.Store.Get(ctx, nad.Namespace, nad.Name)
		return err
	})
	if apierrors.IsNotFound(err) {
		return nil, true, nil
	}
	return fresh, false, err
}

func (m *Migrator) skipped(log logr.Logger, it report.Item) report.Item {
	it.Action, it.Reason = report.ActionSkipped, "deleted during the run"
	log.Info("Skipping NetworkAttachmentDefinition deleted during the run", logging.KeyOutcome, it.Action)
	return it
}

func (m *Migrator) fail(ctx context.Context, log logr.Logger, nad *nadv1.NetworkAttachmentDefinition, it report.Item, reason string, err error) report.Item {
	var missing *replace.Missing
	if errors.As(err, &missing) {
		// Never unvisited, never skipped: the NAD is gone until a run
		// creates it from its backup.
		it.Action, it.Reason, it.Backup = report.ActionMissing, err.Error(), missing.Journal
		log.Error(logged(err), "NetworkAttachmentDefinition is missing until a run creates it again from its backup", logging.KeyOutcome, it.Action, "backup", missing.Journal)
		return it
	}
	if m.run != nil && m.run.Err() != nil && (Classify(err) == Retry || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)) {
		// The run stopped while this NAD's write was being retried: it was
		// not written, and the next run visits it.
		it.Form = netconf.Normalize([]byte(nad.Spec.Config)).Form
		it.Action, it.Reason = report.ActionUnvisited, "the run stopped before this NAD was written (last error: "+logged(err).Error()+")"
		return it
	}
	it.Action, it.Reason = report.ActionFailed, err.Error()
	if a := harvester.Advice(nad.Namespace, nad.Name, nad.Labels, nad.Annotations, it.Form == netconf.FormDoubleEncoded, err.Error()); a != "" {
		it.Advice = a
	}
	log.Error(logged(err), "Writing NetworkAttachmentDefinition failed", logging.KeyOutcome, it.Action)
	if m.Opts.DryRun == DryRunNone {
		m.event(ctx, nad, corev1.EventTypeWarning, reason, "netconf-migrator could not write spec.config: "+logged(err).Error())
	}
	return it
}

// maxLoggedError bounds an error in the log and in Events: admission
// webhooks quote the whole config in their denials (Harvester's do), and
// configs stay out of the log at the default level. The report keeps the
// whole message.
const maxLoggedError = 300

func logged(err error) error {
	if head, cut := logging.Cut(err.Error(), maxLoggedError); cut > 0 {
		return fmt.Errorf("%s... (%d more bytes in the report)", head, cut)
	}
	return err
}

func (m *Migrator) event(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, eventType, reason, msg string) {
	if m.Events != nil {
		m.Events.Event(ctx, nad, eventType, reason, msg)
	}
}

func (m *Migrator) diff(ref, before, after string) {
	if m.Opts.Diff == nil {
		return
	}
	m.diffMu.Lock()
	defer m.diffMu.Unlock()
	_, _ = io.WriteString(m.Opts.Diff, configdiff.Unified(ref, before, after))
}
