package app

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
)

// probeConfig is a nested payload as an old client writes it; the webhook
// stores it flat.
const probeConfig = `{"cniVersion":"0.3.1","type":"bridge","NetConf":{"name":"netconf-migrator-check"},"bridge":"netconf-migrator-check-br"}`

// newCheckWebhookCommand asks the API server, with a server-side dry run
// (nothing is stored), to create a NAD in a legacy form, and checks that
// what would be stored is flat: the webhook is registered, reachable and
// answering. The chart's `helm test` runs it.
func newCheckWebhookCommand() *cobra.Command {
	kube := newKubeFlags()
	var namespace string
	cmd := &cobra.Command{
		Use:   "check-webhook",
		Short: "Check, with a server-side dry run, that the API server calls the webhook and it flattens a legacy NAD",
		Long: `check-webhook sends a dry-run create of a NetworkAttachmentDefinition whose spec.config is in
the legacy nested form to the API server and checks that what would be stored is flat: the
webhook is registered, the API server reaches it, and it rewrites. Nothing is stored.
Exit codes: 0 it answered; 1 the NAD would be stored as sent (the webhook did not rewrite it:
down, unreachable, or not registered for the namespace); 2 usage or the request failed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := kube.restConfig()
			if err != nil {
				return usageError("loading the kubeconfig: %w", err)
			}
			scheme := runtime.NewScheme()
			if err := nadv1.AddToScheme(scheme); err != nil {
				return err
			}
			c, err := client.New(cfg, client.Options{Scheme: scheme})
			if err != nil {
				return err
			}
			return checkWebhook(cmd.Context(), c, namespace, cmd.OutOrStdout())
		},
	}
	kube.addTo(cmd.Flags(), false)
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "default", "where the dry-run NAD would be created (one the webhook intercepts)")
	return cmd
}

func checkWebhook(ctx context.Context, c client.Client, namespace string, out interface{ Write([]byte) (int, error) }) error {
	nad := &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, GenerateName: "netconf-migrator-check-"},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: probeConfig},
	}
	if err := c.Create(ctx, nad, client.DryRunAll); err != nil {
		return &ExitError{Code: ExitUsage, Err: fmt.Errorf("a dry-run create of a NAD in namespace %s: %w", namespace, err)}
	}
	if form := netconf.Normalize([]byte(nad.Spec.Config)).Form; form != netconf.FormFlat {
		return &ExitError{Code: ExitAttention, Err: fmt.Errorf("the API server would store a NAD in namespace %s in the %s form it was sent in: the webhook did not rewrite it (down, unreachable, or not registered for this namespace)", namespace, form)}
	}
	_, err := fmt.Fprintf(out, "The webhook answered: a nested NAD in namespace %s would be stored flat (%s).\n", namespace, nad.Annotations[nadv1.AnnotationNormalizedFrom])
	return err
}
