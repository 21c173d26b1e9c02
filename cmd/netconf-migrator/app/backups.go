package app

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/internal/configdiff"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/migration/runner"
)

type backupsFlags struct {
	backupNamespace, from string
	yes                   bool
	kube                  *kubeFlags
}

// newBackupsCommand is the administrator's view of the open
// replacements: each backup is a NAD deleted (or about to be) to be
// created again, and the only copy of its original until then.
func newBackupsCommand(g *globals) *cobra.Command {
	f := &backupsFlags{kube: newKubeFlags()}
	cmd := &cobra.Command{
		Use: "backups",
		// journals: the command's name up to 0.2, in runbooks and earlier
		// docs.
		Aliases: []string{"journals"},
		Short:   "List and adopt the backups of NADs being replaced",
		Long: `Each backup (a Secret of type ` + string(replace.BackupSecretType) + ` in --backup-namespace) is a NAD that a run
deleted, or was about to delete, to create it again, signed with the key in Secret
` + replace.KeySecretName + `. Runs and the operator act only on backups whose signature verifies.`,
		Args: cobra.NoArgs,
	}
	f.kube.addTo(cmd.PersistentFlags(), false)
	cmd.PersistentFlags().StringVar(&f.backupNamespace, "backup-namespace", DefaultBackupNamespace, "namespace of the backups and their signing key")
	list := &cobra.Command{
		Use:   "list",
		Short: "List every backup, whether its signature verifies and what stands under its NAD's name",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.list(cmd.Context(), g.io.Out)
		},
	}
	adopt := &cobra.Command{
		Use:   "adopt",
		Short: "Sign again the backups whose signature does not verify (the key was lost or replaced), after review",
		Long: `A backup whose signature does not verify is never acted on: its NAD stays missing. That
happens when the signing key Secret was deleted or replaced while backups existed (a run
then stops with exit 3 instead of making a new key). adopt shows each such backup: the
NAD, the step its run reached, what stands under the name now, and the diff between the
original config and what a run would create from it. With --yes it signs them with the
current key (making one if there is none), and the next run or the operator finishes them.
Adopt only backups you trust: anyone who could write Secrets in --backup-namespace could
have written them.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.adopt(cmd.Context(), g.io.Out)
		},
	}
	adopt.Flags().BoolVar(&f.yes, "yes", false, "sign the backups shown; without it, only show them and exit 1")
	restore := &cobra.Command{
		Use:   "restore NAMESPACE/NAME",
		Short: "Have the next run create a NAD again from its backup, when a run could not tell who deleted it",
		Long: `A run killed between saving a NAD's backup and recording its delete leaves the backup at
step Deleting. When the NAD is gone and the backup is older than --resume-window, whether that
run's delete or someone else's removed the NAD cannot be told, and runs leave it alone.
restore shows the backup and what a run creates from it; with --yes it records the delete as
the run's (step Deleted, signed), and the next run or the operator creates the NAD.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.decide(cmd.Context(), g.io.Out, args[0], true)
		},
	}
	restore.Flags().BoolVar(&f.yes, "yes", false, "record the decision; without it, only show the backup and exit 1")
	discard := &cobra.Command{
		Use:   "discard NAMESPACE/NAME",
		Short: "Remove a NAD's backup a person decided not to create again (someone else deleted the NAD, or stands under its name)",
		Long: `discard shows the backup and what stands under the NAD's name, and with --yes removes the
backup: the original it holds is then gone for good.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return f.decide(cmd.Context(), g.io.Out, args[0], false)
		},
	}
	discard.Flags().BoolVar(&f.yes, "yes", false, "remove the backup; without it, only show it and exit 1")
	move := &cobra.Command{
		Use:   "move",
		Short: "Move the backups an earlier version kept beside the webhook into --backup-namespace",
		Long: `Versions up to 0.2 kept their backups, their signing key and their reports in
` + runner.EarlierBackupNamespace + `, beside the webhook's TLS key. They now live in --backup-namespace,
where nothing else does. Runs with the rights to list Secrets there (a cluster administrator's
migrate, the Harvester upgrade pre-hook) move them by themselves; the operator and the Job may
not, and report them instead (the gauge netconf_migrator_earlier_backups_unseen).

move shows each backup found in --from: its NAD, whether the earlier key verifies it, what
stands under its name now, and what a run creates from it. With --yes it takes the run's
Lease, signs every verified backup again under the current key into --backup-namespace,
removes it from --from, and removes the earlier key once nothing of the tool's is left there.
A backup the earlier key does not verify is left where it is and never acted on.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return f.move(cmd.Context(), g.io.Out)
		},
	}
	move.Flags().StringVar(&f.from, "from", runner.EarlierBackupNamespace, "namespace an earlier version kept its backups in")
	move.Flags().BoolVar(&f.yes, "yes", false, "move the backups shown; without it, only show them and exit 1")
	cmd.AddCommand(list, adopt, restore, discard, move)
	return cmd
}

func (f *backupsFlags) client() (client.Client, error) {
	cfg, err := f.kube.restConfig()
	if err != nil {
		return nil, usageError("loading the kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}

// backups returns the backups with the current key, or none when there is
// no key (every signature then fails).
func (f *backupsFlags) backups(ctx context.Context, c client.Client, makeKey bool) (replace.SecretBackups, error) {
	js := replace.SecretBackups{Client: c, Namespace: f.backupNamespace}
	load := replace.LoadKey
	if makeKey {
		load = replace.MakeKey
	}
	key, err := load(ctx, c, f.backupNamespace)
	switch {
	case err == nil:
		js.Key = key
	case errors.Is(err, replace.ErrKeyMissing):
	default:
		return js, fmt.Errorf("reading the backups' signing key: %w", err)
	}
	return js, nil
}

// standing says what stands under j's NAD's name now, as replace reads it.
func standing(ctx context.Context, js replace.SecretBackups, j *replace.Backup) (string, *unstructured.Unstructured, error) {
	st, cur, err := js.Standing(ctx, j)
	if err != nil {
		return "", nil, err
	}
	if st == replace.StandsAnother {
		return st.String() + " (uid " + string(cur.GetUID()) + ")", cur, nil
	}
	return st.String(), cur, nil
}

func (f *backupsFlags) list(ctx context.Context, out io.Writer) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	js, err := f.backups(ctx, c, false)
	if err != nil {
		return err
	}
	cands, err := js.Candidates(ctx)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "BACKUP\tNAD\tSTEP\tRUN\tSIGNED\tUNDER THE NAME NOW")
	for _, cd := range cands {
		if cd.Backup == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\tno: %s\t-\n", cd.Where, cd.Problem)
			continue
		}
		now, _, err := standing(ctx, js, cd.Backup)
		if err != nil {
			return err
		}
		signed := "yes"
		if cd.Problem != "" {
			signed = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cd.Where, cd.Backup.Ref(), cd.Backup.Step, cd.Backup.Run, signed, now)
	}
	return tw.Flush()
}

func (f *backupsFlags) adopt(ctx context.Context, out io.Writer) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	js, err := f.backups(ctx, c, f.yes)
	if err != nil {
		return err
	}
	cands, err := js.Candidates(ctx)
	if err != nil {
		return err
	}
	var adopt []*replace.Backup
	for _, cd := range cands {
		if cd.Problem == "" {
			continue
		}
		if cd.Backup == nil {
			fmt.Fprintf(out, "%s cannot be adopted: %s\n\n", cd.Where, cd.Problem)
			continue
		}
		j := cd.Backup
		now, cur, err := standing(ctx, js, j)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "%s: NAD %s (uid %s), %s by run %s at step %s; under the name now: %s\n", cd.Where, j.Ref(), j.UID(), j.Mode, j.Run, j.Step, now)
		origCfg := showPlan(out, j)
		if cur != nil && cur.GetUID() != j.UID() {
			curCfg, _, _ := unstructured.NestedString(cur.Object, "spec", "config")
			fmt.Fprint(out, configdiff.Unified(j.Ref()+" (original → the NAD standing now)", origCfg, curCfg))
		}
		fmt.Fprintln(out)
		adopt = append(adopt, j)
	}
	if len(adopt) == 0 {
		fmt.Fprintln(out, "No backup needs adopting.")
		return nil
	}
	if !f.yes {
		return &ExitError{Code: ExitAttention, Err: fmt.Errorf("%d backups are not signed with the current key and are not acted on; review them above, then run again with --yes to adopt them", len(adopt))}
	}
	for _, j := range adopt {
		if err := js.Adopt(ctx, j); err != nil {
			return fmt.Errorf("adopting the backup of %s: %w", j.Ref(), err)
		}
		fmt.Fprintf(out, "Adopted the backup of %s: the next run or the operator finishes it.\n", j.Ref())
	}
	return nil
}

// decide restores or discards the signed backup of the NAD ref, after
// showing it.
func (f *backupsFlags) decide(ctx context.Context, out io.Writer, ref string, restore bool) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	js, err := f.backups(ctx, c, false)
	if err != nil {
		return err
	}
	backups, _, err := js.List(ctx)
	if err != nil {
		return err
	}
	var j *replace.Backup
	for _, cand := range backups {
		if cand.Ref() == ref {
			j = cand
		}
	}
	if j == nil {
		return usageError("no backup the current key verifies names NAD %s (netconf-migrator backups list)", ref)
	}
	now, cur, err := standing(ctx, js, j)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s: NAD %s (uid %s), %s by run %s at step %s, written %s; under the name now: %s\n", js.Where(j), j.Ref(), j.UID(), j.Mode, j.Run, j.Step, j.Written.Format(time.RFC3339), now)
	showPlan(out, j)
	if restore && cur != nil {
		return usageError("NAD %s stands (%s): a run creates nothing while it does; discard the backup, or remove that NAD first", ref, now)
	}
	if !f.yes {
		what := "discard"
		if restore {
			what = "restore"
		}
		return &ExitError{Code: ExitAttention, Err: fmt.Errorf("nothing changed; review the backup above, then run backups %s %s --yes", what, ref)}
	}
	if !restore {
		if err := js.Delete(ctx, j); err != nil {
			return err
		}
		fmt.Fprintf(out, "Removed the backup of %s.\n", ref)
		return nil
	}
	// The person vouches that the run's delete removed it.
	if err := js.Restore(ctx, j); err != nil {
		return err
	}
	fmt.Fprintf(out, "Recorded the delete of %s as the run's: the next run or the operator creates it.\n", ref)
	return nil
}

// move moves the backups an earlier version left in f.from, after showing
// them.
func (f *backupsFlags) move(ctx context.Context, out io.Writer) error {
	if f.from == f.backupNamespace {
		return usageError("--from and --backup-namespace are both %s: nothing to move", f.from)
	}
	cfg, err := f.kube.restConfig()
	if err != nil {
		return usageError("loading the kubeconfig: %w", err)
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	key, err := replace.ReadKey(ctx, c, f.from)
	if err != nil {
		return err
	}
	earlier := replace.SecretBackups{Client: c, Namespace: f.from, Key: key}
	cands, err := earlier.Candidates(ctx)
	if err != nil {
		return err
	}
	cms, err := replace.ConfigMapBackups(ctx, c, f.from)
	if err != nil {
		return err
	}
	verified := 0
	for _, cd := range cands {
		if cd.Backup == nil {
			fmt.Fprintf(out, "%s: left where it is: %s\n\n", cd.Where, cd.Problem)
			continue
		}
		j := cd.Backup
		now, _, err := standing(ctx, earlier, j)
		if err != nil {
			return err
		}
		signed := "the earlier key verifies it: moved"
		if cd.Problem != "" {
			signed = "left where it is: " + cd.Problem
		} else {
			verified++
		}
		fmt.Fprintf(out, "%s: NAD %s (uid %s), %s by run %s at step %s, written %s; under the name now: %s; %s\n", cd.Where, j.Ref(), j.UID(), j.Mode, j.Run, j.Step, j.Written.Format(time.RFC3339), now, signed)
		showPlan(out, j)
		fmt.Fprintln(out)
	}
	for _, cm := range cms {
		fmt.Fprintf(out, "%s: NAD %s, kept by a version before backups were Secrets: moved if the earlier key verifies it\n", cm.Where, cm.NAD)
	}
	if len(cands) == 0 && len(cms) == 0 {
		if key == nil {
			fmt.Fprintf(out, "Nothing of netconf-migrator's is left in namespace %s.\n", f.from)
			return nil
		}
		fmt.Fprintf(out, "No backup is left in namespace %s; only the earlier signing key, which signs nothing.\n", f.from)
	}
	if !f.yes {
		return &ExitError{Code: ExitAttention, Err: fmt.Errorf("nothing changed; %d backups in namespace %s are verified and would be moved to %s; review them above, then run backups move --yes", verified+len(cms), f.from, f.backupNamespace)}
	}
	// One run at a time: a run resuming backups while they move would
	// find each one twice.
	held, err := runlock.Acquire(ctx, cfg, f.backupNamespace, "backups-move_"+rand.Text()[:8], 2*runlock.DefaultDuration, 0)
	if err != nil {
		return &ExitError{Code: ExitStopped, Err: fmt.Errorf("taking the run's Lease in %s: %w", f.backupNamespace, err)}
	}
	defer held.Release()
	to, err := f.backups(ctx, c, false)
	if err != nil {
		return err
	}
	if to.Key == nil {
		return &ExitError{Code: ExitStopped, Err: fmt.Errorf("the signing key of %s is missing while backups exist there: adopt them first (netconf-migrator backups adopt)", f.backupNamespace)}
	}
	e, err := replace.MoveEarlier(ctx, c, f.from, to)
	for _, ref := range e.Moved {
		fmt.Fprintf(out, "Moved the backup of %s to %s: the next run or the operator finishes it.\n", ref, f.backupNamespace)
	}
	if e.KeyRemoved {
		fmt.Fprintf(out, "Removed the earlier signing key from namespace %s: nothing of netconf-migrator's is left there.\n", f.from)
	}
	if err != nil {
		return err
	}
	if len(e.Rejected) > 0 {
		return &ExitError{Code: ExitAttention, Err: fmt.Errorf("%d look-alikes of backups were left in namespace %s and are never acted on; remove them once reviewed", len(e.Rejected), f.from)}
	}
	return nil
}

// showPlan prints the diff between j's original config and what a run
// creates from it, and returns the original config.
func showPlan(out io.Writer, j *replace.Backup) string {
	origCfg, _, _ := unstructured.NestedString(j.Original.Object, "spec", "config")
	want, err := migration.Want(j.Mode, j.Original)
	if err != nil {
		fmt.Fprintf(out, "  a run could not create anything from it: %v\n", err)
		return origCfg
	}
	wantCfg, _, _ := unstructured.NestedString(want.Object, "spec", "config")
	fmt.Fprint(out, configdiff.Unified(j.Ref()+" (original → what a run creates)", origCfg, wantCfg))
	return origCfg
}
