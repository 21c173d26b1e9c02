package runlock

// take() against a Lease API of its own, in memory: faults an API server
// does not make on cue (a failed or slow read at a given moment, holders
// that follow one another).

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	kubefake "k8s.io/client-go/kubernetes/fake"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/utils/ptr"
)

type fakeLeases struct {
	coordinationv1client.LeaseInterface
	mu    sync.Mutex
	lease coordinationv1.Lease
	rv    int
	gets  int
	start time.Time
	// beforeGet runs before the Lease is read; an error fails the read.
	beforeGet func(f *fakeLeases, n int) error
	takenAt   time.Time
}

func (f *fakeLeases) Leases(string) coordinationv1client.LeaseInterface { return f }

func (f *fakeLeases) write(holder string, seconds int32, renew time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t := metav1.NewMicroTime(renew)
	f.lease.Spec = coordinationv1.LeaseSpec{HolderIdentity: ptr.To(holder), LeaseDurationSeconds: ptr.To(seconds), AcquireTime: &t, RenewTime: &t}
	f.rv++
	f.lease.ResourceVersion = strconv.Itoa(f.rv)
}

func (f *fakeLeases) Get(ctx context.Context, name string, _ metav1.GetOptions) (*coordinationv1.Lease, error) {
	f.mu.Lock()
	n := f.gets
	f.gets++
	f.mu.Unlock()
	if f.beforeGet != nil {
		if err := f.beforeGet(f, n); err != nil {
			return nil, err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lease.DeepCopy(), nil
}

func (f *fakeLeases) Update(ctx context.Context, l *coordinationv1.Lease, _ metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if l.ResourceVersion != f.lease.ResourceVersion {
		return nil, apierrors.NewConflict(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, l.Name, nil)
	}
	f.lease.Spec = l.Spec
	f.rv++
	f.lease.ResourceVersion = strconv.Itoa(f.rv)
	f.takenAt = time.Now()
	return f.lease.DeepCopy(), nil
}

func newFake(holder string, seconds int32) *fakeLeases {
	f := &fakeLeases{start: time.Now()}
	f.lease.ObjectMeta = metav1.ObjectMeta{Namespace: "ns", Name: LeaseName}
	f.write(holder, seconds, time.Now())
	return f
}

func lockOn(f *fakeLeases, identity string) *renewals { return newLock(f, "ns", identity) }

// A holder that never renews again (dead), and the read that crosses the
// wait's deadline fails (an API server restarting). Before, the wait gave
// up naming the dead holder (ErrHeld, "still after 1s" in the CLI): the
// decision to wait on was made only after a read that succeeded.
func TestAFailedReadAtTheDeadlineStillOutlastsADeadHolder(t *testing.T) {
	f := newFake("dead", 1)
	f.beforeGet = func(f *fakeLeases, n int) error {
		if e := time.Since(f.start); e > 200*time.Millisecond && e < 700*time.Millisecond {
			return apierrors.NewServiceUnavailable("etcd leader changed")
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	holder, err := take(ctx, lockOn(f, "next"), unique(t), "next", 300*time.Millisecond, time.Second, nil)
	if err != nil || holder != "next" {
		t.Fatalf("take after %s: holder %q, %v; want the dead holder's Lease taken once it expired", time.Since(f.start).Round(time.Millisecond), holder, err)
	}
}

// The same with a slow read (200ms) that begins before the deadline and
// ends after it.
func TestAReadAcrossTheDeadlineStillOutlastsADeadHolder(t *testing.T) {
	f := newFake("dead", 1)
	f.beforeGet = func(f *fakeLeases, n int) error {
		if n > 0 {
			time.Sleep(200 * time.Millisecond)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	holder, err := take(ctx, lockOn(f, "next"), unique(t), "next", 300*time.Millisecond, time.Second, nil)
	if err != nil || holder != "next" {
		t.Fatalf("take after %s: holder %q, %v; want the dead holder's Lease taken once it expired", time.Since(f.start).Round(time.Millisecond), holder, err)
	}
}

// Live short runs one after another, each with an identity of its own (as
// the operator's runs have), none renewing twice: the Lease is in use, and
// a wait ends near its deadline. When a change of holder reset the count
// of renewals, each run's expiry stretched the wait again, without end.
func TestAWaitOnShortRunsOneAfterAnotherEnds(t *testing.T) {
	f := newFake("run-0", 2)
	cur := 0
	f.beforeGet = func(f *fakeLeases, n int) error {
		if i := int(time.Since(f.start) / (400 * time.Millisecond)); i != cur {
			cur = i
			f.write("run-"+strconv.Itoa(i), 2, time.Now())
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	holder, err := take(ctx, lockOn(f, "next"), unique(t), "next", 300*time.Millisecond, time.Second, nil)
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Fatalf("a 300ms wait lasted %s (ended by the context: %v), holder %q, %v", took.Round(time.Millisecond), ctx.Err() != nil, holder, err)
	}
	if err != nil || !strings.HasPrefix(holder, "run-") {
		t.Errorf("the wait on short runs ended with holder %q, %v; want one of the runs (held)", holder, err)
	}
}

// A renewal sent and stored while a slow read is in flight was first seen
// once that read returned, not when it began: stamped at its start, the
// holder's Lease was taken before its fence (its last renewal sent, plus
// its duration, less the margin) had ended.
func TestASlowReadDoesNotEndAHoldersFenceEarly(t *testing.T) {
	const d = 2 * time.Second
	f := newFake("partitioned", 2)
	var sent time.Time
	f.beforeGet = func(f *fakeLeases, n int) error {
		if n == 0 {
			time.Sleep(900 * time.Millisecond)
			sent = time.Now()
			f.write("partitioned", 2, sent) // its last renewal; then partitioned
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	holder, err := take(ctx, lockOn(f, "next"), unique(t), "next", 10*time.Second, d, nil)
	if err != nil || holder != "next" {
		t.Fatalf("take: %q, %v", holder, err)
	}
	fenceEnd := sent.Add(d - fenceMargin(d))
	if f.takenAt.Before(fenceEnd) {
		t.Errorf("taken %s before the holder's fence ended (renewal sent at +%s, taken at +%s)",
			fenceEnd.Sub(f.takenAt).Round(time.Millisecond), sent.Sub(f.start).Round(time.Millisecond), f.takenAt.Sub(f.start).Round(time.Millisecond))
	}
}

// unique keeps this process's sightings of one run of a test from the
// next (-count=N): the Lease API in memory numbers versions from 1 again.
func unique(t *testing.T) string { return fmt.Sprintf("%s/%d", t.Name(), time.Now().UnixNano()) }

// failUpdates is a Lease API whose updates fail with err.
type failUpdates struct {
	*fakeLeases
	err error
}

func (f failUpdates) Leases(string) coordinationv1client.LeaseInterface { return f }
func (f failUpdates) Update(context.Context, *coordinationv1.Lease, metav1.UpdateOptions) (*coordinationv1.Lease, error) {
	return nil, f.err
}

// A is killed with a renewal in flight (stored late); B takes the Lease
// and is killed at once. One write each proves neither alive: B's Lease is
// taken once it expired. Counted across holders, the two writes ended the
// wait at its deadline naming B, who never wrote again.
func TestTwoHoldersKilledOneAfterTheOtherAreOutlasted(t *testing.T) {
	f := newFake("A", 1)
	f.beforeGet = func(f *fakeLeases, n int) error {
		switch n {
		case 1:
			f.write("A", 1, time.Now())
		case 2:
			f.write("B", 1, time.Now())
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	holder, err := take(ctx, lockOn(f, "next"), unique(t), "next", 300*time.Millisecond, time.Second, nil)
	if err != nil || holder != "next" {
		t.Fatalf("take after %s: holder %q, %v; want B's Lease taken once it expired", time.Since(f.start).Round(time.Millisecond), holder, err)
	}
}

// A renews twice during the wait and dies; its Lease expires before the
// deadline, and this identity may not update Leases. The wait ends with
// the Forbidden error, not "held by A".
func TestAnExpiredLeaseThatCannotBeTakenSaysWhy(t *testing.T) {
	f := newFake("A", 1)
	f.beforeGet = func(f *fakeLeases, n int) error {
		if n == 1 || n == 2 {
			f.write("A", 1, time.Now())
		}
		return nil
	}
	g := failUpdates{f, apierrors.NewForbidden(schema.GroupResource{Group: "coordination.k8s.io", Resource: "leases"}, LeaseName, nil)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	holder, err := take(ctx, newLock(g, "ns", "next"), unique(t), "next", 2*time.Second, time.Second, nil)
	if !apierrors.IsForbidden(err) {
		t.Fatalf("take after %s: holder %q, %v; want the Forbidden error", time.Since(f.start).Round(time.Millisecond), holder, err)
	}
}

// A holder's Lease, a successor whose Pod read is slower than a retry
// period (an API server under load): the read just before the Lease
// expired is followed by the slow proof, and the deadline is checked past
// the expiry. The Lease is taken on the next pass; before, the wait ended
// with "could not take the Lease ... no answer".
func TestASlowSuccessorsProofStillTakesAnExpiredLease(t *testing.T) {
	f := newFake("old [operator pod ns/old uid-old container c proc old]", 1)
	kube := kubefake.NewSimpleClientset()
	kube.PrependReactor("get", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		if e := time.Since(f.start); e > 600*time.Millisecond && e < 1000*time.Millisecond {
			time.Sleep(time.Until(f.start.Add(1200 * time.Millisecond)))
		}
		return true, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "old", UID: "uid-old"}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}, nil
	})
	succ := &Successor{Self: Self{Role: "operator", Namespace: "ns", Pod: "me", UID: "uid-me", Container: "c", Process: "me", Started: time.Now()}, Pods: kube, Log: logr.Discard()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	holder, err := take(ctx, lockOn(f, "next"), unique(t), "next", 300*time.Millisecond, time.Second, succ)
	if err != nil || holder != "next" {
		t.Fatalf("take after %s: holder %q, %v; want the expired Lease taken", time.Since(f.start).Round(time.Millisecond), holder, err)
	}
}

// A wait cancelled (SIGTERM, a shutdown) while another holds the Lease ends
// with the cancellation, naming the holder. Before, it returned the holder
// as the one that kept the Lease, and the CLI said "still after" a wait
// that had not run out.
func TestACancelledWaitSaysItWasCancelled(t *testing.T) {
	f := newFake("alive", 60)
	ctx, cancel := context.WithCancel(context.Background())
	f.beforeGet = func(f *fakeLeases, n int) error {
		if n == 1 {
			cancel()
		}
		return nil
	}
	holder, err := take(ctx, lockOn(f, "next"), unique(t), "next", time.Minute, time.Second, nil)
	if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "held by alive") {
		t.Fatalf("take cancelled during its wait: holder %q, %v; want an error wrapping context.Canceled that names the holder", holder, err)
	}
}

// The same, the cancellation failing a read once the holder's Lease has
// expired and the wait is past its deadline: the read's error is the
// cancellation's, not an API server's, and is not reported as one ("is the
// API server reachable").
func TestAReadCancelledPastTheDeadlineSaysItWasCancelled(t *testing.T) {
	f := newFake("dead", 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.beforeGet = func(f *fakeLeases, n int) error {
		// From the holder's expiry on (its Lease was written at start,
		// and is first seen later still), before any read could free it.
		if time.Since(f.start) >= time.Second {
			cancel()
			return context.Canceled
		}
		return nil
	}
	holder, err := take(ctx, lockOn(f, "next"), unique(t), "next", 300*time.Millisecond, time.Second, nil)
	if err == nil || !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "held by dead") || strings.Contains(err.Error(), "reachable") {
		t.Fatalf("take cancelled during a read past its deadline: holder %q, %v; want an error wrapping context.Canceled that names the holder", holder, err)
	}
}
