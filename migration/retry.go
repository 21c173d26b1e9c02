package migration

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/clock"

	"github.com/harvester/netconf-migrator/internal/apistatus"
	"github.com/harvester/netconf-migrator/internal/runlock"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// Class says what to do after an error from the API server.
type Class int

const (
	// Final errors are the answer for this NAD: retrying cannot help.
	Final Class = iota
	// Conflict means another writer was first: read again and recompute.
	Conflict
	// Gone means the NAD was deleted: nothing to do.
	Gone
	// Retry errors are transient: wait and try the same write again.
	Retry
)

// Classify sorts an error from the API server.
//
// An admission denial is final even when it arrives as HTTP 500:
// Harvester's validator answers "must be stopped at first" with
// InternalError, and a client that retried every 5xx would retry it
// forever.
func Classify(err error) Class {
	var rf replaceFailed
	if errors.As(err, &rf) {
		if Classify(rf.error) == Retry {
			return Retry
		}
		return Final
	}
	switch {
	case err == nil:
		return Final
	case apierrors.IsConflict(err), errors.Is(err, replace.ErrConflict):
		return Conflict
	case apierrors.IsNotFound(err):
		return Gone
	case apistatus.Refused(err):
		// A denial too, even when it arrives as HTTP 500.
		return Final
	case errors.Is(err, context.Canceled), errors.Is(err, runlock.ErrLost), errors.Is(err, replace.ErrKeyMissing):
		return Final
	case apierrors.IsResourceExpired(err) || apierrors.IsGone(err):
		// An expired continue token stays expired: the listing starts
		// again instead of retrying it.
		return Final
	}
	if s, ok := apierrors.SuggestsClientDelay(err); ok && s > 0 {
		// A 429 or 5xx with Retry-After: client-go has already retried it
		// 10 times, waiting as the server asked. One retry layer, not two.
		return Final
	}
	// Other 5xx (an unreachable webhook: "failed calling webhook"), timeouts,
	// dropped connections: a webhook restarting during certificate
	// rotation, or an API server under load. Retried here, within the
	// NAD's retry budget.
	return Retry
}

// IsAdmissionDenial reports whether an admission webhook refused the write.
func IsAdmissionDenial(err error) bool {
	_, ok := apistatus.DeniedBy(err)
	return ok
}

// Backoff is how long transient errors are retried: exponential from
// Initial, capped at Max per wait, until Budget is spent. The defaults ride
// out a webhook that is down for a minute or two.
type Backoff struct {
	Initial, Max, Budget time.Duration
	// Clock is what the waits between attempts wait on (the real clock
	// when nil): tests move a fake one instead of sleeping.
	Clock clock.Clock
}

// unset says whether no duration is set (the defaults apply).
func (b Backoff) unset() bool { return b.Initial == 0 && b.Max == 0 && b.Budget == 0 }

func (b Backoff) after(d time.Duration) <-chan time.Time {
	if b.Clock == nil {
		return time.After(d)
	}
	return b.Clock.After(d)
}

// DefaultBackoff waits 0.5s, 1s, 2s ... 16s, 16s ... for at most 3 minutes.
var DefaultBackoff = Backoff{Initial: 500 * time.Millisecond, Max: 16 * time.Second, Budget: 3 * time.Minute}

// Retry runs op until it succeeds, fails for good, or the budget is spent,
// waiting on ctx between attempts.
func (b Backoff) Retry(ctx context.Context, op func() error) error {
	_, err := b.retry(withWait(ctx, ctx), op)
	return err
}

// retry runs op until it succeeds, fails for good, or the budget is spent.
// It returns op's last error and how many attempts were made.
//
// The waits are apimachinery's wait.Backoff (doubling, capped, a quarter
// of jitter to spread the workers); the loop is ours because its bound is
// time, not a number of steps, and because it waits on another context
// than the one its requests carry (withWait), which util/retry cannot.
func (b Backoff) retry(ctx context.Context, op func() error) (attempts int, err error) {
	delays := wait.Backoff{Duration: b.Initial, Factor: 2, Jitter: 0.25, Cap: b.Max, Steps: math.MaxInt}.DelayFunc()
	spent := time.Duration(0)
	for {
		attempts++
		err = op()
		if err == nil || Classify(err) != Retry {
			return attempts, err
		}
		d := delays()
		if spent+d > b.Budget {
			return attempts, fmt.Errorf("giving up after %d attempts over %s: %w", attempts, spent.Round(time.Millisecond), err)
		}
		stop := waitOf(ctx)
		select {
		case <-stop.Done():
			return attempts, fmt.Errorf("%w (last error: %w)", stop.Err(), err)
		case <-b.after(d):
		}
		spent += d
	}
}

type waitKey struct{}

// withWait gives the requests made with ctx a separate context to wait on
// between attempts. A run stopping (deadline, SIGTERM) or a NAD's retry
// budget running out ends the waiting, while a request already sent is
// allowed to finish (bounded by the client's request timeout): a write in
// flight is never cut off between the API server storing it and us
// reading its answer.
func withWait(ctx, wait context.Context) context.Context {
	return context.WithValue(ctx, waitKey{}, wait)
}

// waitOf is the context retries wait on: the one withWait gave, else ctx.
func waitOf(ctx context.Context) context.Context {
	if w, ok := ctx.Value(waitKey{}).(context.Context); ok {
		return w
	}
	return ctx
}
