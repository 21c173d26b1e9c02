// Package runlock makes migrate and rollback runs take turns: each holds a
// coordination.k8s.io Lease for its whole run and renews it, so a pre-hook,
// a Job and a person at a terminal never replace NADs at the same time. A
// killed holder's Lease expires by itself.
package runlock

import (
	"context"
	"errors"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseName is the Lease every run takes, in the backup namespace.
const LeaseName = "netconf-migrator-run"

// DefaultDuration is how long a holder that stops renewing (killed) keeps
// the Lease; it renews within two thirds of it.
const DefaultDuration = 15 * time.Second

// Held is a Lease this run holds.
type Held struct {
	// Lost is closed when the Lease could not be renewed: another run may
	// take it from then on, so this one must stop starting work.
	Lost    <-chan struct{}
	release context.CancelFunc
	done    chan struct{}
}

// Release gives the Lease up at once (the next run need not wait for it
// to expire) and returns once it is released.
func (h *Held) Release() {
	h.release()
	<-h.done
}

// ErrHeld is returned when another run kept the Lease for the whole wait.
var ErrHeld = errors.New("another netconf-migrator run holds the Lease")

// Acquire takes the Lease namespace/LeaseName as identity, waiting at most
// wait for another run to release it or for its Lease to expire; duration
// is how long the Lease outlives a holder that stops renewing.
func Acquire(ctx context.Context, cfg *rest.Config, namespace, identity string, wait, duration time.Duration) (*Held, error) {
	if duration <= 0 {
		duration = DefaultDuration
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building a client for the run's Lease: %w", err)
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metaOf(namespace),
		Client:     kube.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	acquired, lost, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, Name: LeaseName, ReleaseOnCancel: true,
		LeaseDuration: duration, RenewDeadline: duration * 2 / 3, RetryPeriod: max(duration/8, 100*time.Millisecond),
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(context.Context) { close(acquired) },
			OnStoppedLeading: func() { close(lost) },
		},
	})
	if err != nil {
		return nil, fmt.Errorf("setting up the run's Lease: %w", err)
	}
	// The Lease outlives a SIGTERM until Release: the run finishes the
	// replacement it started while still holding it.
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(done)
		le.Run(runCtx)
	}()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-acquired:
		return &Held{Lost: lost, release: cancel, done: done}, nil
	case <-timer.C:
	case <-ctx.Done():
	}
	holder := le.GetLeader()
	cancel()
	<-done
	if holder == "" || holder == identity {
		return nil, fmt.Errorf("could not take the Lease %s/%s within %s (is the API server reachable, and may this identity get, create and update Leases there?)", namespace, LeaseName, wait)
	}
	return nil, fmt.Errorf("%w %s/%s: %s, still after %s; try again once it has finished", ErrHeld, namespace, LeaseName, holder, wait)
}

func metaOf(namespace string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Namespace: namespace, Name: LeaseName}
}
