package runlock_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	klog.SetLogger(logr.Discard()) // client-go's elector logs every renewal failure
	os.Exit(testenv.Main(m, testenv.Options{WithoutNADCRD: true}, &env))
}

var namespaces atomic.Int64

// namespace makes a namespace of the test's own.
func namespace(t *testing.T) string {
	t.Helper()
	ns := fmt.Sprintf("lease-%d", namespaces.Add(1))
	if err := env.CreateNamespace(context.Background(), ns, nil); err != nil {
		t.Fatal(err)
	}
	return ns
}

// deadHolder writes the Lease as a run left it that was killed right after
// renewing it: held, renewed now, never again.
func deadHolder(t *testing.T, ns string, duration time.Duration) *coordinationv1.Lease {
	t.Helper()
	now := metav1.NewMicroTime(time.Now())
	l := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: runlock.LeaseName},
		Spec: coordinationv1.LeaseSpec{
			HolderIdentity: ptr.To("killed-run"), LeaseDurationSeconds: ptr.To(int32(duration / time.Second)),
			AcquireTime: &now, RenewTime: &now, LeaseTransitions: ptr.To(int32(1)),
		},
	}
	if err := env.Client.Create(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	return l
}

func lease(t *testing.T, ns string) *coordinationv1.Lease {
	t.Helper()
	l := &coordinationv1.Lease{}
	if err := env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: runlock.LeaseName}, l); err != nil {
		t.Fatal(err)
	}
	return l
}

// The operator's NADMigrations (10 s) and the legacy-NAD watch (2 s) try
// again and again with waits shorter than the Lease's 15 s; a killed
// holder's Lease must still be taken once it expired, counted from the
// first time this process saw it, not from each attempt's start. Before,
// each attempt counted from its own start and none ever took it.
func TestShortAttemptsTakeADeadHoldersLease(t *testing.T) {
	ns := namespace(t)
	const duration, wait = 3 * time.Second, time.Second
	dead := deadHolder(t, ns, duration)
	attempts := 0
	var held *runlock.Held
	for held == nil {
		attempts++
		// Bounded: the Lease expires within 3 attempts of 1 s, plus one
		// retry period.
		if attempts > 6 {
			t.Fatalf("attempts with a %s wait never took a Lease whose holder died %s ago", wait, time.Since(dead.Spec.RenewTime.Time))
		}
		h, err := runlock.Acquire(context.Background(), env.Config, ns, "next-run", wait, duration)
		switch {
		case errors.Is(err, runlock.ErrHeld):
		case err != nil:
			t.Fatal(err)
		default:
			held = h
		}
	}
	defer held.Release()
	taken := lease(t, ns)
	late := taken.Spec.AcquireTime.Sub(dead.Spec.RenewTime.Time)
	t.Logf("taken by attempt %d, %s after the dead holder's last renewal (Lease duration %s, retry period %s)", attempts, late, duration, runlock.RetryPeriod(duration))
	if late < duration {
		t.Errorf("the Lease was taken %s after its holder's last renewal, before its %s expired", late, duration)
	}
	// Within its duration and a retry period in theory; the bound here
	// leaves room for a loaded machine's slow answers.
	if late > 2*duration {
		t.Errorf("the Lease was taken %s after its holder's last renewal, more than twice its duration", late)
	}
	if *taken.Spec.HolderIdentity != "next-run" || *taken.Spec.LeaseTransitions != 2 {
		t.Errorf("Lease after the takeover: holder %s, transitions %d", *taken.Spec.HolderIdentity, *taken.Spec.LeaseTransitions)
	}
}

// A one-shot run whose wait is shorter than the Lease's duration waits on
// when the holder did not renew once during the wait: it may be dead.
func TestAShortWaitOutlastsADeadHolder(t *testing.T) {
	ns := namespace(t)
	const duration = 2 * time.Second
	deadHolder(t, ns, duration)
	held, err := runlock.Acquire(context.Background(), env.Config, ns, "next-run", 200*time.Millisecond, duration)
	if err != nil {
		t.Fatalf("a 200ms wait on a holder that never renews: %v", err)
	}
	held.Release()
}

// A holder killed with a renewal in flight: the renewal is stored after
// the next run's wait began, and none follows. Before, a renewal seen
// during the wait counted as proof of life, the wait ended on time, and
// the next run (the CLI after an operator's SIGKILL, with --lease-wait 1s)
// gave up with "still after 1s" on a dead holder. Now it is taken once
// the Lease expired.
func TestALastRenewalStoredLateDoesNotProveTheHolderAlive(t *testing.T) {
	for name, gap := range map[string]time.Duration{"a second after the one before": time.Second} {
		t.Run(name, func(t *testing.T) {
			ns := namespace(t)
			const duration, wait = 3 * time.Second, time.Second
			dead := deadHolder(t, ns, duration)
			before := metav1.NewMicroTime(dead.Spec.RenewTime.Add(-gap))
			dead.Spec.RenewTime = &before
			if err := env.Client.Update(context.Background(), dead); err != nil {
				t.Fatal(err)
			}
			// The late renewal is stored once the waiting run has read
			// the Lease.
			read := make(chan struct{})
			var once atomic.Bool
			cfg := rest.CopyConfig(env.Config)
			cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
				return roundTripper(func(r *http.Request) (*http.Response, error) {
					resp, err := rt.RoundTrip(r)
					if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/leases/"+runlock.LeaseName) && once.CompareAndSwap(false, true) {
						close(read)
					}
					return resp, err
				})
			}
			type result struct {
				held *runlock.Held
				err  error
			}
			done := make(chan result, 1)
			go func() {
				h, err := runlock.Acquire(context.Background(), cfg, ns, "next-run", wait, duration)
				done <- result{h, err}
			}()
			<-read
			last := metav1.NewMicroTime(before.Add(gap))
			dead.Spec.RenewTime = &last
			if err := env.Client.Update(context.Background(), dead); err != nil {
				t.Fatal(err)
			}
			stored := time.Now()
			r := <-done
			if r.err != nil {
				t.Fatalf("a %s wait on a holder whose last renewal was stored during the wait, and none after: %v", wait, r.err)
			}
			defer r.held.Release()
			if late := lease(t, ns).Spec.AcquireTime.Sub(stored); late < duration {
				t.Errorf("the Lease was taken %s after its holder's last renewal was stored, before its %s expired", late, duration)
			}
		})
	}
}

// A live holder keeps its Lease against any number of short attempts, and
// gives it up at once on Release.
func TestALiveHolderKeepsItsLease(t *testing.T) {
	ns := namespace(t)
	const duration = 2 * time.Second
	first, err := runlock.Acquire(context.Background(), env.Config, ns, "first", time.Second, duration)
	if err != nil {
		t.Fatal(err)
	}
	for range 4 { // 4 s of attempts: twice the Lease's duration
		if h, err := runlock.Acquire(context.Background(), env.Config, ns, "second", time.Second, duration); !errors.Is(err, runlock.ErrHeld) {
			if h != nil {
				h.Release()
			}
			t.Fatalf("an attempt against a live holder: %v, want ErrHeld", err)
		}
	}
	if _, err := first.Fence(); err != nil {
		t.Fatalf("the live holder's fence: %v", err)
	}
	first.Release()
	second, err := runlock.Acquire(context.Background(), env.Config, ns, "second", 0, duration)
	if err != nil {
		t.Fatalf("after Release, with no wait: %v", err)
	}
	second.Release()
}

// A holder whose renewals fail (partitioned from the API server, paused)
// drops its fence before another run may take the Lease: every write it
// sent ended before the other's first.
func TestTheFenceFallsBeforeAnotherRunMayTakeOver(t *testing.T) {
	ns := namespace(t)
	const duration = 3 * time.Second
	var cut atomic.Bool
	cfg := rest.CopyConfig(env.Config)
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(r *http.Request) (*http.Response, error) {
			if cut.Load() {
				return nil, errors.New("partitioned")
			}
			return rt.RoundTrip(r)
		})
	}
	first, err := runlock.Acquire(context.Background(), cfg, ns, "partitioned", time.Second, duration)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Release()
	cut.Store(true)
	var lastUntil time.Time
	for {
		until, err := first.Fence()
		if errors.Is(err, runlock.ErrLost) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		lastUntil = until
		time.Sleep(50 * time.Millisecond)
	}
	second, err := runlock.Acquire(context.Background(), env.Config, ns, "next", time.Minute, duration)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Release()
	taken := lease(t, ns).Spec.AcquireTime.Time
	if !taken.After(lastUntil) {
		t.Errorf("the next run took the Lease at %s, before the partitioned holder's fence ended at %s", taken.Format(time.StampMicro), lastUntil.Format(time.StampMicro))
	}
	t.Logf("fence ended %s before the takeover", taken.Sub(lastUntil))
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// N4 of issue 35: a Lease records its duration in whole seconds, while
// its holder fenced its writes by the exact duration. With 1900ms the
// record said 1s, and a second run took the Lease 185 ms before the
// first one's fence ended. Such a duration is refused before anything is
// written; whole seconds are taken.
func TestALeaseLastsWholeSeconds(t *testing.T) {
	for d, ok := range map[time.Duration]bool{
		1900 * time.Millisecond: false, 500 * time.Millisecond: false, 2500 * time.Millisecond: false,
		time.Second: true, 2 * time.Second: true, runlock.DefaultDuration: true,
		runlock.MaxDuration: true, runlock.MaxDuration + time.Second: false, 24 * time.Hour: false,
	} {
		if err := runlock.ValidDuration(d); (err == nil) != ok {
			t.Errorf("ValidDuration(%s) = %v, want valid: %v", d, err, ok)
		}
	}
	ns := namespace(t)
	h, err := runlock.Acquire(context.Background(), env.Config, ns, "fractional", time.Second, 1900*time.Millisecond)
	if err == nil {
		h.Release()
		t.Fatal("a Lease of 1900ms was taken: another run would read it as 1s")
	}
	if !strings.Contains(err.Error(), "whole number of seconds") {
		t.Errorf("refusing 1900ms: %v, want the reason", err)
	}
	if l := &(coordinationv1.Lease{}); env.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: runlock.LeaseName}, l) == nil {
		t.Errorf("the refused attempt wrote the Lease: %+v", l.Spec)
	}
}
