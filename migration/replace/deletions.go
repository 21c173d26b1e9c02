package replace

import (
	"context"
	"sync"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/harvester/netconf-migrator/internal/logging"
)

// Watcher watches the NADs of every namespace, for the replacements' one
// shared watch of deletions.
type Watcher interface {
	// Current returns a resourceVersion no older than any read that
	// returned before the call.
	Current(ctx context.Context) (string, error)
	// Watch watches NADs (their metadata is enough) from resourceVersion.
	Watch(ctx context.Context, resourceVersion string) (watch.Interface, error)
}

// deletions tells each replacement in flight when the object it deleted is
// gone, from one watch shared by all of them. A replacement waits about a
// second on Harvester's controllers' cleanup: read every 200 ms, that was
// five requests per replacement, most of all the requests a run sends.
//
// Nothing depends on an event arriving: a waiter reads the object once the
// watch runs, and again whenever the watch had to start over (any event in
// between may be lost) or a slow fallback interval passes. So a delete is
// seen either by that read or by an event from after it.
type deletions struct {
	w   Watcher
	log logr.Logger

	mu sync.Mutex
	// waiters are the subscriptions by the uid each waits on.
	waiters map[types.UID]map[*subscription]struct{}
	// running is the watch's stop, nil when none runs.
	running context.CancelFunc
	// up is closed once the current watch is established; down is
	// non-nil once starting it failed (for this round of waiters).
	up   chan struct{}
	down error
}

// subscription is one waiter's view of the watch.
type subscription struct {
	d   *deletions
	uid types.UID
	// gone is closed when the watch saw the object deleted.
	gone chan struct{}
	// again has a value when the watch started over: read the object
	// again, an event may have been missed.
	again chan struct{}
}

// subscribe registers a waiter for the deletion of uid and waits until the
// watch is established, starting it when none runs. It returns nil when the
// watch cannot run (no watch right, an error): the waiter then reads the
// object at its own pace.
func (d *deletions) subscribe(ctx context.Context, uid types.UID) *subscription {
	s := &subscription{d: d, uid: uid, gone: make(chan struct{}), again: make(chan struct{}, 1)}
	d.mu.Lock()
	if d.waiters == nil {
		d.waiters = map[types.UID]map[*subscription]struct{}{}
	}
	if d.waiters[uid] == nil {
		d.waiters[uid] = map[*subscription]struct{}{}
	}
	d.waiters[uid][s] = struct{}{}
	if d.running == nil {
		wctx, cancel := context.WithCancel(context.Background())
		d.running, d.up, d.down = cancel, make(chan struct{}), nil
		go d.run(wctx, d.up)
	}
	up := d.up
	d.mu.Unlock()
	select {
	case <-up:
	case <-ctx.Done():
		s.close()
		return nil
	}
	d.mu.Lock()
	failed := d.down
	d.mu.Unlock()
	if failed != nil {
		s.close()
		return nil
	}
	return s
}

// close unregisters s; the watch stops with its last waiter.
func (s *subscription) close() {
	d := s.d
	d.mu.Lock()
	defer d.mu.Unlock()
	w := d.waiters[s.uid]
	if _, ok := w[s]; !ok {
		return
	}
	delete(w, s)
	if len(w) == 0 {
		delete(d.waiters, s.uid)
	}
	if len(d.waiters) == 0 && d.running != nil {
		d.running()
		d.running = nil
	}
}

// watchRestartWait is the least time from one start of the watch (its
// failure, or the watch it started) to the next.
const watchRestartWait = time.Second

// run keeps one watch going until ctx ends, from a resourceVersion read
// when it starts; up is closed once the first watch runs or failed.
func (d *deletions) run(ctx context.Context, up chan struct{}) {
	first := true
	var started time.Time
	for ctx.Err() == nil {
		// Starts are paced, whether the last one failed or its watch ended
		// at once (an API server answering every watch with an error
		// event): each start wakes every waiter to read.
		if wait := watchRestartWait - time.Since(started); !first && wait > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
		}
		w, err := d.start(ctx)
		started = time.Now()
		if first {
			first = false
			d.mu.Lock()
			if err != nil {
				// This round of waiters reads the object itself; the next
				// subscribe tries again.
				d.down = err
				d.running = nil
			}
			close(up)
			d.mu.Unlock()
			if err != nil {
				d.log.V(logging.Debug).Info("Watching deletions failed; replacements read the deleted NAD until it is gone", logging.KeyReason, err.Error())
				return
			}
		} else if err != nil {
			continue
		} else {
			// Events between the last watch and this one are lost: every
			// waiter reads its object again.
			d.mu.Lock()
			for _, w := range d.waiters {
				for s := range w {
					select {
					case s.again <- struct{}{}:
					default:
					}
				}
			}
			d.mu.Unlock()
		}
		d.drain(ctx, w)
		w.Stop()
	}
}

func (d *deletions) start(ctx context.Context) (watch.Interface, error) {
	rv, err := d.w.Current(ctx)
	if err != nil {
		return nil, err
	}
	return d.w.Watch(ctx, rv)
}

// drain hands the watch's deletions to their waiters until it ends.
func (d *deletions) drain(ctx context.Context, w watch.Interface) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ResultChan():
			if !ok || ev.Type == watch.Error {
				return
			}
			if ev.Type != watch.Deleted {
				continue
			}
			obj, ok := ev.Object.(metav1.Object)
			if !ok {
				continue
			}
			d.mu.Lock()
			for s := range d.waiters[obj.GetUID()] {
				select {
				case <-s.gone:
				default:
					close(s.gone)
				}
			}
			d.mu.Unlock()
		}
	}
}
