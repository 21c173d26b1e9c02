// Command demo is `make demo`: netconf-migrator's main job, keeping a
// cluster's NADs right, shown on a throw-away control plane (the etcd and
// kube-apiserver the tests use) beside stand-ins of a Harvester release's
// network webhooks. `make demo KUBECONFIG=...` (which sets
// NETCONF_MIGRATOR_DEMO_KUBECONFIG) runs only the read-only steps against
// that cluster; a KUBECONFIG merely exported in the shell is not used.
//
// Each step prints one numbered line with its outcome; a step that fails
// stops the demo with its error. Everything it starts is stopped on exit
// and on Ctrl-C.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/yaml"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

const ns = "demo"

// The configs the demo writes: one of each form a cluster meets.
var forms = []struct{ name, config string }{
	{"flat", `{"cniVersion":"0.3.1","name":"flat","type":"bridge","bridge":"mgmt-br","promiscMode":true,"vlan":100,"ipam":{}}`},
	{"nested", `{"NetConf":{"cniVersion":"0.3.1","name":"nested","type":"bridge","ipam":{}},"bridge":"mgmt-br","promiscMode":true,"vlan":101}`},
	{"double-encoded", strconv.Quote(`{"cniVersion":"0.3.1","name":"double-encoded","type":"bridge","bridge":"mgmt-br","promiscMode":true,"vlan":102,"ipam":{}}`)},
	{"truncated", `{"cniVersion":"0.3.1","ipam":{},"name":"truncated","type":"bridge"}`},
}

type demo struct {
	step    int
	bin     string
	kubecfg string
	out     io.Writer
}

// do runs one numbered step and stops the demo when it fails.
func (d *demo) do(what string, f func() (string, error)) {
	d.step++
	fmt.Fprintf(d.out, "\n%2d. %s\n", d.step, what)
	outcome, err := f()
	if err != nil {
		fmt.Fprintf(d.out, "    FAILED: %v\n", err)
		panic(stop{err})
	}
	fmt.Fprintf(d.out, "    ok: %s\n", outcome)
}

type stop struct{ err error }

// run runs the binary or kubectl against the cluster, echoing its output
// indented (but the JSON log lines); exit codes in ok count as success.
func (d *demo) run(ok []int, name string, args ...string) (string, int, error) {
	return d.runStdin(nil, ok, name, args...)
}

func main() {
	// controller-runtime's clients (the control plane's, the stand-ins')
	// log through a global logger; unset, its first use prints a stack
	// trace. The demo shows outcomes, not their logs.
	ctrllog.SetLogger(logr.Discard())
	klog.SetLogger(logr.Discard())
	// The tooling module sits in hack/; the demo builds and reads the
	// product from the repository's root.
	if root, err := testenv.RepoRoot(); err != nil || os.Chdir(root) != nil {
		fmt.Fprintln(os.Stderr, "demo: cannot find the repository's root:", err)
		os.Exit(1)
	}
	d := &demo{out: os.Stdout}
	var cleanups []func()
	cleanup := sync.OnceFunc(func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	})
	ctx := context.Background()
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-signals
		fmt.Fprintln(os.Stderr, "\ninterrupted: stopping everything the demo started")
		cleanup()
		os.Exit(130)
	}()
	defer func() {
		r := recover()
		cleanup()
		if s, ok := r.(stop); ok {
			fmt.Fprintln(os.Stderr, "demo stopped:", s.err)
			os.Exit(1)
		} else if r != nil {
			panic(r)
		}
	}()

	d.do("Building netconf-migrator", func() (string, error) {
		d.bin = filepath.Join(os.TempDir(), "netconf-migrator-demo")
		cmd := exec.Command("go", "build", "-o", d.bin, "./cmd/netconf-migrator")
		// The default build, which shares the compiled packages of the
		// tests (and of the kube-apiserver build); the image's static build
		// is make image's.
		out, err := cmd.CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("%v: %s", err, out)
		}
		return d.bin, nil
	})

	if kc := os.Getenv("NETCONF_MIGRATOR_DEMO_KUBECONFIG"); kc != "" {
		d.kubecfg = kc
		fmt.Fprintf(d.out, "\nmake demo KUBECONFIG=%s: only the read-only steps run against that cluster.\n", kc)
		d.readOnly()
		return
	}

	release, err := harvester.ParseRelease(envOr("DEMO_HARVESTER", string(harvester.V15)))
	if err != nil {
		panic(stop{err})
	}
	var env *testenv.Env
	d.do("Starting a throw-away control plane (etcd and kube-apiserver; `make test-assets` built kube-apiserver on the first run, about 15 minutes)", func() (string, error) {
		var err error
		crd, err := testenv.LoadNADMigrationCRD(".")
		if err != nil {
			return "", err
		}
		env, err = testenv.Start(testenv.Options{Webhooks: &envtest.WebhookInstallOptions{}, CRDs: append(harvester.CRDs(), crd)})
		if err != nil {
			return "", err
		}
		cleanups = append(cleanups, func() { _ = env.Stop() })
		d.kubecfg = env.KubeconfigPath
		return "API server at " + env.Config.Host + ", the NAD and NADMigration CRDs installed", nil
	})
	var h *harvester.StandIns
	d.do(fmt.Sprintf("Starting stand-ins of Harvester %s's network webhooks (network-controller-harvester %s)", release, release.Tag()), func() (string, error) {
		if err := env.Client.Create(ctx, harvester.NewClusterNetwork("mgmt", 0)); err != nil {
			return "", err
		}
		var err error
		if h, err = harvester.Start(ctx, env, release); err != nil {
			return "", err
		}
		cleanups = append(cleanups, func() { _ = h.Remove(context.Background()) })
		if err := env.CreateNamespace(ctx, ns, map[string]string{harvester.NamespaceLabel: "true"}); err != nil {
			return "", err
		}
		return "validator and mutator registered, failurePolicy as Harvester's", nil
	})
	d.do("Running the webhook and the operator as local processes (`netconf-migrator webhook` and `netconf-migrator operator`), with the shipped configuration and self-signed certificates", func() (string, error) {
		// Registered as soon as the process starts, so Ctrl-C stops it too.
		return "serving; the API server calls it for configs that may need it, and the operator watches every NAD", d.startWebhook(ctx, env, func(stop func()) { cleanups = append(cleanups, stop) })
	})
	d.do("Creating a NAD of each form through kubectl: the webhook rewrites the legacy ones, the warnings show", func() (string, error) {
		created := 0
		for _, f := range forms {
			out, _, err := d.runStdin(manifest(f.name, f.config, nil), []int{0, 1}, "kubectl", "apply", "-f", "-")
			if err != nil {
				return "", err
			}
			if strings.Contains(out, "created") {
				created++
			}
		}
		return fmt.Sprintf("%d of %d created: Harvester %s's validator refuses the truncated one (no bridge), in its own words", created, len(forms), release), nil
	})
	d.do("Storing legacy NADs behind the webhooks' back, as a cluster being upgraded holds them", func() (string, error) {
		var err error
		h.Pause(func() {
			for _, f := range forms[1:3] {
				n := &nadv1.NetworkAttachmentDefinition{}
				n.Namespace, n.Name = ns, "stored-"+f.name
				n.Labels = map[string]string{nadv1.LabelSkip: "true"} // our webhook looks away
				n.Spec.Config = f.config
				if err = env.Client.Create(ctx, n); err != nil {
					return
				}
				// Harvester's controllers write their finalizers meanwhile:
				// a patch drops our label whatever was written since.
				unskip := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"labels":{"`+nadv1.LabelSkip+`":null}}}`))
				if err = env.Client.Patch(ctx, n, unskip); err != nil {
					return
				}
			}
		})
		return "stored-nested and stored-double-encoded", err
	})
	d.do("The operator found them at once: it counts them, warns once on each, and rewrites in place what Harvester's webhooks allow (--fix-legacy=InPlace)", func() (string, error) {
		err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
			n := &nadv1.NetworkAttachmentDefinition{}
			if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "stored-nested"}, n); err != nil {
				return false, err
			}
			return n.Annotations[nadv1.AnnotationNormalizedFrom] != "", nil
		})
		if err != nil {
			return "", fmt.Errorf("the operator did not fix stored-nested: %w", err)
		}
		_, _, err = d.run([]int{0}, "kubectl", "get", "events", "-n", ns, "--field-selector", "type=Warning", "-o", "custom-columns=NAD:.involvedObject.name,REASON:.reason,MESSAGE:.message")
		return "stored-nested is flat; nobody ran anything", err
	})
	d.readOnly()
	d.do("Migrating the rest through the operator: `kubectl create` a NADMigration, then `kubectl wait` for its condition", func() (string, error) {
		m := []byte("apiVersion: netconf-migrator.harvesterhci.io/v1alpha1\nkind: NADMigration\nmetadata:\n  name: demo\nspec:\n  namespaces: [" + ns + "]\n  recreate: Auto\n")
		if _, _, err := d.runStdin(m, []int{0}, "kubectl", "create", "-f", "-"); err != nil {
			return "", err
		}
		if _, _, err := d.run([]int{0}, "kubectl", "wait", "--for=condition=Reconciling=False", "nadmigration/demo", "--timeout=3m"); err != nil {
			return "", err
		}
		_, _, err := d.run([]int{0}, "kubectl", "get", "nadmigrations")
		if err != nil {
			return "", err
		}
		_, _, err = d.run([]int{0}, "kubectl", "get", "nadmigration", "demo", "-o", `jsonpath={range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}{range .status.nads[*]}{.namespace}/{.name}: {.form} [{.action}] {.advice}{"\n"}{end}`)
		return "Ready=True when every NAD is clean or fixed, Stalled=True when some need a person (status.nads says what to do)", err
	})
	d.do("The same with the CLI, for a cluster without the operator: `netconf-migrator migrate`", func() (string, error) {
		_, code, err := d.run([]int{0, 1}, "netconf-migrator", "migrate", "-n", ns)
		return fmt.Sprintf("exit %d (0: every NAD is flat or was fixed; 1: some need a person, and the report says why)", code), err
	})
	d.do("What rollback would restore: `netconf-migrator rollback --dry-run=client`", func() (string, error) {
		_, code, err := d.run([]int{0, 1}, "netconf-migrator", "rollback", "-n", ns, "--dry-run=client")
		return fmt.Sprintf("exit %d, nothing written", code), err
	})
	d.do("The stored configs", func() (string, error) {
		_, _, err := d.run([]int{0}, "kubectl", "get", "network-attachment-definitions", "-n", ns,
			"-o", `custom-columns=NAME:.metadata.name,FROM:.metadata.annotations.netconf-migrator\.harvesterhci\.io/normalized-from,CONFIG:.spec.config`)
		return "what the webhook and migrate could fix is flat; the report named the rest", err
	})
	fmt.Fprintln(d.out, "\nDemo done; stopping everything it started.")
}

// readOnly are the steps that write nothing: safe against any cluster.
func (d *demo) readOnly() {
	d.do("What migrate would change, judged by the API server and every webhook: `netconf-migrator migrate --dry-run=server -o diff`", func() (string, error) {
		args := []string{"migrate", "--dry-run=server", "-o", "diff", "--report", filepath.Join(os.TempDir(), "netconf-migrator-demo-report.json")}
		if os.Getenv("NETCONF_MIGRATOR_DEMO_KUBECONFIG") == "" {
			args = append(args, "-n", ns)
		}
		_, code, err := d.run([]int{0, 1}, "netconf-migrator", args...)
		return fmt.Sprintf("exit %d, nothing stored; the summary above is the report as a table", code), err
	})
}

func (d *demo) runStdin(stdin []byte, ok []int, name string, args ...string) (string, int, error) {
	if name == "netconf-migrator" {
		name = d.bin
	}
	cmd := exec.Command(name, append(args, "--kubeconfig", d.kubecfg)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err := cmd.Run()
	code := 0
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		code, err = exit.ExitCode(), nil
	}
	for _, line := range strings.Split(strings.TrimRight(buf.String(), "\n"), "\n") {
		if line != "" && !strings.HasPrefix(line, `{"level"`) {
			fmt.Fprintf(d.out, "    | %s\n", line)
		}
	}
	if err == nil && !slices.Contains(ok, code) {
		err = fmt.Errorf("%s %s: exit %d", filepath.Base(name), args[0], code)
	}
	return buf.String(), code, err
}

func manifest(name, config string, labels map[string]string) []byte {
	n := nadv1.NetworkAttachmentDefinition{}
	n.APIVersion, n.Kind = nadv1.GroupVersion.String(), nadv1.Kind
	n.Namespace, n.Name, n.Labels = ns, name, labels
	n.Spec.Config = config
	b, _ := yaml.Marshal(n)
	return b
}

// startWebhook runs `netconf-migrator webhook` in self-signed mode with the
// shipped configuration pointed at it on localhost, and waits until the
// API server calls it.
func (d *demo) startWebhook(ctx context.Context, env *testenv.Env, onStop func(func())) error {
	port, err := testenv.FreePort("127.0.0.1")
	if err != nil {
		return err
	}
	probes, err := testenv.FreePort("127.0.0.1")
	if err != nil {
		return err
	}
	// The self-signed webhook fills in the caBundle itself.
	mwc, err := testenv.ShippedWebhookConfiguration(fmt.Sprintf("https://localhost:%d", port), nil)
	if err != nil {
		return err
	}
	const own, backups = "netconf-migrator-system", "netconf-migrator-backups"
	for _, ns := range []string{own, backups} {
		if err := env.CreateNamespace(ctx, ns, nil); err != nil {
			return err
		}
	}
	if err := env.Client.Create(ctx, mwc); err != nil {
		return err
	}
	certDir, err := os.MkdirTemp("", "netconf-migrator-demo-certs-")
	if err != nil {
		return err
	}
	var logs bytes.Buffer
	cmd := exec.Command(d.bin, "webhook", "--kubeconfig", d.kubecfg, "--cert-mode=self-signed", "--namespace="+own,
		"--secret-name=netconf-migrator-webhook-cert", "--service-name=netconf-migrator-webhook", "--webhook-config-name="+mwc.Name,
		"--extra-dns-names=localhost", "--host=127.0.0.1", "--port="+strconv.Itoa(port), "--cert-dir="+certDir,
		"--health-probe-bind-address="+net.JoinHostPort("127.0.0.1", strconv.Itoa(probes)), "--metrics-bind-address=0",
		"--drain-period=0") // one replica: no other to drain to
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		return err
	}
	onStop(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		_ = os.RemoveAll(certDir)
	})
	// The operator, a process of its own as it is a Deployment of its own.
	op := exec.Command(d.bin, "operator", "--kubeconfig", d.kubecfg, "--fix-legacy=InPlace",
		"--leader-election-namespace="+own, "--backup-namespace="+backups,
		"--health-probe-bind-address=0", "--metrics-bind-address=0")
	var opLogs bytes.Buffer // its own: exec copies each process's output in goroutines of its own
	op.Stdout, op.Stderr = &opLogs, &opLogs
	if err := op.Start(); err != nil {
		return err
	}
	onStop(func() {
		_ = op.Process.Signal(syscall.SIGTERM)
		_ = op.Wait()
	})
	probe := &nadv1.NetworkAttachmentDefinition{}
	probe.Namespace, probe.GenerateName = own+"-probe", "probe-"
	if err := env.CreateNamespace(ctx, probe.Namespace, nil); err != nil {
		return err
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p := probe.DeepCopy()
		p.Spec.Config = forms[1].config
		if err := env.Client.Create(ctx, p, client.DryRunAll); err != nil {
			return false, nil
		}
		return p.Annotations[nadv1.AnnotationNormalizedFrom] != "", nil
	})
	if err != nil {
		return fmt.Errorf("the webhook did not start serving: %w\n%s", err, logs.String())
	}
	return nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
