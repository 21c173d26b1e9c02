package app

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/spf13/cobra"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/internal/version"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/migration/runner"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
)

func newOperatorCommand(g *globals) *cobra.Command {
	var o operator.Options
	var m operator.ManagerOptions
	var fix, kubeconfig string
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Run NADMigrations, and count, warn on and fix NADs stored in a legacy form as they appear",
		Long: `operator runs the NADMigration controller and the watch of every
NetworkAttachmentDefinition on the elected replica (leader election on the Lease
` + operator.LeaderElectionID + `). It runs in a Deployment of its own, beside the
webhook's: the Secrets it keeps (signed backups, their key, reports) are in
--backup-namespace, where the webhook's ServiceAccount reads none.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.Logger()
			if err != nil {
				return usageError("%w", err)
			}
			if o.Fix, err = detect.ParseFix(fix); err != nil {
				return usageError("--fix-legacy: %w", err)
			}
			if o.ReplaceBudget <= 0 {
				return usageError("--replace-budget must be positive")
			}
			if err := runlock.ValidDuration(o.LeaseDuration); err != nil {
				return usageError("--lease-duration: %w", err)
			}
			// A replacement under way when SIGTERM comes finishes: the
			// manager waits for it (the Pod's grace period must be longer).
			m.GracefulShutdownTimeout = operator.ShutdownGrace(o.ReplaceBudget)
			cfg, err := controllerConfig(kubeconfig, log)
			if err != nil {
				return err
			}
			mgr, err := operator.NewManager(cfg, m, log)
			if err != nil {
				// The manager maps its types through the API server when
				// it is built: not reaching it is no usage error (a Pod
				// restarted by its kubelet, not a bad manifest).
				if unreachable(err) {
					return &ExitError{Code: ExitStopped, Err: fmt.Errorf("the API server could not be reached at start: %w", err)}
				}
				return usageError("%w", err)
			}
			o.Version = version.String()
			if err := operator.Setup(mgr, cfg, log, o); err != nil {
				return usageError("%w", err)
			}
			log.Info("Starting the operator", "fixLegacy", o.Fix, "backupNamespace", o.BackupNamespace)
			if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
				return &ExitError{Code: ExitAttention, Err: fmt.Errorf("running the operator: %w", err)}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: KUBECONFIG, then in-cluster)")
	f.StringVar(&fix, "fix-legacy", string(detect.FixInPlace), "what the operator does with a NAD it finds stored in a legacy form: Off (count and warn), InPlace (rewrite it in place where admission allows, never delete) or Replace (also replace it, as migrate --recreate=auto does)")
	f.StringVar(&o.BackupNamespace, "backup-namespace", runner.DefaultBackupNamespace, "namespace of the run Lease, the signed backups and the NADMigration reports (the one migrate uses)")
	f.BoolVar(&o.UpgradeCRD, "upgrade-crd", true, "keep the NADMigration CRD at this version (Helm installs a chart's CRDs once and never upgrades them); a CRD a newer version applied is left alone")
	f.StringVar(&o.EarlierBackupNamespace, "earlier-backup-namespace", runner.EarlierBackupNamespace, "where an earlier version kept its backups (beside the webhook): moved when this identity may list them there, reported (netconf_migrator_earlier_backups_unseen) when not")
	f.StringVar(&m.LeaderElectionNamespace, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the operator's leader-election Lease (default $POD_NAMESPACE)")
	f.DurationVar(&o.ReadinessInterval, "readiness-interval", time.Minute, "how often the operator counts the KubeVirt VMs attached to legacy NADs")
	f.IntVar(&o.FlapLimit, "flap-limit", 3, "a NAD fixed this many times within --flap-window and set back again is left alone and reported")
	f.DurationVar(&o.FlapWindow, "flap-window", 10*time.Minute, "see --flap-limit")
	f.DurationVar(&o.LeaseDuration, "lease-duration", 15*time.Second, "how long the run Lease outlives an operator that stops renewing it, in whole seconds (a Lease records no less), at most 5m")
	f.DurationVar(&o.ReplaceBudget, "replace-budget", migration.DefaultReplaceBudget, "how long one replacement may take from its delete on; a stopping operator waits this long plus 20s for one under way, so the Pod's terminationGracePeriodSeconds must be longer")
	f.StringVar(&m.HealthProbeBindAddress, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	f.StringVar(&m.MetricsBindAddress, "metrics-bind-address", ":8443", "address of the Prometheus metrics; 0 disables them")
	f.BoolVar(&m.MetricsSecure, "metrics-secure", true, "serve the metrics over TLS to authenticated and authorized clients only (a ServiceAccount token allowed to GET /metrics); false serves plain HTTP to anyone")
	f.StringVar(&m.MetricsCertDir, "metrics-cert-dir", "", "directory holding the metrics' tls.crt and tls.key (default: a self-signed certificate made in memory)")
	f.BoolVar(&m.EnableHTTP2, "enable-http2", false, "serve HTTP/2 (off by default)")
	return cmd
}

// unreachable is an error of a request that got no answer from the API
// server (refused, reset, timed out): client-go returns those as
// *url.Error.
func unreachable(err error) bool {
	var u *url.Error
	return errors.As(err, &u)
}
