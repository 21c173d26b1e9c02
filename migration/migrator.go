package migration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/labels"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/migration/mode"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// Mode is what a run does to each NAD (migration/mode, shared with the
// replacement).
type Mode = mode.Mode

const (
	// ModeMigrate rewrites nested and double-encoded configs.
	ModeMigrate = mode.Migrate
	// ModeRollback restores the configs a migration rewrote.
	ModeRollback = mode.Rollback
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

// DefaultReplaceConcurrency is how many replacements are in flight at
// once unless asked otherwise. Each holds a NAD missing until Harvester's
// controllers let its delete finish, so it also bounds how many NADs a
// killed run leaves missing for the next to create.
const DefaultReplaceConcurrency = 16

// Options shape a run.
type Options struct {
	Mode      Mode
	Namespace string          // empty: all namespaces
	Selector  labels.Selector // nil: every NAD
	PageSize  int64
	// Concurrency is how many NADs are written in place at once.
	Concurrency int
	// ReplaceConcurrency is how many replacements may be in flight at once
	// besides (default 16): a replacement mostly waits on Harvester's
	// controllers' cleanup, so replacements would hold the in-place
	// writers for nothing. Its requests are bounded by this number and by
	// the API server's answers (429 with Retry-After), not by the in-place
	// writers' QPS.
	ReplaceConcurrency int
	DryRun             DryRun
	Profile            netconf.Profile
	Backoff            Backoff
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
	// inPlace and replacing bound a run's workers: inPlace is held while
	// a NAD is read and written in place, replacing while it is replaced.
	// Nil outside Run (Fix).
	inPlace, replacing chan struct{}
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
	if o.ReplaceConcurrency <= 0 {
		o.ReplaceConcurrency = DefaultReplaceConcurrency
	}
	if o.DryRun == "" {
		o.DryRun = DryRunNone
	}
	if o.Profile == "" {
		o.Profile = netconf.ProfileHarvester
	}
	if o.Backoff.unset() {
		clk := o.Backoff.Clock
		o.Backoff = DefaultBackoff
		o.Backoff.Clock = clk
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
