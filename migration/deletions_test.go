package migration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/internal/harvester"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// memDeletions is the API server's watch of NADs over a memStore: every
// NAD that leaves the store is sent to the watches open at that moment.
type memDeletions struct {
	mu      sync.Mutex
	open    []*watch.RaceFreeFakeWatcher
	watches int
	// endAtOnce ends every watch as soon as it starts.
	endAtOnce bool
}

func watchDeletions(s *memStore) *memDeletions {
	d := &memDeletions{}
	s.gone = d.deleted
	return d
}

func (d *memDeletions) Current(context.Context) (string, error) { return "1", nil }

func (d *memDeletions) Watch(context.Context, string) (watch.Interface, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	w := watch.NewRaceFreeFake()
	d.open = append(d.open, w)
	d.watches++
	if d.endAtOnce {
		w.Stop()
	}
	return w, nil
}

func (d *memDeletions) deleted(n *nadv1.NetworkAttachmentDefinition) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, w := range d.open {
		if !w.IsStopped() {
			w.Delete(&metav1.PartialObjectMetadata{ObjectMeta: *n.ObjectMeta.DeepCopy()})
		}
	}
}

// replaceWatched runs the replacement of a/n with d as the watch of
// deletions and a minute's budget, and fails the test unless a/n was
// replaced and stored flat.
func replaceWatched(t *testing.T, s *memStore, j *memBackups, d replace.Watcher) {
	t.Helper()
	r := newReplacer(s, j)
	r.Deletions, r.Budget = d, time.Minute
	rep, err := runReplacing(context.Background(), s, r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	it, _ := action(rep, "a/n")
	if it.Action != report.ActionNormalized || !it.Recreated || s.nads["a/n"].Spec.Config != flatOf {
		t.Fatalf("a/n: %s %q, stored %v", it.Action, it.Reason, s.nads["a/n"])
	}
}

// TestAReplacementWaitsOnTheWatch: while Harvester's controllers clean up
// after the delete, the replacement reads the deleted NAD once and then
// waits on the shared watch of deletions; it used to read it every Poll
// until it was gone, five reads a second.
func TestAReplacementWaitsOnTheWatch(t *testing.T) {
	s, j := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
	s.beforeUpdate = func(*memStore, string, int) error { return typeRule }
	s.nads["a/n"].Finalizers = []string{harvester.FinalizerManager, harvester.FinalizerAgent}
	s.controller = func(s *memStore, key string) {
		time.Sleep(100 * time.Millisecond) // the cleanup
		s.finalize(key)
	}
	d := watchDeletions(s)
	replaceWatched(t, s, j, d)
	// One read before the delete (the NAD whole), one after it; polled
	// every millisecond (newReplacer's Poll), about a hundred.
	if got := s.gets["a/n"]; got > 2 {
		t.Errorf("the replacement read a/n %d times, want at most 2: it should wait on the watch", got)
	}
	if d.watches != 1 {
		t.Errorf("%d watches, want 1", d.watches)
	}
}

// TestAReplacementReadsAgainWhenTheWatchStartsOver: a watch that ends may
// have lost the deletion; the waiter reads its NAD again once a new watch
// runs, and finds it gone.
func TestAReplacementReadsAgainWhenTheWatchStartsOver(t *testing.T) {
	s, j := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
	s.beforeUpdate = func(*memStore, string, int) error { return typeRule }
	s.nads["a/n"].Finalizers = []string{harvester.FinalizerManager}
	d := &memDeletions{} // no events: only a read can see the NAD gone
	s.controller = func(s *memStore, key string) {
		time.Sleep(50 * time.Millisecond)
		s.finalize(key)
		time.Sleep(50 * time.Millisecond)
		d.mu.Lock()
		d.open[0].Stop() // the API server ends the watch
		d.mu.Unlock()
	}
	replaceWatched(t, s, j, d)
	if d.watches != 2 {
		t.Errorf("%d watches, want 2: the ended one and its successor", d.watches)
	}
}

// TestAWatchThatEndsAtOnceIsNotStartedInALoop: an API server that ends
// every watch as it starts gets a new one no faster than one a second (each
// start wakes every waiter to read its NAD); the replacement still sees its
// NAD gone, by reading it.
func TestAWatchThatEndsAtOnceIsNotStartedInALoop(t *testing.T) {
	s, j := newMemStore(map[string]string{"a/n": nested}), newMemBackups()
	s.beforeUpdate = func(*memStore, string, int) error { return typeRule }
	s.nads["a/n"].Finalizers = []string{harvester.FinalizerManager}
	d := &memDeletions{endAtOnce: true}
	s.controller = func(s *memStore, key string) {
		time.Sleep(300 * time.Millisecond)
		s.finalize(key)
	}
	replaceWatched(t, s, j, d)
	d.mu.Lock()
	defer d.mu.Unlock()
	// Started in a loop, thousands over the cleanup's 300 ms.
	if d.watches > 3 {
		t.Errorf("%d watches over a replacement of about a second, want at most 3", d.watches)
	}
}

// TestReplacementsWaitBesideTheInPlaceWriters: up to ReplaceConcurrency
// replacements wait on the controllers' cleanup at once, apart from the
// in-place writers, and never more. Here the cleanup finishes only once
// four NADs are terminating together: with replacements run inside the
// one in-place writer, the first would wait out its budget.
func TestReplacementsWaitBesideTheInPlaceWriters(t *testing.T) {
	const together = 4
	configs := map[string]string{}
	for i := range 2 * together {
		configs[fmt.Sprintf("a/r%d", i)] = nested
	}
	for i := range 20 {
		configs[fmt.Sprintf("b/n%02d", i)] = nested
	}
	s, j := newMemStore(configs), newMemBackups()
	s.beforeUpdate = func(_ *memStore, key string, _ int) error {
		if key[0] == 'a' {
			return typeRule
		}
		return nil
	}
	for k, n := range s.nads {
		if k[0] == 'a' {
			n.Finalizers = []string{harvester.FinalizerManager}
		}
	}
	var mu sync.Mutex
	var terminating []string
	most := 0
	s.controller = func(s *memStore, key string) {
		mu.Lock()
		terminating = append(terminating, key)
		most = max(most, len(terminating))
		if len(terminating) < together {
			mu.Unlock()
			return
		}
		batch := terminating
		terminating = nil
		mu.Unlock()
		for _, k := range batch {
			s.finalize(k)
		}
	}
	r := newReplacer(s, j)
	r.Deletions, r.Budget = watchDeletions(s), time.Minute
	rep, err := runReplacing(context.Background(), s, r, Options{Concurrency: 1, ReplaceConcurrency: together})
	if err != nil {
		t.Fatal(err)
	}
	for key := range configs {
		it, _ := action(rep, key)
		if it.Action != report.ActionNormalized || it.Recreated != (key[0] == 'a') {
			t.Errorf("%s: %s (recreated %v) %q", key, it.Action, it.Recreated, it.Reason)
		}
	}
	if most != together {
		t.Errorf("at most %d NADs terminating at once, want %d (ReplaceConcurrency)", most, together)
	}
}
