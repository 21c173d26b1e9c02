// Package runner starts one migrate or rollback run the same way for every
// entry point (the CLI, the Job, the upgrade pre-hook, the operator): it
// takes the run Lease, loads the backups' signing key, and builds the
// engine with its replacer, so a NADMigration and a person at a terminal
// never replace NADs at the same time and each finishes what the other
// left half done.
package runner

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/internal/harvester"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// DefaultBackupNamespace is where every entry point keeps its Lease and
// backups: a namespace of their own, which config/ and the chart create.
// It never depends on where the run itself runs (the upgrade pre-hook runs
// in harvester-system, a Job in its release's namespace), so any run
// finishes the replacements another left half done. Nothing else lives
// there: the tool's Secret rights reach its backups, their key and its
// reports, and not the webhook's TLS key; the webhook has no rights there.
const DefaultBackupNamespace = "netconf-migrator-backups"

// EarlierBackupNamespace is where versions up to 0.2 kept their backups,
// beside the webhook. Runs move what they find there (MoveEarlier).
const EarlierBackupNamespace = "netconf-migrator-system"

// Config is what every run of one process shares.
type Config struct {
	REST *rest.Config
	// Client is uncached: a run reads what is stored.
	Client client.Client
	Log    logr.Logger
	// Identity names the run in the Lease (host or Pod, and a random part).
	Identity string
	// Successor, when set, takes the run Lease from a holder it proves
	// dead (a restarted container's predecessor, a Pod that is gone)
	// without waiting for it to expire.
	Successor       *runlock.Successor
	BackupNamespace string
	// EarlierBackupNamespace is where an earlier version may have left
	// backups; EarlierBackupNamespace when empty.
	EarlierBackupNamespace string
	LeaseWait              time.Duration
	LeaseDuration          time.Duration
	// Finalizers a replacement may wait out, with their controllers;
	// nil: Harvester's.
	Finalizers map[string]string
	// Webhooks whose refusal calls for a replacement; nil: Harvester's.
	Webhooks      []string
	ReplaceBudget time.Duration
	// ResumeWindow bounds how long after its writing a backup left at step
	// Deleting is finished when its NAD is gone (replace.DefaultResumeWindow).
	ResumeWindow time.Duration
	// KeyBudget bounds the retries while loading the signing key.
	KeyBudget time.Duration
	Events    migration.Events
}

// StartError is a run that could not start. Transient ones (another run
// holds the Lease, the API server kept failing) may start later.
type StartError struct {
	Err       error
	Transient bool
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// Run is a started run: Migrator is the engine, Context ends when the run
// must stop (its parent ended, or the Lease could not be renewed).
type Run struct {
	Migrator *migration.Migrator
	Context  context.Context
	release  func()
}

// Release gives the Lease back at once (the next run need not wait for it
// to expire). Call it once Migrator.Run returned.
func (r *Run) Release() { r.release() }

// Start prepares one run with opts. Dry runs take no Lease and load no key:
// they write nothing, so they may run beside another run.
func Start(ctx context.Context, c Config, opts migration.Options) (*Run, error) {
	if c.BackupNamespace == "" {
		c.BackupNamespace = DefaultBackupNamespace
	}
	if c.EarlierBackupNamespace == "" {
		c.EarlierBackupNamespace = EarlierBackupNamespace
	}
	if c.Finalizers == nil {
		c.Finalizers = harvester.Finalizers()
	}
	if c.Webhooks == nil {
		c.Webhooks = harvester.Webhooks()
	}
	if c.ReplaceBudget <= 0 {
		c.ReplaceBudget = migration.DefaultReplaceBudget
	}
	if c.KeyBudget <= 0 {
		c.KeyBudget = time.Minute
	}
	r := &Run{Context: ctx, release: func() {}}
	var fence replace.Fence
	if opts.DryRun == migration.DryRunNone {
		held, err := runlock.AcquireAs(ctx, c.REST, c.BackupNamespace, c.Identity, c.LeaseWait, c.LeaseDuration, c.Successor)
		if err != nil {
			return nil, &StartError{Err: err, Transient: true}
		}
		run, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-held.Lost:
				c.Log.Info("Stopping: the run's Lease could not be renewed, so another run may take it")
				cancel()
			case <-run.Done():
			}
		}()
		r.Context = run
		r.release = func() { cancel(); held.Release() }
		fence = held.Fence
	}
	var replacer *replace.Replacer
	if opts.Recreate == migration.RecreateAuto {
		rc, err := replaceClient(c)
		if err != nil {
			r.Release()
			return nil, &StartError{Err: err}
		}
		objects := migration.ClientObjects{Client: rc}
		replacer = &replace.Replacer{
			Objects: objects, Deletions: objects, Log: c.Log, Run: c.Identity,
			Finalizers: c.Finalizers, Webhooks: c.Webhooks, Budget: c.ReplaceBudget, ResumeWindow: c.ResumeWindow,
		}
		if opts.DryRun == migration.DryRunNone {
			key, err := loadKey(r.Context, rc, c.BackupNamespace, c.KeyBudget)
			if err != nil {
				r.Release()
				// A key missing while backups exist waits for an
				// administrator (backups adopt): the run stops, exit 3.
				return nil, &StartError{Err: err, Transient: migration.Classify(err) == migration.Retry || errors.Is(err, replace.ErrKeyMissing)}
			}
			// Every write a replacement sends is fenced by the Lease: none
			// is sent once another run may hold it.
			backups := replace.SecretBackups{Client: rc, Namespace: c.BackupNamespace, Key: key}
			replacer.Backups = replace.FencedBackups(backups, fence)
			replacer.Objects = replace.FencedObjects(replacer.Objects, fence)
			// Backups an earlier version kept elsewhere (beside the
			// webhook, or in ConfigMaps): moved, then resumed like the
			// rest.
			replacer.Legacy = func(ctx context.Context) ([]replace.Rejected, error) {
				e, err := replace.MoveEarlier(ctx, c.Client, c.EarlierBackupNamespace, backups)
				for _, ref := range e.Moved {
					c.Log.Info("Moved the backup of a NetworkAttachmentDefinition an earlier version kept elsewhere", logging.KeyObject, ref, "from", e.Namespace, "to", c.BackupNamespace)
				}
				if e.KeyRemoved {
					c.Log.Info("Removed the signing key an earlier version left: nothing of the tool's is left in its namespace", "namespace", e.Namespace)
				}
				if e.Hidden != "" {
					c.Log.Info("Backups of an earlier version may wait where this run cannot look", logging.KeyReason, e.Hidden)
				}
				return e.Rejected, err
			}
		}
	}
	r.Migrator = &migration.Migrator{
		Store:    migration.ClientStore{Client: c.Client},
		Events:   c.Events,
		Replacer: replacer,
		Log:      c.Log,
		Opts:     opts,
	}
	return r, nil
}

// replaceClient is the client replacements send their requests with: one
// of their own, which can watch (the shared watch of deletions) and has no
// client-side rate limit. Replacements are bounded by how many may be in
// flight (migration.Options.ReplaceConcurrency), each sending one request
// at a time, and by the API server's own answers: client-go waits out a
// 429's Retry-After, which API Priority and Fairness sends when it is
// busy. Sharing the in-place writers' --qps made every replacement queue
// behind them for tokens while it held a NAD missing.
func replaceClient(c Config) (client.Client, error) {
	if c.REST == nil {
		return c.Client, nil
	}
	cfg := rest.CopyConfig(c.REST)
	cfg.QPS, cfg.Burst, cfg.RateLimiter = -1, 0, nil
	// A replacement's delete must know when its answer is a resend's.
	cfg.Wrap(migration.CountSends)
	rc, err := client.NewWithWatch(cfg, client.Options{Scheme: c.Client.Scheme(), Mapper: c.Client.RESTMapper()})
	if err != nil {
		return nil, fmt.Errorf("creating the replacements' client: %w", err)
	}
	return rc, nil
}

// IsTransient reports whether err is a start that may succeed later.
func IsTransient(err error) bool {
	var se *StartError
	return errors.As(err, &se) && se.Transient
}

// loadKey reads (or creates) the backups' signing key, retrying transient
// errors within budget.
func loadKey(ctx context.Context, c client.Client, namespace string, budget time.Duration) ([]byte, error) {
	b := migration.DefaultBackoff
	b.Budget = budget
	var key []byte
	err := b.Retry(ctx, func() (err error) {
		key, err = replace.LoadKey(ctx, c, namespace)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("loading the backups' signing key from %s: %w", namespace, err)
	}
	return key, nil
}
