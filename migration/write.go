package migration

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/configdiff"
	"github.com/harvester/netconf-migrator/internal/harvester"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/migration/replace"
)

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
		it.Action, it.Reason, it.Backup = report.ActionMissing, err.Error(), missing.Backup
		it.Advice = missing.Advice
		log.Error(logged(err), "NetworkAttachmentDefinition is missing until a run creates it again from its backup", logging.KeyOutcome, it.Action, "backup", missing.Backup)
		return it
	}
	var theirs *replace.CreatedByAnother
	var undecided *replace.Undecided
	switch {
	// Reported failed below, naming where the original is kept.
	case errors.As(err, &theirs):
		it.Backup = theirs.Backup
	case errors.As(err, &undecided):
		it.Backup = undecided.Backup
	}
	var stopped *replace.Stopped
	if errors.As(err, &stopped) {
		it.Form = netconf.Normalize([]byte(nad.Spec.Config)).Form
		it.Action, it.Reason, it.Backup = report.ActionUnvisited, err.Error(), stopped.Backup
		log.Info("Leaving NetworkAttachmentDefinition for the next run: this run lost its Lease before the delete", logging.KeyOutcome, it.Action, "backup", stopped.Backup)
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
	if a := harvester.Advice(nad.Namespace, nad.Name, nad.Labels, nad.Annotations, it.Form == netconf.FormDoubleEncoded, err); a != "" {
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
