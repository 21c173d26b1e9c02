package app

import (
	"fmt"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/harvester/netconf-migrator/migration/detect"
	"github.com/harvester/netconf-migrator/migration/operator"
	"github.com/harvester/netconf-migrator/migration/runner"
	"github.com/harvester/netconf-migrator/webhooks"
)

// operatorFlags shape the controllers the webhook's Deployment runs.
type operatorFlags struct {
	enabled          bool
	fix              string
	leaderElectionNS string
	o                operator.Options
}

func (f *operatorFlags) register(fl *pflag.FlagSet) {
	fl.BoolVar(&f.enabled, "operator", false, "also run the operator on the elected replica: NADMigrations, and the watch that counts, warns on and fixes NADs stored in a legacy form")
	fl.StringVar(&f.fix, "fix-legacy", string(detect.FixInPlace), "what the operator does with a NAD it finds stored in a legacy form: Off (count and warn), InPlace (rewrite it in place where admission allows, never delete) or Replace (also replace it, as migrate --recreate=auto does)")
	fl.StringVar(&f.o.BackupNamespace, "backup-namespace", runner.DefaultBackupNamespace, "namespace of the run Lease, the signed backups and the NADMigration reports (the one migrate uses)")
	fl.StringVar(&f.leaderElectionNS, "leader-election-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the operator's leader-election Lease (default $POD_NAMESPACE)")
	fl.DurationVar(&f.o.ReadinessInterval, "readiness-interval", time.Minute, "how often the operator counts the KubeVirt VMs attached to legacy NADs")
	fl.IntVar(&f.o.FlapLimit, "flap-limit", 3, "a NAD fixed this many times within --flap-window and set back again is left alone and reported")
	fl.DurationVar(&f.o.FlapWindow, "flap-window", 10*time.Minute, "see --flap-limit")
	fl.DurationVar(&f.o.LeaseDuration, "lease-duration", 15*time.Second, "how long the run Lease outlives an operator that stops renewing it")
}

// serverOptions adds what the operator needs to the manager: its types, a
// cache that trims NADs, leader election.
func (f *operatorFlags) serverOptions(o *webhooks.ServerOptions) error {
	if !f.enabled {
		return nil
	}
	fix, err := detect.ParseFix(f.fix)
	if err != nil {
		return fmt.Errorf("--fix-legacy: %w", err)
	}
	f.o.Fix = fix
	if f.leaderElectionNS == "" {
		return fmt.Errorf("--operator needs --leader-election-namespace (or POD_NAMESPACE)")
	}
	o.AddToScheme = append(o.AddToScheme, operator.AddToScheme)
	o.LeaderElection = true
	o.LeaderElectionID = operator.LeaderElectionID
	o.LeaderElectionNamespace = f.leaderElectionNS
	o.Cache = operator.CacheOptions()
	return nil
}
