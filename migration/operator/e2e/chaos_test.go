package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os/exec"
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
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	v1alpha1 "github.com/harvester/netconf-migrator/apis/netconfmigrator/v1alpha1"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

var (
	chaosFor  = flag.Duration("chaos", 60*time.Second, "how long TestChaos injects faults (make chaos: an hour)")
	chaosNADs = flag.Int("chaos-nads", 300, "NADs TestChaos seeds, a fifth of them nested")
	chaosSeed = flag.Uint64("chaos-seed", 0, "seed of TestChaos's faults (default: the clock)")
)

// TestChaos runs what a cluster runs, as processes, beside Harvester v1.6's
// stand-ins and controllers (which refuse to flatten a nested NAD in place,
// so every nested NAD is replaced): two operator replicas with leader
// election and --fix-legacy=Replace, CLI runs, NADMigrations, and a writer
// that creates and deletes NADs. Faults come at random moments: SIGKILL and
// SIGTERM of any of our processes, and Harvester's controllers down for
// longer than the replacement budget. Checked all along: every NAD nobody
// else deleted exists or has a backup, and nothing someone else deleted
// comes back. Checked at the end, once the faults stop: every NAD exists
// once, holding exactly what the normalizer wants, no backup is left, every
// NADMigration ended with a True condition, and the missing-NAD gauge is 0.
//
// Not yet injected: the kube-apiserver restarted on the same etcd, etcd
// paused (envtest does not expose either process), our webhook down, and
// Harvester v1.9's stand-ins beside v1.6's.
func TestChaos(t *testing.T) {
	if *chaosFor <= 0 {
		t.Skip("-chaos=0")
	}
	ctx := context.Background()
	seed := *chaosSeed
	if seed == 0 {
		seed = uint64(time.Now().UnixNano())
	}
	t.Logf("faults from seed %d (replay with -chaos-seed %d)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	var rngMu sync.Mutex
	random := func(n int) int { rngMu.Lock(); defer rngMu.Unlock(); return rng.IntN(n) }

	dropUnfixable(t)
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	h := harvester.StartT(t, env, harvester.V16)
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

	bin := testenv.BuildBinary(t)
	var faults sync.Map // kind -> *atomic.Int64
	count := func(kind string) {
		c, _ := faults.LoadOrStore(kind, new(atomic.Int64))
		c.(*atomic.Int64).Add(1)
	}

	// Two operator replicas, each a process that a fault may kill and
	// that comes back, as its Deployment's Pods do.
	type replica struct {
		mu      sync.Mutex
		cmd     *exec.Cmd
		exited  chan struct{}
		metrics int
	}
	start := func(r *replica) {
		cmd := exec.Command(bin, "operator", "--kubeconfig", env.KubeconfigPath, "--fix-legacy", "Replace",
			"--lease-duration", "3s", "--replace-budget", "5s", "--backup-namespace", backupNamespace,
			"--leader-election-namespace", backupNamespace, "--health-probe-bind-address", "0",
			"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", r.metrics), "--metrics-secure=false")
		if err := cmd.Start(); err != nil {
			t.Error(err)
			return
		}
		exited := make(chan struct{})
		go func() { _ = cmd.Wait(); close(exited) }()
		r.cmd, r.exited = cmd, exited
	}
	var replicas []*replica
	for range 2 {
		port, err := testenv.FreePort("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		r := &replica{metrics: port}
		start(r)
		replicas = append(replicas, r)
	}
	t.Cleanup(func() {
		for _, r := range replicas {
			r.mu.Lock()
			_ = r.cmd.Process.Kill()
			<-r.exited
			r.mu.Unlock()
		}
	})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var cli sync.WaitGroup
	violations := make(chan string, 100)

	// The writer: new flat NADs, label changes on them, and deletes of any
	// NAD (a delete conditional on what it read).
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(400 * time.Millisecond):
			}
			switch random(4) {
			case 0, 1:
				name := fmt.Sprintf("new-%05d", i)
				cfg := fmt.Sprintf(`{"cniVersion":"0.3.1","name":"%s","type":"bridge","bridge":"mgmt-br","vlan":100}`, name)
				n := newNAD(ns, name, cfg)
				n.Labels = labels
				if err := env.Client.Create(ctx, n); err == nil {
					wantMu.Lock()
					want[name] = cfg
					wantMu.Unlock()
				}
			case 2: // a label change on one of its own NADs
				cur := &nadv1.NetworkAttachmentDefinition{}
				if env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("new-%05d", random(i+1))}, cur) == nil && cur.DeletionTimestamp == nil {
					cur.Labels["writer"] = fmt.Sprint(i)
					if env.Client.Update(ctx, cur) == nil {
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
				if env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, cur) != nil || cur.DeletionTimestamp != nil {
					continue
				}
				uid, rv := cur.UID, cur.ResourceVersion
				if err := env.Client.Delete(ctx, cur, client.Preconditions{UID: &uid, ResourceVersion: &rv}); err == nil {
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
		deadline := time.Now().Add(*chaosFor)
		n := 0
		for time.Now().Before(deadline) {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(1000+random(3000)) * time.Millisecond):
			}
			switch random(5) {
			case 0, 1: // SIGKILL or SIGTERM an operator replica; its Pod comes back
				r := replicas[random(len(replicas))]
				sig, kind := syscall.SIGKILL, "SIGKILL operator"
				if random(2) == 0 {
					sig, kind = syscall.SIGTERM, "SIGTERM operator"
				}
				r.mu.Lock()
				_ = r.cmd.Process.Signal(sig)
				<-r.exited
				time.Sleep(time.Duration(random(2000)) * time.Millisecond)
				start(r)
				r.mu.Unlock()
				count(kind)
			case 2: // a CLI run, killed or not
				n++
				cmd := exec.Command(bin, "migrate", "-n", ns, "--kubeconfig", env.KubeconfigPath, "--lease-wait", "2s", "--lease-duration", "3s",
					"--replace-budget", "5s", "--termination-message-path", "")
				if cmd.Start() != nil {
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
				})
			case 3: // a NADMigration
				n++
				if env.Client.Create(ctx, newMigration(fmt.Sprintf("chaos-%d", n), v1alpha1.NADMigrationSpec{Namespaces: []string{ns}})) == nil {
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
			if v := checkNothingLost(ctx, ns, &wantMu, want, deleted); v != "" {
				select {
				case violations <- v:
				default:
				}
			}
		}
	})

	time.Sleep(*chaosFor)
	close(stop)
	wg.Wait()
	cli.Wait()
	h.Controllers.SetDown(false)
	close(violations)
	for v := range violations {
		t.Error(v)
	}

	// Once the faults stop, everything converges.
	waitFor(t, "every NAD to hold what the normalizer wants and no backup to be left", func() (bool, error) {
		list := &nadv1.NetworkAttachmentDefinitionList{}
		if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		backups := &corev1.SecretList{}
		if err := env.Client.List(ctx, backups, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelJournal: "true"}); err != nil {
			return false, err
		}
		return len(backups.Items) == 0 && converged(list.Items, want), nil
	})
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, n := range list.Items {
		if uid, ok := deleted[n.Name]; ok && n.UID != uid {
			t.Errorf("%s/%s came back after the writer deleted it", ns, n.Name)
		}
	}
	waitFor(t, "every NADMigration to end with a True condition", func() (bool, error) {
		nms := &v1alpha1.NADMigrationList{}
		if err := env.Client.List(ctx, nms); err != nil {
			return false, err
		}
		for _, nm := range nms.Items {
			if strings.HasPrefix(nm.Name, "chaos-") && !(meta.IsStatusConditionTrue(nm.Status.Conditions, v1alpha1.ConditionReady) || meta.IsStatusConditionTrue(nm.Status.Conditions, v1alpha1.ConditionStalled)) {
				return false, nil
			}
		}
		return true, nil
	})
	waitFor(t, "the missing-NAD gauge the elected operator serves to read 0", func() (bool, error) {
		for _, r := range replicas {
			if v, ok := scrape(fmt.Sprintf("http://127.0.0.1:%d/metrics", r.metrics), "netconf_migrator_missing_nads"); ok {
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
	t.Logf("CHAOS %s: %d NADs at the end, %d replacements finished by Harvester's controllers, NADs lost: 0; %s",
		*chaosFor, len(list.Items), h.Controllers.Removed.Load()-removedBefore, strings.Join(summary, " "))
}

// checkNothingLost says what is wrong with the NADs of ns now: a NAD nobody
// else deleted that neither exists nor has a backup, or one someone else
// deleted that exists again.
func checkNothingLost(ctx context.Context, ns string, mu *sync.Mutex, want map[string]string, deleted map[string]types.UID) string {
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
		if env.Client.List(ctx, backups, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelJournal: "true"}) != nil {
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

// converged says whether the NADs are exactly the wanted ones, each holding
// what the normalizer wants.
func converged(items []nadv1.NetworkAttachmentDefinition, want map[string]string) bool {
	if len(items) != len(want) {
		return false
	}
	for _, n := range items {
		w, ok := want[n.Name]
		if !ok || !sameJSON(n.Spec.Config, w) {
			return false
		}
	}
	return true
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
	resp, err := http.Get(url)
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		var v float64
		if _, err := fmt.Sscanf(sc.Text(), name+" %g", &v); err == nil {
			return v, true
		}
	}
	return 0, false
}
