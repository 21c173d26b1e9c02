package app

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/harvester"
	"github.com/harvester/netconf-migrator/internal/logging"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/internal/version"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/migration/runner"
)

// runFlags are the flags migrate and rollback share.
type runFlags struct {
	namespace, selector, dryRun, output, reportPath, profile, terminationPath string
	kube                                                                      *kubeFlags
	pageSize                                                                  int64
	concurrency, replaceConcurrency, burst                                    int
	qps                                                                       float32
	progress, timeout, nadBudget, requestTimeout                              time.Duration
	events                                                                    string
	recreate, backupNamespace, reportConfigMap, reportSecret                  string
	earlierBackupNamespace                                                    string
	replaceFinalizers, replaceWebhooks                                        []string
	replaceBudget, resumeWindow, leaseWait, leaseDuration                     time.Duration
}

func newRunCommand(g *globals, mode migration.Mode) *cobra.Command {
	var f runFlags
	cmd := &cobra.Command{Args: cobra.NoArgs}
	switch mode {
	case migration.ModeMigrate:
		cmd.Use = "migrate"
		cmd.Short = "Rewrite the NetworkAttachmentDefinitions stored in a cluster into the flat CNI form"
		cmd.Long = `migrate lists NetworkAttachmentDefinitions page by page and rewrites nested and
double-encoded spec.config payloads into the flat CNI form. Each write carries the
resourceVersion it was computed from: another writer is never overwritten, the NAD is
read again and recomputed. The original config is kept in the annotation
` + nadv1.AnnotationOriginalConfig + ` for rollback. When an admission webhook refuses the
in-place update (Harvester v1.6+ refuses to flatten a nested NAD), --recreate=auto
replaces the NAD under the same name: a server-side dry-run create first, a backup
Secret in --backup-namespace, a delete conditional on uid and resourceVersion, the
create; the backup stays until the NAD exists again. NADs of Harvester's settings are
never deleted. A second run finds nothing to do; a run that is killed can be started
again, and first finishes any replacement it left half done.

Only one run replaces NADs at a time: migrate and rollback (dry runs aside) hold the
Lease ` + runlock.LeaseName + ` in --backup-namespace for the whole run; a second run
waits up to --lease-wait, then exits 3 naming the holder.

A replacement deletes only a NAD whose finalizers are all known to be removed by their
controllers after a delete (Harvester's, and --replace-finalizer), after a refusal from a
webhook on the allow list (Harvester's network webhook, and --replace-past-webhook); it
waits until the old object is gone, then creates the new one from the object as read.
Its backup is signed: a Secret this tool did not write is reported, never acted on.

A dry run starts whenever this identity may send what the dry run sends; what only the
real run needs (rights on NADs, the backup namespace, the rights there) it reports in the
summary and the report (summary.needs), beside the NADs that need it.

Exit codes: 0 every NAD is clean or was fixed; 1 some NADs failed or need a person
(truncated, invalid, denied), or a dry run found the real run would need what this
identity lacks; 2 usage or preflight error; 3 stopped before every NAD
was visited (--timeout, SIGTERM), another run held the Lease, or the API server kept
failing while the run started: a later run goes on; 4 a NAD deleted to be created
again is missing (still terminating, or its create refused): the report names its
backup, and the next run creates it.`
		cmd.Example = `  # What would change, as a diff, without writing
  netconf-migrator migrate --dry-run=client -o diff

  # Let the API server and every webhook judge the writes, store nothing
  netconf-migrator migrate --dry-run=server --report nads.json

  # Migrate one namespace
  netconf-migrator migrate -n harvester-system`
	case migration.ModeRollback:
		cmd.Use = "rollback"
		cmd.Short = "Restore the configs that migrate rewrote"
		cmd.Long = `rollback restores the annotation ` + nadv1.AnnotationOriginalConfig + ` into spec.config on
every NetworkAttachmentDefinition that migrate rewrote and that nobody changed since,
and removes netconf-migrator's annotations. NADs changed since are reported, never
overwritten.

Exit codes: 0 done; 1 some NADs failed or were changed since; 2 usage or preflight error;
3 stopped before every NAD was visited (--timeout, SIGTERM), or another run held the
Lease; 4 a NAD deleted to be created again is missing (see migrate).`
	}
	cmd.RunE = func(cmd *cobra.Command, _ []string) error { return run(cmd.Context(), g, mode, f) }
	fl := cmd.Flags()
	f.kube = newKubeFlags()
	f.kube.addTo(fl, true)
	fl.StringVarP(&f.selector, "selector", "l", "", "only NADs matching this label selector")
	fl.Int64Var(&f.pageSize, "page-size", 500, "NADs per list request")
	fl.IntVar(&f.concurrency, "concurrency", 4, "NADs written in place at once")
	fl.IntVar(&f.replaceConcurrency, "replace-concurrency", migration.DefaultReplaceConcurrency, "NADs replaced at once, besides --concurrency; replacements are not bound by --qps but by this number and the API server's 429s")
	fl.Float32Var(&f.qps, "qps", 50, "client requests per second to the API server, for NAD requests and for Events each")
	fl.IntVar(&f.burst, "burst", 100, "client burst above --qps, for NAD requests and for Events each")
	fl.StringVar(&f.dryRun, "dry-run", string(migration.DryRunNone), "none; client (send nothing); server (the API server and its webhooks see every write, nothing is stored)")
	fl.StringVarP(&f.output, "output", "o", "", "diff: print a unified diff of spec.config for every change")
	fl.StringVar(&f.reportPath, "report", "", "write the JSON report (same shape as convert --report) to this file")
	fl.StringVar(&f.reportSecret, "report-secret", "", "also keep the JSON report in this Secret (NAMESPACE/NAME, key report.json, type "+string(ReportSecretType)+"), replaced on every run: it quotes configs, so it is kept where only the tool and cluster administrators read")
	fl.StringVar(&f.reportConfigMap, "report-configmap", "", "also keep the JSON report in this ConfigMap (NAMESPACE/NAME, key report.json), replaced on every run; anyone with the view role reads it: prefer --report-secret")
	fl.StringVar(&f.profile, "profile", string(netconf.ProfileHarvester), "validation profile: harvester or generic")
	fl.StringVar(&f.events, "events", string(migration.EventsFailures), "which Kubernetes Events to record on NADs: failures (on the NADs that need a person), all (also on every NAD rewritten or restored: one more API request per NAD) or none; every run but a dry run also records one summary Event on its Lease")
	fl.DurationVar(&f.progress, "progress-interval", 10*time.Second, "how often a progress line is logged")
	fl.DurationVar(&f.timeout, "timeout", 5*time.Minute, "stop the whole run after this long (0: never); NADs not written by then are reported unvisited, exit code 3")
	fl.DurationVar(&f.nadBudget, "nad-retry-budget", time.Minute, "how long one NAD's transient errors (5xx, an unreachable webhook, dropped connections) are retried before it is reported failed")
	fl.DurationVar(&f.requestTimeout, "request-timeout", 30*time.Second, "how long one request to the API server may take")
	fl.StringVar(&f.terminationPath, "termination-message-path", "/dev/termination-log", "where a Pod's termination message goes; written only when the file exists")
	fl.StringVar(&f.recreate, "recreate", string(migration.RecreateAuto), "auto: when an admission webhook refuses the in-place write (Harvester v1.6+ refuses to flatten a nested NAD), delete the NAD and create it again with the same name, after a server-side dry run and a backup; never: only update in place")
	fl.StringVar(&f.backupNamespace, "backup-namespace", DefaultBackupNamespace, "namespace of the run's Lease, of the signed Secrets that back up NADs while they are replaced, and of their signing key;"+
		" every entry point (the upgrade pre-hook, the Jobs, a plain run) uses the same default, so each finishes what another left")
	fl.StringVar(&f.earlierBackupNamespace, "earlier-backup-namespace", runner.EarlierBackupNamespace, "where an earlier version kept its backups (beside the webhook); a run that may list Secrets there moves them into --backup-namespace first")
	fl.StringArrayVar(&f.replaceFinalizers, "replace-finalizer", nil, "FINALIZER=CONTROLLER: a finalizer whose controller removes it after a delete, so a NAD carrying it may be replaced (Harvester's are known); repeatable")
	fl.StringArrayVar(&f.replaceWebhooks, "replace-past-webhook", nil, "an admission webhook (its name as the API server's denial quotes it) whose refusal of an in-place write calls for a replacement, besides Harvester's network webhook; repeatable")
	fl.DurationVar(&f.resumeWindow, "resume-window", replace.DefaultResumeWindow, "a backup a killed run left between saving it and recording its delete is finished only within this long of its writing when its NAD is gone;"+
		" later, whose delete removed the NAD cannot be told, and it is left for a person (netconf-migrator backups restore or discard)")
	fl.DurationVar(&f.replaceBudget, "replace-budget", migration.DefaultReplaceBudget, "how long one replacement may take from its delete on (the wait for finalizers included); it finishes within this even after SIGTERM or --timeout")
	fl.DurationVar(&f.leaseWait, "lease-wait", 2*time.Minute, "how long to wait for another run to release the Lease before exiting 3")
	fl.DurationVar(&f.leaseDuration, "lease-duration", runlock.DefaultDuration, "how long the run's Lease outlives a run that stops renewing it (killed), in whole seconds (a Lease records no less), at most 5m; the run renews it within two thirds of this")
	return cmd
}

func run(ctx context.Context, g *globals, mode migration.Mode, f runFlags) error {
	log, err := g.Logger()
	if err != nil {
		return usageError("%w", err)
	}
	if g.io.OwnsProcess {
		// client-go's leader election logs through klog.
		klog.SetLogger(log)
	}
	dry, err := migration.ParseDryRun(f.dryRun)
	if err != nil {
		return usageError("--dry-run: %w", err)
	}
	if f.output != "" && f.output != "diff" {
		return usageError("unknown output %q (want diff)", f.output)
	}
	profile, err := netconf.ParseProfile(f.profile)
	if err != nil {
		return usageError("%w", err)
	}
	sel, err := labels.Parse(f.selector)
	if err != nil {
		return usageError("--selector: %w", err)
	}
	policy, err := migration.ParseEventPolicy(f.events)
	if err != nil {
		return usageError("--events: %w", err)
	}
	recreate, err := migration.ParseRecreate(f.recreate)
	if err != nil {
		return usageError("--recreate: %w", err)
	}
	cmRef, err := parseObjectRef(f.reportConfigMap)
	if err != nil {
		return usageError("--report-configmap: %w", err)
	}
	secretRef, err := parseObjectRef(f.reportSecret)
	if err != nil {
		return usageError("--report-secret: %w", err)
	}
	if f.pageSize <= 0 || f.concurrency <= 0 || f.replaceConcurrency <= 0 || f.qps <= 0 || f.burst <= 0 || f.nadBudget <= 0 || f.requestTimeout <= 0 || f.timeout < 0 || f.replaceBudget <= 0 || f.leaseWait < 0 {
		return usageError("--page-size, --concurrency, --replace-concurrency, --qps, --burst, --nad-retry-budget, --request-timeout and --replace-budget must be positive, --timeout and --lease-wait not negative")
	}
	if err := runlock.ValidDuration(f.leaseDuration); err != nil {
		return usageError("--lease-duration: %w", err)
	}
	finalizers := harvester.Finalizers()
	for _, kv := range f.replaceFinalizers {
		name, owner, ok := strings.Cut(kv, "=")
		if !ok || name == "" || owner == "" {
			return usageError("--replace-finalizer: %q is not FINALIZER=CONTROLLER", kv)
		}
		finalizers[name] = owner
	}
	webhooks := append(harvester.Webhooks(), f.replaceWebhooks...)
	if f.namespace, err = f.kube.namespace(); err != nil {
		return err
	}
	cfg, err := f.kube.restConfig()
	if err != nil {
		return usageError("loading the kubeconfig: %w", err)
	}
	cfg.QPS, cfg.Burst = f.qps, f.burst
	cfg.Timeout = f.requestTimeout
	cfg.UserAgent = "netconf-migrator/" + version.Version
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stop()

	needs, err := preflight(ctx, cfg, preflightScope{
		Namespace: f.namespace, Writes: dry != migration.DryRunClient, Stores: dry == migration.DryRunNone,
		Replaces: recreate == migration.RecreateAuto, BackupNamespace: f.backupNamespace,
	}, f.nadBudget)
	if err != nil {
		// A Job's Pod status then says why the run never started. An API
		// server that kept failing is not a usage error: exit 3 lets the
		// Job try again.
		code := ExitUsage
		var pe *preflightError
		if errors.As(err, &pe) && pe.Transient {
			code = ExitStopped
		}
		writeTermination(f.terminationPath, report.New(), code, err)
		return &ExitError{Code: code, Err: err}
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return err
	}
	if err := nadv1.AddToScheme(scheme); err != nil {
		return err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return usageError("creating a client: %w", err)
	}
	host, _ := os.Hostname()
	// Events go out from their own queue, so no worker waits for one.
	events := migration.NewQueuedEvents(migration.ClientEvents{Client: c, Host: host, OnError: func(err error) {
		log.V(logging.Debug).Info("Recording an event failed", logging.KeyReason, err.Error())
	}}, 2, 1024)
	// One run at a time: the Lease is held until the report is stored.
	started, err := runner.Start(ctx, runner.Config{
		REST: cfg, Client: c, Log: log, Identity: fmt.Sprintf("%s_%s", host, rand.Text()[:8]),
		BackupNamespace: f.backupNamespace, EarlierBackupNamespace: f.earlierBackupNamespace, LeaseWait: f.leaseWait, LeaseDuration: f.leaseDuration,
		Finalizers: finalizers, Webhooks: webhooks, ReplaceBudget: f.replaceBudget, ResumeWindow: f.resumeWindow, KeyBudget: f.nadBudget,
		Events: policy.Filter(events),
	}, migration.Options{
		Mode: mode, Namespace: f.namespace, Selector: sel, PageSize: f.pageSize, Concurrency: f.concurrency, ReplaceConcurrency: f.replaceConcurrency,
		DryRun: dry, Profile: profile, ProgressInterval: f.progress, Recreate: recreate,
		Timeout: f.timeout, NADBudget: f.nadBudget,
	})
	if err != nil {
		code := ExitUsage
		if runner.IsTransient(err) {
			code = ExitStopped
		}
		writeTermination(f.terminationPath, report.New(), code, err)
		return &ExitError{Code: code, Err: err}
	}
	defer started.Release()
	ctx = started.Context
	m := started.Migrator
	if f.output == "diff" {
		m.Opts.Diff = g.io.Out
	}
	start := time.Now()
	log.Info("Starting", "mode", mode, "namespace", f.namespace, "selector", f.selector, "dryRun", dry, "pageSize", f.pageSize, "concurrency", f.concurrency, "replaceConcurrency", f.replaceConcurrency)
	rep, runErr := m.Run(ctx)
	if dry != migration.DryRunNone {
		// Exits 1 when the real run would lack something that what this
		// run found needs.
		rep.SetNeeds(needs)
	}
	if dropped := events.Flush(eventsFlushBound); dropped > 0 {
		log.Info("Dropped Events still queued when the flush bound ran out", logging.KeyCount, dropped, "bound", eventsFlushBound.String())
	}
	if dry == migration.DryRunNone && policy != migration.EventsNone {
		evCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		if err := migration.RecordSummary(evCtx, c, f.backupNamespace, runlock.LeaseName, host, mode, rep); err != nil {
			log.Info("Recording the run's summary Event failed", logging.KeyReason, err.Error())
		}
		cancel()
	}
	rep.WriteSummary(g.io.Err)
	code := ExitOK
	switch {
	case rep.Count(report.ActionMissing) > 0:
		code = ExitMissing
	case errors.Is(runErr, migration.ErrStopped), errors.Is(runErr, migration.ErrStartup):
		code = ExitStopped
	case runErr != nil || rep.NeedsAttention():
		code = ExitAttention
	}
	log.Info("Finished", logging.KeyDuration, time.Since(start).Round(time.Millisecond).String(), logging.KeyCount, rep.Summary.Total, "exitCode", code)
	var errs []error
	if cmRef.Name != "" {
		// Stored even after SIGTERM, within a bound: the report is what a
		// stopped run leaves for the next one and for people.
		cmCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := writeReportConfigMap(cmCtx, c, cmRef, rep)
		cancel()
		if err != nil {
			errs = append(errs, err)
		} else {
			log.Info("Stored the report", "configMap", cmRef.String())
		}
	}
	if secretRef.Name != "" {
		secCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		err := writeReportSecret(secCtx, c, secretRef, rep)
		cancel()
		if err != nil {
			errs = append(errs, err)
		} else {
			log.Info("Stored the report", "secret", secretRef.String())
		}
	}
	if f.reportPath != "" {
		if err := rep.WriteFile(f.reportPath); err != nil {
			errs = append(errs, err)
		}
	}
	writeTermination(f.terminationPath, rep, code, runErr)
	if runErr != nil {
		errs = append(errs, runErr)
	}
	if code != ExitOK || len(errs) > 0 {
		return &ExitError{Code: max(code, ExitAttention), Err: errors.Join(errs...)}
	}
	return nil
}

// eventsFlushBound is how long a finished run waits for its queued Events.
const eventsFlushBound = 10 * time.Second

// parseObjectRef reads NAMESPACE/NAME; "" is no object.
func parseObjectRef(s string) (types.NamespacedName, error) {
	if s == "" {
		return types.NamespacedName{}, nil
	}
	ns, name, ok := strings.Cut(s, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return types.NamespacedName{}, fmt.Errorf("%q is not NAMESPACE/NAME", s)
	}
	return types.NamespacedName{Namespace: ns, Name: name}, nil
}

// ReportSecretType marks the Secrets holding reports (a run's, a
// NADMigration's).
const ReportSecretType = corev1.SecretType(report.SecretType)

// writeReportSecret keeps the report where it outlives a Job's Pod and only
// the tool and cluster administrators read it: one Secret of our own type,
// replaced on every run. A Secret of another type under that name is left
// alone.
func writeReportSecret(ctx context.Context, c client.Client, ref types.NamespacedName, rep *report.Report) error {
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the report: %w", err)
	}
	sec := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name}}
	_, err = controllerutil.CreateOrUpdate(ctx, c, sec, func() error {
		if sec.Type != "" && sec.Type != ReportSecretType {
			return fmt.Errorf("the Secret %s has type %s, not %s: it is not netconf-migrator's report", ref, sec.Type, ReportSecretType)
		}
		sec.Type = ReportSecretType
		if sec.Labels == nil {
			sec.Labels = map[string]string{}
		}
		sec.Labels["app.kubernetes.io/name"] = "netconf-migrator"
		sec.Data = map[string][]byte{report.SecretKey: append(raw, '\n')}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing the report in Secret %s: %w", ref, err)
	}
	return nil
}

// writeReportConfigMap keeps the report where a Job's report outlives its
// Pod and support bundles find it: one ConfigMap, replaced on every run.
func writeReportConfigMap(ctx context.Context, c client.Client, ref types.NamespacedName, rep *report.Report) error {
	raw, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the report: %w", err)
	}
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: ref.Namespace, Name: ref.Name}}
	_, err = controllerutil.CreateOrUpdate(ctx, c, cm, func() error {
		if cm.Labels == nil {
			cm.Labels = map[string]string{}
		}
		cm.Labels["app.kubernetes.io/name"] = "netconf-migrator"
		cm.Data = map[string]string{"report.json": string(raw) + "\n"}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storing the report in ConfigMap %s: %w", ref, err)
	}
	return nil
}

// DefaultBackupNamespace is where every entry point keeps its Lease and backups.
const DefaultBackupNamespace = runner.DefaultBackupNamespace

// writeTermination leaves a short JSON summary where Kubernetes reads a
// container's termination message, when running in a Pod.
func writeTermination(path string, rep *report.Report, code int, runErr error) {
	if path == "" {
		return
	}
	if _, err := os.Stat(path); err != nil {
		return
	}
	msg := map[string]any{"total": rep.Summary.Total, "actions": rep.Summary.Actions, "exitCode": code}
	if runErr != nil {
		e, cut := logging.Cut(runErr.Error(), 1024) // the kubelet keeps 4096 bytes of the message
		if cut > 0 {
			e += "..."
		}
		msg["error"] = e
	}
	b, err := json.Marshal(msg)
	if err != nil || len(b) > 4096 {
		b = fmt.Appendf(nil, `{"exitCode":%d}`, code)
	}
	_ = os.WriteFile(path, b, 0o644)
}
