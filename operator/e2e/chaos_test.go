package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

var (
	chaosFor      = flag.Duration("chaos", 30*time.Second, "how long TestChaos injects faults beside each release of -chaos-releases, the releases side by side (make chaos: an hour)")
	chaosNADs     = flag.Int("chaos-nads", 300, "NADs TestChaos seeds per release, a fifth of them nested")
	chaosSeed     = flag.Uint64("chaos-seed", 0, "seed of TestChaos's faults (default: the clock)")
	chaosReleases = flag.String("chaos-releases", "v1.6,v1.9", "the Harvester releases whose stand-ins and controllers TestChaos runs beside, each on a control plane of its own")
	chaosLogs     = flag.String("chaos-logs", "", "a directory for the logs of every process TestChaos starts (one file per start); none when empty")
)

// TestChaos runs what a cluster runs, as processes, beside Harvester's
// stand-ins and controllers of each release in -chaos-releases (v1.6 and
// v1.9 refuse to flatten a nested NAD in place, so every nested NAD is
// replaced; v1.9 also judges deletes): two operator replicas with leader
// election and --fix-legacy=Replace, our webhook, CLI runs, NADMigrations,
// and a writer that creates flat and nested NADs (a client from before the
// upgrade) and deletes NADs. Faults come at random moments:
//   - SIGKILL and SIGTERM of any of our processes (operator replicas, CLI
//     runs, the webhook);
//   - Harvester's controllers down for longer than the replacement budget;
//   - the kube-apiserver killed (SIGKILL) or stopped (SIGTERM) and started
//     again on the same etcd;
//   - etcd paused (SIGSTOP) for seconds;
//   - our webhook down for seconds.
//
// Checked all along: every NAD nobody else deleted exists or has a backup,
// and nothing someone else deleted comes back. Checked at the end, once the
// faults stop: every NAD exists once, holding exactly what the normalizer
// wants, no backup is left, every NADMigration ended with a True condition,
// and the missing-NAD gauge is 0.
//
// The releases run side by side, each for -chaos on a control plane of its
// own (etcd and kube-apiserver): the stand-ins of two releases register the
// same webhook configurations, as Harvester does, so they cannot judge one
// control plane at once, and a fault to one release's API server is not
// the other's.
func TestChaos(t *testing.T) {
	if *chaosFor <= 0 {
		t.Skip("-chaos=0")
	}
	seed := *chaosSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("faults from seed %d (replay with -chaos-seed %d)", seed, seed)
	releases := strings.Split(*chaosReleases, ",")
	bin := testenv.BuildBinary(t)
	for i, name := range releases {
		r, err := harvester.ParseRelease(strings.TrimSpace(name))
		if err != nil {
			t.Fatal(err)
		}
		t.Run(string(r), func(t *testing.T) {
			t.Parallel()
			opts, err := envOptions()
			if err != nil {
				t.Fatal(err)
			}
			chaos(t, testenv.StartT(t, opts), bin, r, *chaosFor, seed+uint64(i))
		})
	}
}

// chaos runs one release's soak on env, a control plane of its own (the
// parameter hides the package's shared one).
func chaos(t *testing.T, env *testenv.Env, bin string, release harvester.Release, chaosFor time.Duration, seed uint64) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(seed, 1))
	var rngMu sync.Mutex
	random := func(n int) int { rngMu.Lock(); defer rngMu.Unlock(); return rng.IntN(n) }

	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	h := harvester.StartT(t, env, release)
	ns := h.Namespace(t, "chaos")
	labels := map[string]string{"network.harvesterhci.io/clusternetwork": "mgmt", "network.harvesterhci.io/type": "L2VlanNetwork", "network.harvesterhci.io/vlan-id": "100"}
	want := map[string]string{} // name -> the config the normalizer wants
	var objs []client.Object
	for i := range *chaosNADs {
		name := fmt.Sprintf("nad-%05d", i)
		cfg := fmt.Sprintf(`{"cniVersion":"0.3.1","name":"%s","type":"bridge","bridge":"mgmt-br","promiscMode":true,"vlan":100}`, name)
		if i%5 == 0 {
			cfg = fmt.Sprintf(`{"NetConf":{"cniVersion":"0.3.1","name":"%s","type":"bridge"},"bridge":"mgmt-br","promiscMode":true,"vlan":100}`, name)
		}
		n := newNAD(ns, name, cfg)
		n.Labels = labels
		objs = append(objs, n)
		want[name] = string(netconf.Normalize([]byte(cfg)).Config)
	}
	h.Pause(func() {
		if err := env.CreateMany(ctx, objs); err != nil {
			t.Fatal(err)
		}
	})
	h.Settle(t)
	removedBefore := h.Controllers.Removed.Load()
	var wantMu sync.Mutex
	deleted := map[string]types.UID{} // deleted by the writer (its uid): must never come back
	maybe := map[string]string{}      // deleted or not: the answer was lost to a fault

	var faults sync.Map // kind -> *atomic.Int64
	count := func(kind string) {
		c, _ := faults.LoadOrStore(kind, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
	}

	// Two operator replicas, each a process that a fault may kill, or
	// that exits by itself (a replica that loses its leader Lease while the
	// API server is down ends, by design), and that comes back after a
	// while, as its Deployment's Pods do.
	var replicas []*supervised
	for range 2 {
		port, err := testenv.FreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		replicas = append(replicas, supervise(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", port), func() time.Duration { return time.Duration(random(2000)) * time.Millisecond },
			bin, "operator", "--kubeconfig", env.KubeconfigPath, "--fix-legacy", "Replace",
			"--lease-duration", "3s", "--replace-budget", "5s", "--backup-namespace", backupNamespace,
			"--leader-election-namespace", ownNamespace, "--health-probe-bind-address", "0",
			"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", port), "--metrics-secure=false"))
	}

	// This release's NADMigrations (they are cluster-scoped and outlive
	// the subtest).
	prefix := fmt.Sprintf("chaos-%s-", strings.ReplaceAll(strings.TrimPrefix(string(release), "v"), ".", "-"))

	// Our webhook, a process of its own as its Deployment's Pods are,
	// registered through the shipped configuration.
	hook := startWebhookProcess(t, env, bin, ns, func() time.Duration { return time.Duration(random(5000)) * time.Millisecond })

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var cli sync.WaitGroup
	violations := make(chan string, 100)

	// stored reads a NAD once the API server answers again: a write whose
	// answer was lost to a restart or a stalled etcd may have been done,
	// and the writer must know what it did.
	stored := func(name string) (*nadv1.NetworkAttachmentDefinition, bool) {
		cur := &nadv1.NetworkAttachmentDefinition{}
		var found bool
		_ = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
			err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, cur)
			found = err == nil
			return err == nil || apierrors.IsNotFound(err), nil
		})
		return cur, found
	}
	// created records what the writer's create of name left, whatever its
	// answer said.
	created := func(name, wanted string, err error) bool {
		if err != nil && (apierrors.IsInvalid(err) || apierrors.IsForbidden(err) || apierrors.IsAlreadyExists(err) || apierrors.IsBadRequest(err)) {
			return false // refused: nothing was stored
		}
		if err != nil {
			if _, found := stored(name); !found {
				return false
			}
		}
		wantMu.Lock()
		want[name] = wanted
		wantMu.Unlock()
		return true
	}

	// The writer's client gets the first answer to each request: client-go
	// resends a request answered 429 or 5xx with Retry-After (a storage
	// timeout while etcd is paused), although the first may land later; the
	// resend's answer (409 or 404 to a delete that landed, 409 to a create)
	// then says the opposite of what happened, and the soak took its own
	// delete for a lost NAD. Without the header, a timeout comes back as one.
	wcfg := rest.CopyConfig(env.Config)
	wcfg.Wrap(func(rt http.RoundTripper) http.RoundTripper { return noRetryAfter{rt} })
	wc, err := client.New(wcfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}

	// The writer's deletes, logged with -chaos-logs: the only account of
	// which NADs the soak itself removed.
	writerLog := func(string, ...any) {}
	if f := chaosLog(t, "writer"); f != nil {
		t.Cleanup(func() { _ = f.Close() })
		var mu sync.Mutex
		writerLog = func(format string, args ...any) {
			mu.Lock()
			defer mu.Unlock()
			fmt.Fprintf(f, "%s "+format+"\n", append([]any{time.Now().UTC().Format(time.RFC3339Nano)}, args...)...)
		}
	}

	// The writer: new flat NADs, label changes on them, and deletes of any
	// NAD (a delete conditional on what it read).
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(400 * time.Millisecond):
			}
			switch random(5) {
			case 4: // a client from before the upgrade writes the nested form
				name := fmt.Sprintf("new-%05d", i)
				cfg := fmt.Sprintf(`{"NetConf":{"cniVersion":"0.3.1","name":"%s","type":"bridge"},"bridge":"mgmt-br","vlan":100}`, name)
				n := newNAD(ns, name, cfg)
				n.Labels = labels
				// Our webhook flattens it; while it is down, Harvester
				// refuses it (or, had it been stored nested, the
				// operator's watch would replace it): either way what
				// stands in the end is what the normalizer wants.
				if created(name, string(netconf.Normalize([]byte(cfg)).Config), wc.Create(ctx, n)) {
					count("writer nested creates")
				}
			case 0, 1:
				name := fmt.Sprintf("new-%05d", i)
				cfg := fmt.Sprintf(`{"cniVersion":"0.3.1","name":"%s","type":"bridge","bridge":"mgmt-br","vlan":100}`, name)
				n := newNAD(ns, name, cfg)
				n.Labels = labels
				created(name, cfg, wc.Create(ctx, n))
			case 2: // a label change on one of its own NADs
				cur := &nadv1.NetworkAttachmentDefinition{}
				if wc.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("new-%05d", random(i+1))}, cur) == nil && cur.DeletionTimestamp == nil {
					cur.Labels["writer"] = fmt.Sprint(i)
					if wc.Update(ctx, cur) == nil {
						count("writer updates")
					}
				}
			case 3:
				wantMu.Lock()
				var names []string
				for name := range want {
					names = append(names, name)
				}
				wantMu.Unlock()
				name := names[random(len(names))]
				cur := &nadv1.NetworkAttachmentDefinition{}
				if wc.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, cur) != nil || cur.DeletionTimestamp != nil {
					continue
				}
				uid, rv := cur.UID, cur.ResourceVersion
				err := wc.Delete(ctx, cur, client.Preconditions{UID: &uid, ResourceVersion: &rv})
				writerLog("delete %s uid %s rv %s: %v", name, uid, rv, err)
				if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) {
					// The answer was lost to a fault: whether this delete
					// or a replacement's removed it cannot be told, so
					// either end is right for it, as long as it is what
					// the normalizer wants if it stands.
					wantMu.Lock()
					maybe[name] = want[name]
					delete(want, name)
					wantMu.Unlock()
					count("writer deletes with a lost answer")
					continue
				}
				if err == nil {
					wantMu.Lock()
					delete(want, name)
					deleted[name] = uid
					wantMu.Unlock()
					count("writer deletes")
				}
			}
		}
	})

	// Faults.
	wg.Go(func() {
		deadline := time.Now().Add(chaosFor)
		n := 0
		for time.Now().Before(deadline) {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(1000+random(3000)) * time.Millisecond):
			}
			switch random(8) {
			case 5: // the kube-apiserver crashes or is restarted
				sig, kind := syscall.SIGKILL, "kube-apiserver SIGKILL"
				if random(2) == 0 {
					sig, kind = syscall.SIGTERM, "kube-apiserver restart"
				}
				if err := env.RestartAPIServer(ctx, sig); err != nil {
					t.Errorf("restarting the kube-apiserver: %v", err)
					return
				}
				count(kind)
			case 6: // etcd stalls
				if err := env.PauseEtcd(time.Duration(1000+random(4000)) * time.Millisecond); err != nil {
					t.Errorf("pausing etcd: %v", err)
					return
				}
				count("etcd paused")
			case 7: // our webhook is killed, and its Pod comes back later
				hook.signal(syscall.SIGKILL)
				count("webhook down")
			case 0, 1: // SIGKILL or SIGTERM an operator replica; its Pod comes back
				sig, kind := syscall.SIGKILL, "SIGKILL operator"
				if random(2) == 0 {
					sig, kind = syscall.SIGTERM, "SIGTERM operator"
				}
				replicas[random(len(replicas))].signal(sig)
				count(kind)
			case 2: // a CLI run, killed or not
				n++
				cmd := exec.Command(bin, "migrate", "-n", ns, "--kubeconfig", env.KubeconfigPath, "--lease-wait", "2s", "--lease-duration", "3s",
					"--replace-budget", "5s", "--termination-message-path", "")
				logFile := chaosLog(t, fmt.Sprintf("cli-%04d", n))
				if logFile != nil {
					cmd.Stdout, cmd.Stderr = logFile, logFile
				}
				if cmd.Start() != nil {
					if logFile != nil {
						_ = logFile.Close()
					}
					continue
				}
				count("CLI runs")
				cli.Go(func() {
					if random(2) == 0 {
						time.Sleep(time.Duration(200+random(3000)) * time.Millisecond)
						if cmd.Process.Signal(syscall.SIGKILL) == nil {
							count("SIGKILL CLI")
						}
					}
					_ = cmd.Wait()
					if logFile != nil {
						_ = logFile.Close()
					}
				})
			case 3: // a NADMigration, as a person or the pre-hook starts one:
				// never more than two waiting, or over a long run the
				// queue outgrows what the faults leave time to run
				if len(pendingMigrations(ctx, env, prefix)) >= 2 {
					continue
				}
				n++
				if env.Client.Create(ctx, newMigration(fmt.Sprintf("%s%d", prefix, n), v1alpha1.NADMigrationSpec{Namespaces: []string{ns}})) == nil {
					count("NADMigrations")
				}
			case 4: // Harvester's controllers down past the replacement budget
				h.Controllers.SetDown(true)
				time.Sleep(7 * time.Second)
				h.Controllers.SetDown(false)
				count("controllers down 7s")
			}
		}
	})

	// The invariants that hold at every moment.
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			if v := checkNothingLost(ctx, env, ns, &wantMu, want, deleted); v != "" {
				select {
				case violations <- v:
				default:
				}
			}
		}
	})

	time.Sleep(chaosFor)
	close(stop)
	wg.Wait()
	cli.Wait()
	h.Controllers.SetDown(false)
	close(violations)
	for v := range violations {
		t.Error(v)
	}

	// Every NADMigration ends first: a few minutes, and two more for each
	// still waiting when the faults stop. A running one holds the run
	// Lease, so the NADs its replacements left missing are created again
	// only when it ends (its retry resumes them first) or by the owner of
	// open replacements after it.
	budget := 3*time.Minute + 2*time.Minute*time.Duration(len(pendingMigrations(ctx, env, prefix)))
	if err := wait.PollUntilContextTimeout(ctx, time.Second, budget, true, func(context.Context) (bool, error) {
		return len(pendingMigrations(ctx, env, prefix)) == 0, nil
	}); err != nil {
		for _, nm := range pendingMigrations(ctx, env, prefix) {
			t.Errorf("NADMigration %s has not ended after %s: %+v", nm.Name, budget, nm.Status.Conditions)
		}
		t.FailNow()
	}
	// Then everything converges.
	var left string
	if err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 3*time.Minute, true, func(context.Context) (bool, error) {
		list := &nadv1.NetworkAttachmentDefinitionList{}
		if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		backups := &corev1.SecretList{}
		if err := env.Client.List(ctx, backups, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil {
			return false, err
		}
		left = divergence(list.Items, want, maybe)
		for _, b := range backups.Items {
			left += "; backup " + b.Name + " left"
		}
		return left == "", nil
	}); err != nil {
		t.Fatalf("waiting for every NAD to hold what the normalizer wants and no backup to be left: %v%s", err, left)
	}
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, n := range list.Items {
		if uid, ok := deleted[n.Name]; ok && n.UID != uid {
			t.Errorf("%s/%s came back after the writer deleted it", ns, n.Name)
		}
	}
	waitFor(t, "the missing-NAD gauge the elected operator serves to read 0", func() (bool, error) {
		for _, r := range replicas {
			if v, ok := scrape(r.metrics, "netconf_migrator_missing_nads"); ok {
				return v == 0, nil
			}
		}
		return false, nil
	})
	var summary []string
	faults.Range(func(k, v any) bool {
		summary = append(summary, fmt.Sprintf("%s=%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("CHAOS %s beside Harvester %s: %d NADs at the end, %d replacements finished by Harvester's controllers, NADs lost: 0; %s",
		chaosFor, release, len(list.Items), h.Controllers.Removed.Load()-removedBefore, strings.Join(summary, " "))
}

// pendingMigrations are the NADMigrations named with prefix that have
// not ended (neither Ready nor Stalled).
func pendingMigrations(ctx context.Context, env *testenv.Env, prefix string) []v1alpha1.NADMigration {
	nms := &v1alpha1.NADMigrationList{}
	if err := env.Client.List(ctx, nms); err != nil {
		return []v1alpha1.NADMigration{{}} // unknown: not done
	}
	var out []v1alpha1.NADMigration
	for _, nm := range nms.Items {
		if strings.HasPrefix(nm.Name, prefix) && !(meta.IsStatusConditionTrue(nm.Status.Conditions, v1alpha1.ConditionReady) || meta.IsStatusConditionTrue(nm.Status.Conditions, v1alpha1.ConditionStalled)) {
			out = append(out, nm)
		}
	}
	return out
}

// checkNothingLost says what is wrong with the NADs of ns now: a NAD nobody
// else deleted that neither exists nor has a backup, or one someone else
// deleted that exists again.
func checkNothingLost(ctx context.Context, env *testenv.Env, ns string, mu *sync.Mutex, want map[string]string, deleted map[string]types.UID) string {
	mu.Lock()
	var expected []string
	for name := range want {
		expected = append(expected, name)
	}
	gone := make(map[string]types.UID, len(deleted))
	for name, uid := range deleted {
		gone[name] = uid
	}
	mu.Unlock()
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if env.Client.List(ctx, list, client.InNamespace(ns)) != nil {
		return ""
	}
	present := map[string]bool{}
	for _, n := range list.Items {
		present[n.Name] = true
		// Still terminating behind Harvester's finalizers is the deleted
		// object itself; another uid under the name came back.
		if uid, ok := gone[n.Name]; ok && n.UID != uid {
			return fmt.Sprintf("%s/%s exists again after someone else deleted it", ns, n.Name)
		}
	}
	for _, name := range expected {
		if present[name] {
			continue
		}
		// Absent from the listing: it must exist now (a replacement
		// finished meanwhile) or have a backup (one under way).
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &nadv1.NetworkAttachmentDefinition{})
		if err == nil || !apierrors.IsNotFound(err) {
			continue
		}
		backups := &corev1.SecretList{}
		if env.Client.List(ctx, backups, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelBackup: "true"}) != nil {
			continue
		}
		found := false
		for _, b := range backups.Items {
			found = found || b.Annotations[replace.AnnotationNAD] == ns+"/"+name
		}
		mu.Lock()
		_, isGone := gone[name]
		stillWanted := !isGone && want[name] != ""
		mu.Unlock()
		if !found && stillWanted {
			if e := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &nadv1.NetworkAttachmentDefinition{}); apierrors.IsNotFound(e) {
				return fmt.Sprintf("%s/%s is gone and no backup names it", ns, name)
			}
		}
	}
	return ""
}

// divergence says how the NADs differ from exactly the wanted ones, each
// holding what the normalizer wants (the first ten differences), or ""
// when they do not.
func divergence(items []nadv1.NetworkAttachmentDefinition, want, maybe map[string]string) string {
	var out []string
	stored := map[string]bool{}
	for _, n := range items {
		stored[n.Name] = true
		w, ok := want[n.Name]
		if !ok {
			w, ok = maybe[n.Name]
		}
		switch {
		case !ok:
			out = append(out, n.Name+" is stored and nobody wants it")
		case !sameJSON(n.Spec.Config, w):
			out = append(out, fmt.Sprintf("%s holds %s, want %s", n.Name, n.Spec.Config, w))
		}
	}
	for name := range want {
		if !stored[name] {
			out = append(out, name+" is missing")
		}
	}
	if len(out) == 0 {
		return ""
	}
	sort.Strings(out)
	n := len(out)
	if n > 10 {
		out = out[:10]
	}
	return fmt.Sprintf("; %d NADs differ: %s", n, strings.Join(out, "; "))
}

func sameJSON(a, b string) bool {
	var av, bv any
	if json.Unmarshal([]byte(a), &av) != nil || json.Unmarshal([]byte(b), &bv) != nil {
		return a == b
	}
	x, _ := json.Marshal(av)
	y, _ := json.Marshal(bv)
	return string(x) == string(y)
}

// scrape reads a gauge from a metrics endpoint.
func scrape(url, name string) (float64, bool) {
	families, err := testenv.Scrape(url)
	if err != nil {
		return 0, false
	}
	return testenv.Sum(families, name, nil)
}

// startWebhookProcess runs `netconf-migrator webhook` as its Deployment
// runs it (self-signed certificates in its Secret, the shipped
// configuration pointed at it on localhost), started again after pause
// whenever it ends.
func startWebhookProcess(t *testing.T, env *testenv.Env, bin, probeNS string, pause func() time.Duration) *supervised {
	return startWebhookProcessMetrics(t, env, bin, probeNS, pause, "0")
}

// startWebhookProcessMetrics is startWebhookProcess serving its metrics
// over plain HTTP on metrics ("0": none).
func startWebhookProcessMetrics(t *testing.T, env *testenv.Env, bin, probeNS string, pause func() time.Duration, metrics string) *supervised {
	t.Helper()
	ctx := context.Background()
	port, err := testenv.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	mwc, err := testenv.ShippedWebhookConfiguration(fmt.Sprintf("https://localhost:%d", port), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, mwc); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Client.Delete(ctx, mwc) })
	w := supervise(t, "http://"+metrics+"/metrics", pause, bin, "webhook", "--kubeconfig", env.KubeconfigPath, "--cert-mode=self-signed", "--namespace="+ownNamespace,
		"--secret-name=netconf-migrator-webhook-cert", "--service-name=netconf-migrator-webhook", "--webhook-config-name="+mwc.Name,
		"--extra-dns-names=localhost", "--host=127.0.0.1", fmt.Sprintf("--port=%d", port), "--cert-dir="+t.TempDir(),
		"--health-probe-bind-address=0", "--metrics-bind-address="+metrics, "--metrics-secure=false", "--drain-period=0")
	waitForWebhook(t, env, probeNS)
	return w
}

// runWebhook runs bin's webhook with args (a chart's rendered ones, from
// installChart) as the container webhook of Pod pod, restarted after
// pause whenever it ends, until the API server calls it.
func runWebhook(t *testing.T, env *testenv.Env, bin string, args []string, pod, probeNS string, pause func() time.Duration) *supervised {
	t.Helper()
	w := superviseIn(t, []string{"POD_NAMESPACE=" + ownNamespace, "POD_NAME=" + pod}, "webhook-"+pod, pause, bin, args...)
	waitForWebhook(t, env, probeNS)
	return w
}

// waitForWebhook waits until the API server calls our webhook: a nested
// dry-run create in probeNS comes back flat.
func waitForWebhook(t *testing.T, env *testenv.Env, probeNS string) {
	t.Helper()
	ctx := context.Background()
	waitFor(t, "the API server to call our webhook", func() (bool, error) {
		n := newNAD(probeNS, "webhook-probe", `{"NetConf":{"cniVersion":"0.3.1","name":"probe","type":"bridge"},"bridge":"mgmt-br","vlan":100}`)
		n.Labels = map[string]string{"network.harvesterhci.io/clusternetwork": "mgmt", "network.harvesterhci.io/type": "L2VlanNetwork", "network.harvesterhci.io/vlan-id": "100"}
		if err := env.Client.Create(ctx, n, client.DryRunAll); err != nil {
			return false, nil
		}
		return netconf.Normalize([]byte(n.Spec.Config)).Form == netconf.FormFlat, nil
	})
}

// supervised is a process started again whenever it ends, after a pause,
// until the test ends: a container under the kubelet.
type supervised struct {
	metrics string
	mu      sync.Mutex
	cmd     *exec.Cmd
	starts  atomic.Int64
	// stop ends the process and its supervision (its Pod deleted).
	stop func()
}

func supervise(t *testing.T, metrics string, pause func() time.Duration, bin string, args ...string) *supervised {
	return superviseIn(t, nil, metrics, pause, bin, args...)
}

// superviseIn is supervise with more environment (the downward API's).
func superviseIn(t *testing.T, environ []string, metrics string, pause func() time.Duration, bin string, args ...string) *supervised {
	p := &supervised{metrics: metrics}
	stop := make(chan struct{})
	done := make(chan struct{})
	var once sync.Once
	p.stop = func() { once.Do(func() { close(stop) }); <-done }
	go func() {
		defer close(done)
		for {
			cmd := exec.Command(bin, args...)
			if environ != nil {
				cmd.Env = append(os.Environ(), environ...)
			}
			// What a process said before a fault cut it: the only account
			// of a run that hangs.
			logFile := chaosLog(t, fmt.Sprintf("%s-%s-%03d", args[0], strings.TrimPrefix(strings.TrimPrefix(metrics, "http://127.0.0.1:"), "http://"), p.starts.Load()))
			if logFile != nil {
				cmd.Stdout, cmd.Stderr = logFile, logFile
			}
			if err := cmd.Start(); err != nil {
				t.Error(err)
				return
			}
			p.starts.Add(1)
			p.mu.Lock()
			p.cmd = cmd
			p.mu.Unlock()
			exited := make(chan struct{})
			go func() {
				_ = cmd.Wait()
				if logFile != nil {
					_ = logFile.Close()
				}
				close(exited)
			}()
			select {
			case <-stop:
				_ = cmd.Process.Kill()
				<-exited
				return
			case <-exited:
			}
			select {
			case <-stop:
				return
			case <-time.After(pause()):
			}
		}
	}()
	t.Cleanup(p.stop)
	return p
}

// signal sends sig to the process running now.
func (p *supervised) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		_ = p.cmd.Process.Signal(sig)
	}
}

// noRetryAfter drops the Retry-After header, so that client-go hands the
// first answer back instead of resending the request.
type noRetryAfter struct{ rt http.RoundTripper }

func (n noRetryAfter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := n.rt.RoundTrip(req)
	if resp != nil {
		resp.Header.Del("Retry-After")
	}
	return resp, err
}

// chaosLog creates the log file of one of TestChaos's processes, named for
// the subtest and what, in the -chaos-logs directory; nil without one.
func chaosLog(t *testing.T, what string) *os.File {
	if *chaosLogs == "" {
		return nil
	}
	name := strings.NewReplacer("/", "_", ":", "_").Replace(t.Name() + "-" + what + ".log")
	f, err := os.Create(filepath.Join(*chaosLogs, name))
	if err != nil {
		return nil
	}
	return f
}
