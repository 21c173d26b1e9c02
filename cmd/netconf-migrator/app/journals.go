package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/internal/configdiff"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/migration/replace"
)

type journalsFlags struct {
	kubeconfig, backupNamespace string
	yes                         bool
}

// newJournalsCommand is the administrator's view of the open
// replacements: each journal is a NAD deleted (or about to be) to be
// created again, and the only copy of its original until then.
func newJournalsCommand(g *globals) *cobra.Command {
	f := &journalsFlags{}
	cmd := &cobra.Command{
		Use:   "journals",
		Short: "List and adopt the backups of NADs being replaced",
		Long: `Each backup (a Secret of type ` + string(replace.JournalSecretType) + ` in --backup-namespace) is a NAD that a run
deleted, or was about to delete, to create it again, signed with the key in Secret
` + replace.KeySecretName + `. Runs and the operator act only on backups whose signature verifies.`,
		Args: cobra.NoArgs,
	}
	cmd.PersistentFlags().StringVar(&f.kubeconfig, "kubeconfig", "", "kubeconfig file (default: KUBECONFIG, ~/.kube/config, then in-cluster)")
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
	cmd.AddCommand(list, adopt, restore, discard)
	return cmd
}

func (f *journalsFlags) client() (client.Client, error) {
	cfg, err := loadConfig(f.kubeconfig)
	if err != nil {
		return nil, usageError("loading the kubeconfig: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	return client.New(cfg, client.Options{Scheme: scheme})
}

// journals returns the backups with the current key, or none when there is
// no key (every signature then fails).
func (f *journalsFlags) journals(ctx context.Context, c client.Client, makeKey bool) (replace.SecretJournals, error) {
	js := replace.SecretJournals{Client: c, Namespace: f.backupNamespace}
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

// standing says what stands under j's NAD's name now.
func standing(ctx context.Context, c client.Client, j *replace.Journal) (string, *unstructured.Unstructured, error) {
	cur := &unstructured.Unstructured{}
	cur.SetAPIVersion("k8s.cni.cncf.io/v1")
	cur.SetKind("NetworkAttachmentDefinition")
	err := c.Get(ctx, client.ObjectKey{Namespace: j.Original.GetNamespace(), Name: j.Original.GetName()}, cur)
	switch {
	case apierrors.IsNotFound(err):
		return "missing", nil, nil
	case err != nil:
		return "", nil, fmt.Errorf("reading %s: %w", j.Ref(), err)
	case cur.GetUID() == j.UID() && cur.GetDeletionTimestamp() != nil:
		return "terminating", cur, nil
	case cur.GetUID() == j.UID():
		return "not deleted", cur, nil
	}
	return "another NAD (uid " + string(cur.GetUID()) + ")", cur, nil
}

func (f *journalsFlags) list(ctx context.Context, out io.Writer) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	js, err := f.journals(ctx, c, false)
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
		if cd.Journal == nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\tno: %s\t-\n", cd.Where, cd.Problem)
			continue
		}
		now, _, err := standing(ctx, c, cd.Journal)
		if err != nil {
			return err
		}
		signed := "yes"
		if cd.Problem != "" {
			signed = "no"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", cd.Where, cd.Journal.Ref(), cd.Journal.Step, cd.Journal.Run, signed, now)
	}
	return tw.Flush()
}

func (f *journalsFlags) adopt(ctx context.Context, out io.Writer) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	js, err := f.journals(ctx, c, f.yes)
	if err != nil {
		return err
	}
	cands, err := js.Candidates(ctx)
	if err != nil {
		return err
	}
	var adopt []*replace.Journal
	for _, cd := range cands {
		if cd.Problem == "" {
			continue
		}
		if cd.Journal == nil {
			fmt.Fprintf(out, "%s cannot be adopted: %s\n\n", cd.Where, cd.Problem)
			continue
		}
		j := cd.Journal
		now, cur, err := standing(ctx, c, j)
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
func (f *journalsFlags) decide(ctx context.Context, out io.Writer, ref string, restore bool) error {
	c, err := f.client()
	if err != nil {
		return err
	}
	js, err := f.journals(ctx, c, false)
	if err != nil {
		return err
	}
	journals, _, err := js.List(ctx)
	if err != nil {
		return err
	}
	var j *replace.Journal
	for _, cand := range journals {
		if cand.Ref() == ref {
			j = cand
		}
	}
	if j == nil {
		return usageError("no backup the current key verifies names NAD %s (netconf-migrator journals list)", ref)
	}
	now, cur, err := standing(ctx, c, j)
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
		return &ExitError{Code: ExitAttention, Err: fmt.Errorf("nothing changed; review the backup above, then run journals %s %s --yes", what, ref)}
	}
	if !restore {
		if err := js.Delete(ctx, j); err != nil {
			return err
		}
		fmt.Fprintf(out, "Removed the backup of %s.\n", ref)
		return nil
	}
	// The person vouches that the run's delete removed it.
	j.Step = replace.StepDeleted
	if err := js.Save(ctx, j); err != nil {
		return err
	}
	fmt.Fprintf(out, "Recorded the delete of %s as the run's: the next run or the operator creates it.\n", ref)
	return nil
}

// showPlan prints the diff between j's original config and what a run
// creates from it, and returns the original config.
func showPlan(out io.Writer, j *replace.Journal) string {
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
