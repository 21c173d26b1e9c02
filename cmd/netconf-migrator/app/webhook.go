package app

import (
	"os"
	"time"

	"github.com/spf13/cobra"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/webhooks"
)

func newWebhookCommand(g *globals) *cobra.Command {
	o := webhooks.ServerOptions{}
	var profile, onTruncated, onInvalid, kubeconfig string
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Serve the mutating admission webhook for NetworkAttachmentDefinitions",
		Long: `webhook serves POST ` + webhooks.Path + ` over TLS. It rewrites nested and
double-encoded spec.config payloads into the flat CNI form, warns about configs that
break the validation profile, and denies (by default) configs that cannot be
normalized safely. Register it with failurePolicy Ignore: when it is down, writes
go through unchanged and the migration job fixes them later.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.Logger()
			if err != nil {
				return usageError("%w", err)
			}
			p, err := netconf.ParseProfile(profile)
			if err != nil {
				return usageError("%w", err)
			}
			if o.Handler.OnTruncated, err = webhooks.ParsePolicy(onTruncated); err != nil {
				return usageError("--on-truncated: %w", err)
			}
			if o.Handler.OnInvalid, err = webhooks.ParsePolicy(onInvalid); err != nil {
				return usageError("--on-invalid: %w", err)
			}
			o.Handler.Profile = p
			cfg, err := controllerConfig(kubeconfig, log)
			if err != nil {
				return err
			}
			mgr, err := webhooks.NewManager(cfg, o, log)
			if err != nil {
				return usageError("%w", err)
			}
			log.Info("Starting the webhook", "port", o.Port, "certMode", o.CertMode, "profile", p, "onTruncated", o.Handler.OnTruncated, "onInvalid", o.Handler.OnInvalid)
			if err := mgr.Start(ctrl.SetupSignalHandler()); err != nil {
				return &ExitError{Code: ExitAttention, Err: err}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&kubeconfig, "kubeconfig", "", "kubeconfig file (default: KUBECONFIG, then in-cluster)")
	f.IntVar(&o.Port, "port", 9443, "port the webhook serves on")
	f.StringVar(&o.Host, "host", "", "address the webhook binds to (default all)")
	f.StringVar(&o.CertDir, "cert-dir", "/tmp/k8s-webhook-server/serving-certs", "directory holding tls.crt and tls.key")
	f.StringVar(&o.CertMode, "cert-mode", webhooks.CertModeExternal, "external (certificates in --cert-dir, e.g. from cert-manager) or self-signed (kept in --secret-name and injected into --webhook-config-name)")
	f.StringVar(&o.SecretName, "secret-name", "netconf-migrator-webhook-cert", "Secret holding the self-signed CA and serving certificate")
	f.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "namespace of the Secret and the Service (default $POD_NAMESPACE)")
	f.StringVar(&o.ServiceName, "service-name", "netconf-migrator-webhook", "Service in front of the webhook, named in the certificate")
	f.StringVar(&o.WebhookConfigName, "webhook-config-name", "00-netconf-migrator", "MutatingWebhookConfiguration whose caBundle is injected")
	f.StringSliceVar(&o.ExtraDNSNames, "extra-dns-names", nil, "more DNS names for the self-signed certificate")
	f.BoolVar(&o.EnableHTTP2, "enable-http2", false, "serve HTTP/2 (off by default)")
	f.DurationVar(&o.DrainPeriod, "drain-period", 5*time.Second, "after SIGTERM, keep serving this long, closing each connection after its response, so the API server moves to the other replicas without losing an admission")
	f.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	f.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":8443", "address of the Prometheus metrics; 0 disables them")
	f.BoolVar(&o.MetricsSecure, "metrics-secure", true, "serve the metrics over TLS to authenticated and authorized clients only (a ServiceAccount token allowed to GET /metrics); false serves plain HTTP to anyone")
	f.StringVar(&profile, "profile", string(netconf.ProfileHarvester), "validation profile for warnings: harvester or generic")
	f.StringVar(&onTruncated, "on-truncated", string(webhooks.PolicyWarn), "truncated configs: warn (allow with a warning) or deny")
	f.StringVar(&onInvalid, "on-invalid", string(webhooks.PolicyDeny), "invalid configs: deny or warn (allow with a warning)")
	f.BoolVar(&o.Handler.WarnFlat, "warn-flat", false, "also warn about the validation rules flat configs break (needs the configuration without its matchConditions: config/warn-flat)")
	return cmd
}
