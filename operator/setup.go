package operator

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/migration/runner"
	"github.com/harvester/netconf-migrator/operator/detect"
)

// LeaderElectionID is the Lease the operator's replicas elect a leader with.
const LeaderElectionID = "netconf-migrator-operator"

// Options shape the operator.
type Options struct {
	Fix             detect.Fix
	BackupNamespace string
	// EarlierBackupNamespace is where an earlier version kept its backups.
	EarlierBackupNamespace string
	// LeaseDuration of the run Lease (the one CLI runs take).
	LeaseDuration time.Duration
	// LeaseWait is how long one attempt waits for the run Lease.
	LeaseWait time.Duration
	// BackupInterval is how often the open replacements are looked at
	// again (30 s).
	BackupInterval time.Duration
	// UpgradeCRD has the elected replica keep the NADMigration CRD at this
	// version (CRDUpgrader); Version names it.
	UpgradeCRD bool
	Version    string
	// CRDManifest is the CRD CRDUpgrader applies: the one embedded in
	// apis/ when empty (a test gives a later version's).
	CRDManifest []byte
	// ReplaceBudget bounds one replacement from its delete on; the
	// manager's GracefulShutdownTimeout must outlast it (ShutdownGrace).
	ReplaceBudget     time.Duration
	FlapLimit         int
	FlapWindow        time.Duration
	ReadinessInterval time.Duration
	RetryAfter        time.Duration
	ProgressInterval  time.Duration
	// Identity names this process in the run Lease (default: POD_NAME or
	// the host name).
	Identity string
}

// AddToScheme adds the types the operator reads and writes: NADs,
// NADMigrations, and the CustomResourceDefinition CRDUpgrader applies
// (without it, every apply failed with "no kind is registered").
func AddToScheme(s *runtime.Scheme) error {
	for _, add := range []func(*runtime.Scheme) error{nadv1.AddToScheme, v1alpha1.AddToScheme, apiextensionsv1.AddToScheme} {
		if err := add(s); err != nil {
			return err
		}
	}
	return nil
}

// CacheOptions trims NADs in the manager's cache to what the operator needs.
func CacheOptions() cache.Options {
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&nadv1.NetworkAttachmentDefinition{}: {Transform: toolscache.TransformFunc(detect.Trim)},
	}}
}

// Setup adds the NADMigration controller, the legacy-NAD watch and the
// readiness gauge to a manager built with AddToScheme and CacheOptions.
func Setup(mgr manager.Manager, cfg *rest.Config, log logr.Logger, o Options) error {
	if o.Fix == "" {
		o.Fix = detect.FixInPlace
	}
	if o.ReadinessInterval <= 0 {
		o.ReadinessInterval = time.Minute
	}
	direct, err := client.New(cfg, client.Options{Scheme: mgr.GetScheme()})
	if err != nil {
		return fmt.Errorf("creating a client: %w", err)
	}
	host := o.Identity
	if host == "" {
		host, _ = os.Hostname()
		if pod := os.Getenv("POD_NAME"); pod != "" {
			host = pod
		}
	}
	events := migration.NewQueuedEvents(migration.ClientEvents{Client: direct, Host: host, OnError: func(err error) {
		log.V(logging.Debug).Info("Recording an event failed", logging.KeyReason, err.Error())
	}}, 2, 1024)
	succ, err := successor(cfg, log)
	if err != nil {
		return err
	}
	rc := runner.Config{REST: cfg, Client: direct, Log: log, Identity: succ.Self.Identity("operator_" + host), Successor: succ,
		// A NADMigration's runs record Events only on the NADs that need a
		// person (its status holds the rest).
		BackupNamespace: o.BackupNamespace, EarlierBackupNamespace: o.EarlierBackupNamespace, LeaseDuration: o.LeaseDuration, ReplaceBudget: o.ReplaceBudget, Events: migration.EventsFailures.Filter(events)}
	ready := &detect.Readiness{VMs: direct, NADs: mgr.GetClient(), Log: log.WithName("readiness")}
	if err := (&Reconciler{Client: mgr.GetClient(), Runner: rc, Readiness: ready, LeaseWait: o.LeaseWait, RetryAfter: o.RetryAfter,
		ProgressInterval: o.ProgressInterval, Log: log.WithName("nadmigration")}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the NADMigration controller: %w", err)
	}
	if err := (&detect.Reconciler{Cache: mgr.GetClient(), Runner: rc, Fix: o.Fix, Events: events, FlapLimit: o.FlapLimit, FlapWindow: o.FlapWindow,
		LeaseWait: o.LeaseWait, Log: log.WithName("legacy-nads")}).SetupWithManager(mgr); err != nil {
		return fmt.Errorf("setting up the legacy NAD watch: %w", err)
	}
	if o.UpgradeCRD {
		if err := mgr.Add(&CRDUpgrader{Client: direct, Version: o.Version, Log: log.WithName("crd"), Manifest: o.CRDManifest}); err != nil {
			return fmt.Errorf("setting up the CRD upgrade: %w", err)
		}
	}
	// Every open replacement has one owner, whichever entry point started it.
	if err := mgr.Add(&OpenReplacements{Runner: rc, LeaseWait: o.LeaseWait, Interval: o.BackupInterval, Log: log.WithName("open-replacements"), Elected: mgr.Elected()}); err != nil {
		return fmt.Errorf("setting up the owner of open replacements: %w", err)
	}
	return mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		err := ready.Start(ctx, o.ReadinessInterval)
		events.Flush(10 * time.Second)
		return err
	}))
}

// successor is this operator process as a Lease holder: its Pod, read from
// the downward API, so that the container that follows it after a restart,
// or another replica once its Pod is gone, takes its Leases at once.
func successor(cfg *rest.Config, log logr.Logger) (*runlock.Successor, error) {
	pods, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating a client for Pods: %w", err)
	}
	return &runlock.Successor{Self: runlock.SelfFromEnv("operator"), Pods: pods, Log: log.WithName("lease")}, nil
}
