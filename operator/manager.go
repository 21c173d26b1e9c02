package operator

import (
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/internal/serving"
	"github.com/harvester/netconf-migrator/migration"
)

// ManagerOptions shape the operator's process. It runs in a Deployment of
// its own, under a ServiceAccount of its own: the Secrets it needs (the
// signed backups, their key, the reports) are none of the webhook's.
type ManagerOptions struct {
	MetricsBindAddress string
	// MetricsSecure serves the metrics over TLS to clients the API server
	// authenticates and authorizes for GET /metrics.
	MetricsSecure bool
	// MetricsCertDir holds the metrics' serving certificate (tls.crt and
	// tls.key); empty: a self-signed one made in memory.
	MetricsCertDir          string
	EnableHTTP2             bool
	HealthProbeBindAddress  string
	LeaderElectionNamespace string
	// SkipNameValidation lets one process build several managers (the
	// suites do).
	SkipNameValidation bool
	// GracefulShutdownTimeout is how long a stopping operator waits for its
	// controllers' work in flight (ShutdownGrace of the replacement
	// budget); zero: ShutdownGrace(migration.DefaultReplaceBudget).
	GracefulShutdownTimeout time.Duration
}

// shutdownMargin is what a stopping operator needs after a replacement's
// budget: the NADMigration's status and report, and releasing its Leases.
const shutdownMargin = 20 * time.Second

// ShutdownGrace is how long a stopping operator waits for its work in
// flight: a replacement started before SIGTERM finishes within its budget,
// and controller-runtime's default (30 s) would cut it, leaving the NAD
// missing until the next run. The Pod's terminationGracePeriodSeconds must
// be at least this (150 s in config/ and the chart, for the 2 minute
// default budget).
func ShutdownGrace(replaceBudget time.Duration) time.Duration {
	return replaceBudget + shutdownMargin
}

// NewManager builds the operator's manager: its types, the cache that trims
// NADs, leader election on the Lease LeaderElectionID (a leader that stops
// hands over at once), probes and metrics. Setup adds the controllers.
func NewManager(cfg *rest.Config, o ManagerOptions, log logr.Logger) (manager.Manager, error) {
	if o.LeaderElectionNamespace == "" {
		return nil, fmt.Errorf("the operator needs the namespace of its leader-election Lease")
	}
	grace := o.GracefulShutdownTimeout
	if grace <= 0 {
		grace = ShutdownGrace(migration.DefaultReplaceBudget)
	}
	scheme := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{clientgoscheme.AddToScheme, AddToScheme} {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	succ, err := successor(cfg, log)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	if pod := os.Getenv("POD_NAME"); pod != "" {
		host = pod
	}
	// The leader's Lease, as controller-runtime would make it, taken at
	// once from a predecessor proven dead (runlock.LeaderLock).
	lock := runlock.LeaderLock(&resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: o.LeaderElectionNamespace, Name: LeaderElectionID},
		Client:     succ.Pods.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: succ.Self.Identity(host)},
	}, *succ)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                              scheme,
		Logger:                              log,
		Metrics:                             serving.MetricsOptions(o.MetricsBindAddress, o.MetricsSecure, o.EnableHTTP2, o.MetricsCertDir),
		HealthProbeBindAddress:              o.HealthProbeBindAddress,
		Cache:                               CacheOptions(),
		LeaderElection:                      true,
		LeaderElectionID:                    LeaderElectionID,
		LeaderElectionNamespace:             o.LeaderElectionNamespace,
		LeaderElectionReleaseOnCancel:       true,
		LeaderElectionResourceLockInterface: lock,
		Controller:                          config.Controller{SkipNameValidation: ptr.To(o.SkipNameValidation)},
		GracefulShutdownTimeout:             ptr.To(grace),
	})
	if err != nil {
		return nil, fmt.Errorf("creating the operator's manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	return mgr, nil
}
