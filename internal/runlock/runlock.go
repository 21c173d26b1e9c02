// Package runlock makes migrate and rollback runs take turns: each holds a
// coordination.k8s.io Lease for its whole run and renews it, so a pre-hook,
// a Job, the operator and a person at a terminal never replace NADs at the
// same time. A killed holder's Lease expires by itself, and is taken within
// its duration plus one retry period by whoever wants it next, whatever
// that one's wait.
//
// Acquiring is done here, not by client-go's leader elector, because the
// elector counts a held Lease's age from its own first sight of it: an
// entry point that retries with short waits (the operator's NADMigrations,
// the legacy-NAD watch) builds a new elector for each attempt, never waits
// a whole Lease duration, and so never takes a dead holder's Lease. Here
// the first sight of each Lease record is kept for the whole process, and
// a wait that ends before the holder was seen renewing twice is stretched
// to the Lease's expiry (one renewal may be a killed holder's last, stored
// after its death). Once taken, the Lease is renewed and released by
// client-go's elector.
package runlock

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// LeaseName is the Lease every run takes, in the backup namespace.
const LeaseName = "netconf-migrator-run"

// DefaultDuration is how long a holder that stops renewing (killed) keeps
// the Lease; it renews within two thirds of it.
const DefaultDuration = 15 * time.Second

// MaxDuration bounds a Lease's duration: a holder killed while it holds
// the Lease keeps every other run out for that long (a container that
// restarts in the same Pod excepted), and the NADs it was replacing stay
// missing meanwhile. A longer Lease buys nothing: a holder renews it
// every eighth of it.
const MaxDuration = 5 * time.Minute

// ValidDuration says whether a Lease may last duration. The Lease
// records it in whole seconds (leaseDurationSeconds, truncated), and
// another run reads that record, while this one fences its writes by the
// duration it was given: 1900ms would be read as 1s, and another run
// could take the Lease while this one still writes. It may not last longer
// than MaxDuration.
func ValidDuration(duration time.Duration) error {
	if duration < time.Second || duration%time.Second != 0 {
		return fmt.Errorf("%s is not a whole number of seconds of at least 1s: a Lease records its duration in whole seconds, and another run reads only that", duration)
	}
	if duration > MaxDuration {
		return fmt.Errorf("%s is longer than %s: a run killed while it holds the Lease would keep every other run out, and the NADs it was replacing missing, for that long", duration, MaxDuration)
	}
	return nil
}

// ErrHeld is returned when another run kept the Lease for the whole wait.
var ErrHeld = errors.New("another netconf-migrator run holds the Lease")

// ErrLost is returned by Held.Fence once this process cannot show that it
// still holds the Lease: another run may hold it, so nothing may be written
// that the other could be writing too.
var ErrLost = errors.New("this run no longer provably holds the run Lease")

// RetryPeriod is how often a Lease of duration is renewed and how often a
// waiting run looks at it again.
func RetryPeriod(duration time.Duration) time.Duration {
	return max(duration/8, 100*time.Millisecond)
}

// Held is a Lease this run holds.
type Held struct {
	// Lost is closed when the Lease could not be renewed: another run may
	// take it from then on, so this one must stop starting work.
	Lost     <-chan struct{}
	release  context.CancelFunc
	done     chan struct{}
	lock     *renewals
	duration time.Duration
}

// Release gives the Lease up at once (the next run need not wait for it
// to expire) and returns once it is released.
func (h *Held) Release() {
	h.release()
	<-h.done
}

// fenceMargin is kept between the end of what this holder may send and the
// earliest moment another may take the Lease: a request still in flight at
// its deadline is processed within it.
func fenceMargin(duration time.Duration) time.Duration {
	return max(duration/5, 500*time.Millisecond)
}

// Fence returns the time until which this process may send a write that no
// other run may send at the same time (a NAD's delete or create, a
// backup's save or removal): the Lease's last renewal this process sent,
// plus its duration, less a margin. Another run takes the Lease only once
// it saw no renewal for a whole duration, and it can only have seen the
// renewal after it was sent, so a write bounded by this deadline has ended
// before another run may start. ErrLost once that time is too close.
func (h *Held) Fence() (time.Time, error) {
	select {
	case <-h.Lost:
		return time.Time{}, ErrLost
	default:
	}
	until := h.lock.lastRenewal().Add(h.duration - fenceMargin(h.duration))
	if time.Until(until) < fenceMargin(h.duration) {
		return time.Time{}, fmt.Errorf("%w: its last renewal is %s old", ErrLost, time.Since(h.lock.lastRenewal()).Round(time.Millisecond))
	}
	return until, nil
}

// observation is a version of a Lease (its resourceVersion: each renewal
// writes a new one) and when this process first saw it.
type observation struct {
	version string
	at      time.Time
}

// sightings keeps, per Lease, when this process first saw its current
// record, across every attempt of every entry point.
var sightings = struct {
	sync.Mutex
	m map[string]observation
}{m: map[string]observation{}}

// sighted returns when this process first saw version of the Lease key.
func sighted(key, version string, now time.Time) time.Time {
	sightings.Lock()
	defer sightings.Unlock()
	o, ok := sightings.m[key]
	if !ok || o.version != version {
		o = observation{version: version, at: now}
		sightings.m[key] = o
	}
	return o.at
}

// renewals is the Lease lock client-go's elector renews through: it notes
// when each renewal this process wrote was sent, and the resourceVersion
// of the Lease it last read.
type renewals struct {
	*resourcelock.LeaseLock
	mu   sync.Mutex
	last time.Time
	read string
}

// readVersion is the resourceVersion of the Lease last read: what tells
// one record from the next. The raw record LeaseLock.Get returns does
// not: it keeps the renewal time in whole seconds, so a holder renewing
// more often than once a second (Leases under 8 s) looks as if it had
// not renewed, and a renewal stored late in the same second as the one
// before is not seen at all.
func (r *renewals) readVersion() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.read
}

// newLock is the lock on namespace/LeaseName, as identity, through leases:
// the Lease it reads noted (readVersion) and the renewals it sends.
func newLock(leases coordinationv1client.LeasesGetter, namespace, identity string) *renewals {
	lock := &renewals{}
	lock.LeaseLock = &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: namespace, Name: LeaseName},
		Client:     readVersions{leases, lock},
		LockConfig: resourcelock.ResourceLockConfig{Identity: identity},
	}
	return lock
}

// readVersions passes Lease requests on and notes each Lease read.
type readVersions struct {
	coordinationv1client.LeasesGetter
	r *renewals
}

func (v readVersions) Leases(namespace string) coordinationv1client.LeaseInterface {
	return readLeases{v.LeasesGetter.Leases(namespace), v.r}
}

type readLeases struct {
	coordinationv1client.LeaseInterface
	r *renewals
}

func (l readLeases) Get(ctx context.Context, name string, opts metav1.GetOptions) (*coordinationv1.Lease, error) {
	lease, err := l.LeaseInterface.Get(ctx, name, opts)
	if err == nil {
		l.r.mu.Lock()
		l.r.read = lease.ResourceVersion
		l.r.mu.Unlock()
	}
	return lease, err
}

func (r *renewals) note(rec resourcelock.LeaderElectionRecord) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if t := rec.RenewTime.Time; t.After(r.last) {
		r.last = t
	}
}

func (r *renewals) lastRenewal() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.last
}

func (r *renewals) Create(ctx context.Context, rec resourcelock.LeaderElectionRecord) error {
	err := r.LeaseLock.Create(ctx, rec)
	if err == nil {
		r.note(rec)
	}
	return err
}

func (r *renewals) Update(ctx context.Context, rec resourcelock.LeaderElectionRecord) error {
	err := r.LeaseLock.Update(ctx, rec)
	if err == nil && rec.HolderIdentity == r.Identity() {
		r.note(rec)
	}
	return err
}

// Acquire takes the Lease namespace/LeaseName as identity, waiting at most
// wait for another run to release it or for its Lease to expire; duration
// is how long the Lease outlives this holder when it stops renewing. A
// holder not seen renewing twice during the whole wait may be dead: the
// wait is then stretched until its Lease may be taken (at most its
// duration plus a retry period from the first sight of its last renewal).
func Acquire(ctx context.Context, cfg *rest.Config, namespace, identity string, wait, duration time.Duration) (*Held, error) {
	return AcquireAs(ctx, cfg, namespace, identity, wait, duration, nil)
}

// AcquireAs is Acquire, with a successor that may take the Lease from a
// holder it proves dead without waiting for it to expire: once the
// holder's writes in flight have ended (the fence margin after its death).
func AcquireAs(ctx context.Context, cfg *rest.Config, namespace, identity string, wait, duration time.Duration, succ *Successor) (*Held, error) {
	if duration <= 0 {
		duration = DefaultDuration
	}
	if err := ValidDuration(duration); err != nil {
		return nil, fmt.Errorf("the Lease %s/%s: %w", namespace, LeaseName, err)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building a client for the run's Lease: %w", err)
	}
	lock := newLock(kube.CoordinationV1(), namespace, identity)
	holder, err := take(ctx, lock, namespace+"/"+LeaseName, identity, wait, duration, succ)
	if err != nil {
		return nil, err
	}
	if holder != identity {
		return nil, fmt.Errorf("%w %s/%s: %s, still after %s; try again once it has finished", ErrHeld, namespace, LeaseName, holder, wait)
	}

	// Taken: client-go's elector, with the same identity, sees itself as
	// the holder at once and renews from here on.
	acquired, lost, done := make(chan struct{}), make(chan struct{}), make(chan struct{})
	le, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock: lock, Name: LeaseName, ReleaseOnCancel: true,
		LeaseDuration: duration, RenewDeadline: duration * 2 / 3, RetryPeriod: RetryPeriod(duration),
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
	select {
	case <-acquired:
		return &Held{Lost: lost, release: cancel, done: done, lock: lock, duration: duration}, nil
	case <-lost:
	case <-ctx.Done():
	}
	cancel()
	<-done
	return nil, fmt.Errorf("took the Lease %s/%s but could not renew it: %w", namespace, LeaseName, context.Cause(ctx))
}

// take writes identity into the Lease once it is free, released or
// expired, and returns the holder at the end of the wait.
func take(ctx context.Context, lock *renewals, key, identity string, wait, duration time.Duration, succ *Successor) (string, error) {
	retry := RetryPeriod(duration)
	// deadAt is when each holder was first proven dead by this wait.
	deadAt := map[string]time.Time{}
	// The wait ends at deadline when the holder is proven alive, and is
	// stretched (until) while it may be dead.
	deadline := time.Now().Add(wait)
	until := deadline
	// renewed counts the versions of the Lease this wait saw, written by
	// the current holder after the first it read of that holder. A holder
	// killed with a renewal in flight can still show one, stored after its
	// death (its elector sends one request at a time); only a second
	// proves it alive. Counted per holder: two holders killed one after
	// the other show one write each.
	var (
		lastVersion string
		renewed     int
		lastErr     error
		// Of the last record read, held by another: when this process first
		// saw it, when it expires, and its duration.
		seen, expires time.Time
		held          time.Duration
		// changes counts the holders that took the Lease from another
		// during this wait. Two mean the Lease is in use (short runs one
		// after another, each with an identity of its own, as the
		// operator's fixes take it, may never write twice): the wait ends
		// at its deadline. Each holder killed at once would take three.
		changes int
	)
	holder := ""
	// Cancelled (a SIGTERM, a shutdown) before the wait could tell: the
	// holder is named, but not as one that kept it (ErrHeld would say
	// "still after" the whole wait, and callers wait on), nor the read the
	// cancellation failed as an API server's answer.
	cancelled := func() (string, error) {
		by := ""
		if holder != "" && holder != identity {
			by = ", held by " + holder
		}
		return "", fmt.Errorf("waiting for the Lease %s%s: %w", key, by, context.Cause(ctx))
	}
	for {
		now := time.Now()
		rec, _, err := lock.Get(ctx)
		if ctx.Err() != nil {
			return cancelled()
		}
		// A version is first seen once the Get that read it returned: a
		// renewal stored while a slow Get was in flight was sent after
		// that Get began, and its holder fences its writes from its send.
		read := time.Now()
		switch {
		case apierrors.IsNotFound(err):
			rec := record(identity, duration, now, 0)
			if err = lock.Create(ctx, rec); err == nil {
				return identity, nil
			}
			lastErr = err
		case err != nil:
			lastErr = err
		default:
			lastErr = nil
			version := lock.readVersion()
			switch {
			case rec.HolderIdentity != holder:
				if holder != "" && lastVersion != "" {
					changes++
				}
				renewed = 0
			case lastVersion != "" && version != lastVersion:
				renewed++
			}
			holder, lastVersion = rec.HolderIdentity, version
			held = time.Duration(rec.LeaseDurationSeconds) * time.Second
			seen = sighted(key, version, read)
			expires = seen.Add(held)
			free := holder == "" || holder == identity || !read.Before(expires)
			if !free && succ != nil {
				if at, ok := successorMay(ctx, succ, deadAt, holder, held); ok {
					if free = !read.Before(at); !free && until.Before(at) {
						until = at.Add(retry)
					}
				}
			}
			if free {
				transitions := rec.LeaderTransitions
				if holder != identity {
					transitions++
				}
				if err = lock.Update(ctx, record(identity, duration, now, transitions)); err == nil {
					return identity, nil
				}
				lastErr = err
			}
		}
		if now := time.Now(); !now.Before(deadline) {
			next, alive := waitOn(now, renewed, seen, expires, held, retry)
			alive = alive || changes >= 2
			switch {
			case holder == "" || holder == identity:
				// Nothing held it, yet it could not be read or taken.
			case !now.Before(expires) && lastErr != nil:
				// The holder's Lease expired and this run could not take it
				// (or read it since): the error says why.
				until = now
			case !now.Before(expires.Add(retry)):
				// Expired, and nothing failed: the last pass read it just
				// before (a slow successor's proof in between). One more.
				until = now.Add(retry)
			case alive:
				return holder, nil
			case now.Before(until):
				// Stretched already (a successor's proof): wait on.
			case now.Before(next):
				until = next
			}
			if !now.Before(until) {
				if holder != "" && holder != identity && lastErr == nil {
					return holder, nil
				}
				if lastErr == nil {
					lastErr = errors.New("no answer")
				}
				return "", fmt.Errorf("could not take the Lease %s within %s (is the API server reachable, and may this identity get, create and update Leases there?): %w", key, wait, lastErr)
			}
		}
		select {
		case <-ctx.Done():
			return cancelled()
		case <-time.After(retry):
		}
	}
}

// waitOn says, at now, past a wait's deadline, with the Lease held by
// another, whether the holder is alive (seen writing twice during the
// wait: the wait ends), and else until when to wait on. One seen writing
// once may have been killed right after, its last renewal stored late:
// until its next renewal was due (its retry period twice, and one of this
// wait's own, from that renewal's sight). One that did not write (again)
// may be dead: until its Lease may be taken, one retry period after it
// expires. Each is bounded: a live holder writes, and a dead one's Lease
// expires.
func waitOn(now time.Time, renewed int, seen, expires time.Time, holderDuration, retry time.Duration) (time.Time, bool) {
	if renewed >= 2 {
		return now, true
	}
	if due := seen.Add(2*RetryPeriod(holderDuration) + retry); renewed == 1 && now.Before(due) {
		return due, false
	}
	return expires.Add(retry), false
}

func record(identity string, duration time.Duration, now time.Time, transitions int) resourcelock.LeaderElectionRecord {
	t := metav1.NewTime(now)
	return resourcelock.LeaderElectionRecord{
		HolderIdentity: identity, LeaseDurationSeconds: int(duration / time.Second),
		AcquireTime: t, RenewTime: t, LeaderTransitions: transitions,
	}
}

// successorMay returns when succ may take the Lease of holder, a Lease of
// duration: the fence margin after the moment by which the holder was
// proven dead. A holder sends no write past its fence, and a write it sent
// is processed within the margin; a dead holder sends nothing after its
// death, so once the margin has passed since then nothing of it is in
// flight.
func successorMay(ctx context.Context, succ *Successor, deadAt map[string]time.Time, holder string, duration time.Duration) (time.Time, bool) {
	since, ok := deadAt[holder]
	if !ok {
		var why string
		if since, why, ok = succ.DeadSince(ctx, holder); !ok {
			return time.Time{}, false
		}
		deadAt[holder] = since
		succ.Log.Info("Taking the run Lease from a holder proven gone once its writes in flight have ended, without waiting for it to expire",
			"holder", holder, "reason", why, "after", max(0, time.Until(since.Add(fenceMargin(duration)))).Round(time.Millisecond).String())
	}
	return since.Add(fenceMargin(duration)), true
}
