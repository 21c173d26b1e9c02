package migration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/logging"
)

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
	workers := m.Opts.Concurrency
	if m.Replacer != nil && m.Opts.Recreate == RecreateAuto && m.Opts.DryRun != DryRunClient {
		// More workers than in-place slots: a worker whose NAD is being
		// replaced gives its slot to the next NAD while it waits.
		m.inPlace, m.replacing = make(chan struct{}, m.Opts.Concurrency), make(chan struct{}, m.Opts.ReplaceConcurrency)
		workers += m.Opts.ReplaceConcurrency
	}
	var wg sync.WaitGroup
	for range workers {
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

// Resume only finishes the replacements earlier runs left in the run's
// scope (their NADs are missing until then) and reports them: what a
// retry does first whatever its deadline, and what the operator does for
// every backup, whichever entry point wrote it. Unlike Run, it is not cut
// by Opts.Timeout: each replacement has its own budget.
func (m *Migrator) Resume(ctx context.Context) (*report.Report, error) {
	m.defaults()
	m.run = ctx
	rep := report.New()
	_, err := m.resume(withWait(context.WithoutCancel(ctx), ctx), rep)
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
	if m.inPlace != nil {
		m.inPlace <- struct{}{}
		defer func() { <-m.inPlace }()
	}
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
