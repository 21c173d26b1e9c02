package runlock

// take() against a Lease API of its own, in memory: faults an API server
// does not make on cue (a failed or slow read at a given moment, holders
// that follow one another).

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
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

func lockOn(f *fakeLeases, identity string) *renewals {
	lock := &renewals{}
	lock.LeaseLock = &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: "ns", Name: LeaseName},
		Client:     readVersions{f, lock},
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	return lock
}

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
	holder, err := take(ctx, lockOn(f, "next"), t.Name(), "next", 300*time.Millisecond, time.Second, nil)
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
	holder, err := take(ctx, lockOn(f, "next"), t.Name(), "next", 300*time.Millisecond, time.Second, nil)
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
	holder, err := take(ctx, lockOn(f, "next"), t.Name(), "next", 300*time.Millisecond, time.Second, nil)
	if took := time.Since(start); took > 2500*time.Millisecond {
		t.Fatalf("a 300ms wait lasted %s (ended by the context: %v), holder %q, %v", took.Round(time.Millisecond), ctx.Err() != nil, holder, err)
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
	holder, err := take(ctx, lockOn(f, "next"), t.Name(), "next", 10*time.Second, d, nil)
	if err != nil || holder != "next" {
		t.Fatalf("take: %q, %v", holder, err)
	}
	fenceEnd := sent.Add(d - fenceMargin(d))
	if f.takenAt.Before(fenceEnd) {
		t.Errorf("taken %s before the holder's fence ended (renewal sent at +%s, taken at +%s)",
			fenceEnd.Sub(f.takenAt).Round(time.Millisecond), sent.Sub(f.start).Round(time.Millisecond), f.takenAt.Sub(f.start).Round(time.Millisecond))
	}
}
