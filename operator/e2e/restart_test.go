package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration/replace"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/test/harvester"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// container is one start of the container operator of a Pod
// (runContainer): a restart is a new process, PID 1 again, in the same
// Pod. startContainer runs `netconf-migrator operator` in it as the
// chart's Pod runs it, its metrics on plain HTTP at metrics.
type container struct {
	cmd     *exec.Cmd
	exited  chan struct{}
	started time.Time
	mu      sync.Mutex
	log     bytes.Buffer
}

func (c *container) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.Write(p)
}

func (c *container) logs() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.log.String()
}

func startContainer(t *testing.T, bin string, pod *corev1.Pod, metrics string, args ...string) *container {
	return startContainerOn(t, env, bin, pod, metrics, args...)
}

// startContainerOn is startContainer against the control plane env.
func startContainerOn(t *testing.T, env *testenv.Env, bin string, pod *corev1.Pod, metrics string, args ...string) *container {
	t.Helper()
	return runContainer(t, bin, pod, append([]string{"operator", "--kubeconfig", env.KubeconfigPath,
		"--backup-namespace", backupNamespace, "--leader-election-namespace", ownNamespace,
		"--metrics-bind-address", metrics, "--metrics-secure=false", "--health-probe-bind-address", "0"}, args...))
}

func (c *container) kill() {
	_ = c.cmd.Process.Signal(syscall.SIGKILL)
	<-c.exited
}

// operatorPod stores the Pod the chart's Deployment would have made (no
// kubelet runs it here: its name and UID are what count).
func operatorPod(t *testing.T, name string) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ownNamespace, Name: name},
		Spec: corev1.PodSpec{ServiceAccountName: "netconf-migrator-operator", Containers: []corev1.Container{{Name: "operator", Image: "netconf-migrator"}}}}
	create(t, p)
	t.Cleanup(func() { _ = env.Client.Delete(context.Background(), p) })
	return p
}

func holder(t *testing.T, ns, name string) (string, *coordinationv1.Lease) {
	t.Helper()
	l := &coordinationv1.Lease{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, l); err != nil {
		return "", nil
	}
	return ptr.Deref(l.Spec.HolderIdentity, ""), l
}

// TestARestartedOperatorResumesAtOnce: the operator is SIGKILLed while a
// NAD it is replacing is absent (Harvester v1.6's controllers hold its
// deletion), and its container restarts in the same Pod. The new process
// is its predecessor's successor by proof (the kubelet runs one main
// process per container at a time), so it takes the leader's Lease and
// the run Lease without waiting either out (15 s each, about 35 s before)
// and creates the NAD again. The figures (time to the run Lease, how long
// the NAD was absent) are logged for BENCHMARKS.md.
func TestARestartedOperatorResumesAtOnce(t *testing.T) {
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	h := harvester.StartT(t, env, harvester.V16)
	ns := h.Namespace(t, "restarted")
	before := vlanNAD(t, h, ns)
	bin := testenv.BuildBinary(t)
	pod := operatorPod(t, "netconf-migrator-operator-7d9f8-restart")

	// Harvester's controllers are down until the kill: the deletion waits
	// on their finalizers.
	h.Controllers.SetDown(true)
	t.Cleanup(func() { h.Controllers.SetDown(false) })

	first := startContainer(t, bin, pod, "0", "--fix-legacy", "Replace")
	waitFor(t, "the operator to delete the nested NAD to replace it", func() (bool, error) {
		_, cur := form(t, ns, "vlan100")
		return cur != nil && cur.UID == before.UID && cur.DeletionTimestamp != nil, nil
	})
	first.kill()
	runHolder, run := holder(t, backupNamespace, runlock.LeaseName)
	leaderHolder, _ := holder(t, ownNamespace, operator.LeaderElectionID)
	if !strings.Contains(runHolder, string(pod.UID)) || !strings.Contains(leaderHolder, string(pod.UID)) {
		t.Fatalf("the killed operator held the run Lease as %q and the leader's as %q, want both in its Pod's name\n%s", runHolder, leaderHolder, first.logs())
	}
	expires := run.Spec.RenewTime.Add(time.Duration(*run.Spec.LeaseDurationSeconds) * time.Second)
	h.Controllers.SetDown(false)
	waitFor(t, "Harvester's controllers to finish the deletion", func() (bool, error) {
		_, cur := form(t, ns, "vlan100")
		return cur == nil || cur.UID != before.UID, nil
	})
	gone := time.Now()

	second := startContainer(t, bin, pod, "0", "--fix-legacy", "Replace")
	var tookRun, back time.Time
	waitFor(t, "the restarted operator to take the run Lease and create the NAD again", func() (bool, error) {
		if h, _ := holder(t, backupNamespace, runlock.LeaseName); tookRun.IsZero() && h != runHolder && h != "" {
			tookRun = time.Now()
		}
		f, cur := form(t, ns, "vlan100")
		if cur != nil && cur.UID != before.UID {
			if f != netconf.FormFlat {
				return false, fmt.Errorf("created again %s", f)
			}
			back = time.Now()
			return true, nil
		}
		return false, nil
	})
	if tookRun.IsZero() {
		tookRun = back
	}
	t.Logf("RESTART run Lease taken %s after the restart; NAD absent %s (%s of it after the restart); the killed holder's Lease had %s left at the restart",
		tookRun.Sub(second.started).Round(time.Millisecond), back.Sub(gone).Round(time.Millisecond),
		back.Sub(second.started).Round(time.Millisecond), expires.Sub(second.started).Round(time.Millisecond))
	// The order the protocol allows, not a speed: the predecessor's Lease
	// was not waited out.
	if !tookRun.Before(expires) {
		t.Errorf("the restarted operator took the run Lease at %s, after the killed one's expired (%s): it waited it out\n%s",
			tookRun.Format(time.RFC3339Nano), expires.Format(time.RFC3339Nano), second.logs())
	}
	if !strings.Contains(second.logs(), "its container in this Pod restarted") {
		t.Errorf("the restarted operator did not say whose Lease it took and why:\n%s", second.logs())
	}
}

// Every replica exports netconf_migrator_missing_nads from its start, not
// only once it leads: here another replica, alive, holds the leader's
// Lease for the whole test, and the gauge still counts the NAD a
// replacement left missing. The replica keeps its backups in a namespace
// of this test's own: the gauge counts every backup of its namespace and
// of the earlier version's, and the shared ones may hold what an earlier
// test left open.
func TestTheMissingGaugeIsExportedBeforeLeading(t *testing.T) {
	bin := testenv.BuildBinary(t)
	ns := namespace(t, "missing-gauge", nil)
	backups := namespace(t, "missing-gauge-backups", nil)
	nad := newNAD(ns, "gone", nested)
	// A replacement left open: its backup, its NAD absent.
	backupFor(t, backups, nad)

	alive := operatorPod(t, "netconf-migrator-operator-7d9f8-alive")
	stop := holdLeaderLease(t, alive)
	defer stop()
	port, err := testenv.FreePort("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	// The later --backup-namespace wins over startContainer's; the earlier
	// version's namespace is the same, so the replica reads none of the
	// shared ones.
	c := startContainer(t, bin, operatorPod(t, "netconf-migrator-operator-7d9f8-other"), fmt.Sprintf("127.0.0.1:%d", port),
		"--fix-legacy", "Off", "--backup-namespace", backups, "--earlier-backup-namespace", backups)
	url := fmt.Sprintf("http://127.0.0.1:%d/metrics", port)
	last := "not scraped yet"
	err = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 3*time.Minute, true, func(context.Context) (bool, error) {
		if h, _ := holder(t, ownNamespace, operator.LeaderElectionID); !strings.Contains(h, string(alive.UID)) {
			return false, fmt.Errorf("the live replica lost the leader's Lease to %q", h)
		}
		v, ok := scrape(url, "netconf_migrator_missing_nads")
		if ok {
			last = fmt.Sprintf("%g", v)
		}
		return ok && v == 1, nil
	})
	if err != nil {
		t.Fatalf("waiting for the gauge on a replica that does not lead: %v (last scraped: %s); its log:\n%s", err, last, c.logs())
	}
	if strings.Contains(c.logs(), "Taking the leader's Lease") {
		t.Errorf("a replica took a live replica's Lease:\n%s", c.logs())
	}
}

// backupFor stores in backups a signed backup of a replacement that
// deleted nad and has not created it again (step Deleted), removed when
// the test ends.
func backupFor(t *testing.T, backups string, nad *nadv1.NetworkAttachmentDefinition) {
	t.Helper()
	openBackup(t, backups, nad.Namespace, nad.Name, "0000-missing-gauge", nad.Spec.Config)
}

// openBackup stores in backups the signed backup a replacement of the
// NAD namespace/name (uid, config) leaves once its delete landed (step
// Deleted), as a killed run leaves it; removed when the test ends.
func openBackup(t *testing.T, backups, namespace, name string, uid types.UID, config string) {
	t.Helper()
	ctx := context.Background()
	key, err := replace.LoadKey(ctx, env.Client, backups)
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{Object: map[string]any{"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
		"metadata": map[string]any{"namespace": namespace, "name": name, "uid": string(uid)}, "spec": map[string]any{"config": config}}}
	js := replace.SecretBackups{Client: env.Client, Namespace: backups, Key: key}
	j := &replace.Backup{Run: "killed-run", Mode: "migrate", Step: replace.StepDeleted, Original: u}
	if err := js.Save(ctx, j); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = js.Delete(ctx, j) })
}

// holdLeaderLease has a replica of pod, alive, hold the leader's Lease and
// renew it every second until the returned stop.
func holdLeaderLease(t *testing.T, pod *corev1.Pod) (stop func()) {
	t.Helper()
	ctx := context.Background()
	identity := runlock.Self{Role: "operator", Namespace: pod.Namespace, Pod: pod.Name, UID: string(pod.UID), Container: "operator", PID1: true, Process: "alive"}.Identity(pod.Name)
	renew := func() error {
		now := metav1.NewMicroTime(time.Now())
		l := &coordinationv1.Lease{}
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ownNamespace, Name: operator.LeaderElectionID}, l)
		l.Namespace, l.Name = ownNamespace, operator.LeaderElectionID
		l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = ptr.To(identity), ptr.To(int32(15)), &now
		if l.Spec.AcquireTime == nil {
			l.Spec.AcquireTime = &now
		}
		if apierrors.IsNotFound(err) {
			return env.Client.Create(ctx, l)
		}
		if err != nil {
			return err
		}
		return env.Client.Update(ctx, l)
	}
	if err := renew(); err != nil {
		t.Fatal(err)
	}
	done, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Second):
				_ = renew() // a conflict is retried at the next tick
			}
		}
	}()
	return func() {
		close(done)
		<-stopped
		// Released, as a stopping leader releases it, for the next test.
		l := &coordinationv1.Lease{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ownNamespace, Name: operator.LeaderElectionID}, l); err == nil {
			l.Spec.HolderIdentity = ptr.To("")
			_ = env.Client.Update(ctx, l)
		}
	}
}

// runContainer runs bin with args as the main process of the container
// operator of pod: PID 1 of a PID namespace of its own, as a container
// runtime starts it (CLONE_NEWPID needs root, as the consumer suite's
// network namespaces do; CI runs as root), with the downward API's
// POD_NAMESPACE, POD_NAME and POD_UID and the manifest's CONTAINER_NAME.
func runContainer(t *testing.T, bin string, pod *corev1.Pod, args []string) *container {
	t.Helper()
	c := &container{exited: make(chan struct{})}
	c.cmd = exec.Command(bin, args...)
	c.cmd.Env = append(os.Environ(), "POD_NAMESPACE="+pod.Namespace, "POD_NAME="+pod.Name, "POD_UID="+string(pod.UID), "CONTAINER_NAME=operator")
	c.cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	c.cmd.Stdout, c.cmd.Stderr = c, c
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting %s as its container's main process (a PID namespace of its own needs root): %v", bin, err)
	}
	c.started = time.Now()
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.kill)
	return c
}
