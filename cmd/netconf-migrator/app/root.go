// Package app wires the netconf-migrator commands. Each command lives in its
// own file and NewRootCommand adds them, in one place; the work is done in
// the packages it calls.
package app

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/internal/version"
	"github.com/harvester/netconf-migrator/migration"
)

// Exit codes shared by every command.
const (
	ExitOK        = 0
	ExitAttention = 1 // something needs a person: a check failed, NADs failed or are truncated/invalid
	ExitUsage     = 2 // usage errors, unreadable input, failed preflight
	ExitStopped   = 3 // migrate/rollback stopped before visiting every NAD (--timeout, SIGTERM), another run held the Lease, or the API server kept failing at start
	ExitMissing   = 4 // a NAD the run deleted to create it again does not exist yet; its backup is named in the report, and the next run goes on
)

// ExitError carries an exit code out of a command.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("exit %d", e.Code)
	}
	return e.Err.Error()
}
func (e *ExitError) Unwrap() error { return e.Err }

// usageError marks an error as exit code 2.
func usageError(format string, args ...any) error {
	return &ExitError{Code: ExitUsage, Err: fmt.Errorf(format, args...)}
}

// IO bundles the streams a command uses, so tests can drive commands in-process.
type IO struct {
	In       io.Reader
	Out, Err io.Writer
	// OwnsProcess is set by main: the command may then set process-wide
	// state (klog's logger, which client-go's leader election logs
	// through). Commands run in-process by tests share the process with
	// other goroutines reading that state, so they leave it alone.
	OwnsProcess bool
}

// globals are the flags every command shares.
type globals struct {
	log logging.Options
	io  IO
}

// Logger builds the configured logger on the error stream.
func (g *globals) Logger() (logr.Logger, error) {
	return logging.New(g.io.Err, g.log)
}

// NewRootCommand builds the command tree.
func NewRootCommand(streams IO) *cobra.Command {
	g := &globals{io: streams}
	root := &cobra.Command{
		Use:           "netconf-migrator",
		Short:         "Normalize CNI NetConf payloads in NetworkAttachmentDefinitions",
		Long:          "netconf-migrator rewrites legacy nested and double-encoded CNI configs in NetworkAttachmentDefinitions into the flat CNI form: as a mutating webhook, as a migration of stored objects, and offline on manifest files.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetIn(streams.In)
	root.SetOut(streams.Out)
	root.SetErr(streams.Err)
	root.PersistentFlags().StringVar(&g.log.Format, "log-format", "json", "log format: json or console")
	root.PersistentFlags().IntVarP(&g.log.Verbosity, "v", "v", logging.Info, "log verbosity (1 shows configs and diffs)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &ExitError{Code: ExitUsage, Err: err} })
	root.AddCommand(
		newConvertCommand(g),
		newRunCommand(g, migration.ModeMigrate),
		newRunCommand(g, migration.ModeRollback),
		newWebhookCommand(g),
		newOperatorCommand(g),
		newBackupsCommand(g),
		newCheckWebhookCommand(),
		newChartRepoCommand(g),
	)
	root.AddCommand(&cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := fmt.Fprintln(cmd.OutOrStdout(), version.String())
			return err
		},
	})
	return root
}

// Execute runs the command line and returns the process exit code.
func Execute(args []string, in io.Reader, out, errOut io.Writer) int {
	return ExecuteIO(args, IO{In: in, Out: out, Err: errOut})
}

// ExecuteIO is Execute with the streams (and OwnsProcess) given.
func ExecuteIO(args []string, streams IO) int {
	errOut := streams.Err
	root := NewRootCommand(streams)
	root.SetArgs(args)
	err := root.Execute()
	if err == nil {
		return ExitOK
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		if ee.Err != nil {
			fmt.Fprintln(errOut, "Error:", ee.Err)
		}
		return ee.Code
	}
	fmt.Fprintln(errOut, "Error:", err)
	// cobra's own argument and unknown-command errors are usage errors.
	return ExitUsage
}

// controllerConfig is the cluster config of the long-running commands
// (webhook, operator): the flag, else KUBECONFIG, else in-cluster, as
// controller-runtime resolves it; controller-runtime and the libraries
// below it log through log from then on.
func controllerConfig(kubeconfig string, log logr.Logger) (*rest.Config, error) {
	if kubeconfig != "" {
		if err := os.Setenv("KUBECONFIG", kubeconfig); err != nil {
			return nil, usageError("%w", err)
		}
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return nil, usageError("loading the kubeconfig: %w", err)
	}
	ctrl.SetLogger(log)
	return cfg, nil
}
