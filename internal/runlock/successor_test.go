package runlock_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/internal/runlock"
)

// pod stores a Pod of ns (no kubelet runs it: only its name, UID and
// phase count here) and returns it.
func pod(t *testing.T, ns, name string, phase corev1.PodPhase) *corev1.Pod {
	t.Helper()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "operator", Image: "netconf-migrator"}}}}
	if err := env.Client.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	if phase != "" {
		p.Status.Phase = phase
		if err := env.Client.Status().Update(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

func self(p *corev1.Pod, role string, pid1 bool, process string) runlock.Self {
	return runlock.Self{Role: role, Namespace: p.Namespace, Pod: p.Name, UID: string(p.UID), Container: "operator", PID1: pid1, Process: process, Started: time.Now()}
}

// terminated reports every container of p terminated, as its kubelet
// does once they exited.
func terminated(t *testing.T, p *corev1.Pod) {
	t.Helper()
	p.Status.ContainerStatuses = []corev1.ContainerStatus{{Name: "operator", State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137}}}}
	if err := env.Client.Status().Update(context.Background(), p); err != nil {
		t.Fatal(err)
	}
}

// A holder is proven dead only by what Kubernetes guarantees: a container
// runs one main process at a time, and a Pod is gone from the API once
// its containers stopped. Anything else waits out the Lease.
func TestASuccessorProvesItsPredecessorDead(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	kube, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	mine := pod(t, ns, "operator-a", corev1.PodRunning)
	other := pod(t, ns, "operator-b", corev1.PodRunning)
	ended := pod(t, ns, "operator-c", corev1.PodFailed)
	terminated(t, ended)
	// The pod garbage collector marks a Pod of a node that is gone Failed
	// and deletes it, with no kubelet to say its processes stopped.
	orphaned := pod(t, ns, "operator-f", corev1.PodFailed)
	replaced := pod(t, ns, "operator-d", corev1.PodRunning)
	replacedSelf := self(replaced, "operator", true, "old")
	replacedSelf.UID = "0d1d0d1d-0000-0000-0000-000000000000"
	gone := self(mine, "operator", true, "gone")
	gone.Pod, gone.UID = "operator-e", "0e0e0e0e-0000-0000-0000-000000000000"
	elsewhere := self(mine, "operator", true, "x")
	elsewhere.Namespace, elsewhere.UID = "kube-system", "0f0f0f0f-0000-0000-0000-000000000000"
	sidecar := self(mine, "operator", true, "sidecar")
	sidecar.Container = "debugger"
	me := self(mine, "operator", true, "now")
	s := runlock.Successor{Self: me, Pods: kube, Log: logr.Discard()}

	for _, tc := range []struct {
		name   string
		holder string
		dead   bool
		why    string
	}{
		{"a holder that names no Pod", "operator_host_abc123", false, ""},
		{"this very process (another of its runs)", me.Identity("operator_x_backups"), false, ""},
		{"the container before a restart in this Pod", self(mine, "operator", true, "before").Identity("operator_x"), true, "restarted"},
		{"a process of this Pod that was not its main one (kubectl exec)", self(mine, "operator", false, "exec").Identity("operator_x"), false, ""},
		{"another container of this Pod, PID 1 of its own", sidecar.Identity("operator_x"), false, ""},
		{"another entry point in this Pod", self(mine, "migrate", true, "before").Identity("migrate_x"), false, ""},
		{"a replica whose Pod runs", self(other, "operator", true, "b").Identity("operator_b"), false, ""},
		{"a replica whose Pod has ended, its containers terminated", self(ended, "operator", true, "c").Identity("operator_c"), true, "has ended (Failed)"},
		{"a replica whose Pod was marked Failed with no kubelet to confirm", self(orphaned, "operator", true, "f").Identity("operator_f"), false, ""},
		{"a replica whose Pod is gone (deleted by the pod garbage collector, or forced)", gone.Identity("operator_e"), false, ""},
		{"a replica whose Pod was replaced by another of its name", replacedSelf.Identity("operator_d"), false, ""},
		{"a Pod of a namespace this process does not read", elsewhere.Identity("operator_x"), false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			since, why, dead := s.DeadSince(ctx, tc.holder)
			if dead != tc.dead || !strings.Contains(why, tc.why) {
				t.Fatalf("DeadSince(%q) = %v, %q; want %v, %q", tc.holder, dead, why, tc.dead, tc.why)
			}
			if dead && time.Since(since) < 0 {
				t.Errorf("dead since %v, in the future", since)
			}
		})
	}

	// Without a Pod UID of its own (not run by the chart or config/),
	// nothing is ever proven.
	none := runlock.Successor{Self: runlock.Self{Role: "operator", Process: "p"}, Pods: kube, Log: logr.Discard()}
	if _, _, dead := none.DeadSince(ctx, gone.Identity("operator_e")); dead {
		t.Error("a process that names no Pod proved another dead")
	}
}

// The run Lease of a restarted container's predecessor is taken once the
// fence margin has passed since the restart, long before the Lease
// expires (a live replica's is not taken: the table above).
func TestARestartedContainerTakesItsPredecessorsRunLease(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	kube, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	p := pod(t, ns, "operator-a", corev1.PodRunning)
	duration := 30 * time.Second
	before := self(p, "operator", true, "before")
	holdLease(t, ns, before.Identity("operator_a"), duration)

	now := self(p, "operator", true, "after")
	succ := &runlock.Successor{Self: now, Pods: kube, Log: logr.Discard()}
	start := time.Now()
	held, err := runlock.AcquireAs(ctx, env.Config, ns, now.Identity("operator_a"), time.Second, duration, succ)
	if err != nil {
		t.Fatalf("the restarted container did not take its predecessor's Lease: %v", err)
	}
	took := time.Since(start)
	held.Release()
	// The margin of a 30 s Lease is 6 s from the restart; the Lease
	// itself has 30 s left.
	if took >= duration/2 {
		t.Errorf("took %s: the Lease was waited out", took)
	}

}

// holdLease stores the run Lease as identity holds it, renewed now.
func holdLease(t *testing.T, ns, identity string, duration time.Duration) {
	t.Helper()
	now := metav1.NewMicroTime(time.Now())
	l := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: runlock.LeaseName},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(identity), LeaseDurationSeconds: ptr.To(int32(duration / time.Second)),
			AcquireTime: &now, RenewTime: &now}}
	if err := env.Client.Create(context.Background(), l); err != nil {
		t.Fatal(err)
	}
}

// The leader's lock shows the Lease of a holder proven dead as released,
// so client-go's elector takes it at its next try; any other holder's
// as it is.
func TestTheLeaderLockReleasesOnlyADeadHoldersLease(t *testing.T) {
	ctx := context.Background()
	ns := namespace(t)
	kube, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	p := pod(t, ns, "operator-a", corev1.PodRunning)
	other := pod(t, ns, "operator-b", corev1.PodRunning)
	me := self(p, "operator", true, "after")
	lock := runlock.LeaderLock(&resourcelock.LeaseLock{LeaseMeta: metav1.ObjectMeta{Namespace: ns, Name: "leader"},
		Client: kube.CoordinationV1(), LockConfig: resourcelock.ResourceLockConfig{Identity: me.Identity("a")}},
		runlock.Successor{Self: me, Pods: kube, Log: logr.Discard()})
	store := func(holder string) {
		t.Helper()
		l := &coordinationv1.Lease{}
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "leader"}, l)
		now := metav1.NewMicroTime(time.Now())
		l.Namespace, l.Name = ns, "leader"
		l.Spec = coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder), LeaseDurationSeconds: ptr.To(int32(15)), RenewTime: &now, AcquireTime: &now}
		switch {
		case apierrors.IsNotFound(err):
			err = env.Client.Create(ctx, l)
		case err == nil:
			err = env.Client.Update(ctx, l)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		holder   string
		released bool
	}{
		{self(p, "operator", true, "before").Identity("a"), true},
		{self(other, "operator", true, "b").Identity("b"), false},
		{"someone", false},
		{me.Identity("a"), false},
	} {
		store(tc.holder)
		rec, _, err := lock.Get(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := rec.HolderIdentity == ""; got != tc.released {
			t.Errorf("held by %q: the lock shows holder %q", tc.holder, rec.HolderIdentity)
		}
	}
}
