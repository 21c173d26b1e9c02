package migration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/report"
)

// QueuedEvents takes Events off the workers' path: Event queues them and
// returns, and a few senders write them, so a worker never waits for an
// Event request to the API server. Flush waits, with a bound, for the
// queue to drain before the process exits.
type QueuedEvents struct {
	sink    Events
	queue   chan queuedEvent
	wg      sync.WaitGroup
	once    sync.Once
	dropped atomic.Int64
	// closed, under mu, drops the Events of writers that outlive Flush
	// (an operator's run still stopping when the process flushes).
	mu     sync.RWMutex
	closed bool
	// stop ends the sending: the flush bound is over.
	stop context.Context
	quit context.CancelFunc
}

type queuedEvent struct {
	nad                    *nadv1.NetworkAttachmentDefinition
	eventType, reason, msg string
}

// NewQueuedEvents starts senders that write to sink, queueing up to
// capacity events; when the queue is full Event waits, so none is lost.
func NewQueuedEvents(sink Events, senders, capacity int) *QueuedEvents {
	q := &QueuedEvents{sink: sink, queue: make(chan queuedEvent, capacity)}
	q.stop, q.quit = context.WithCancel(context.Background())
	for range senders {
		q.wg.Go(func() {
			for ev := range q.queue {
				if q.stop.Err() != nil {
					q.dropped.Add(1)
					continue
				}
				q.sink.Event(q.stop, ev.nad, ev.eventType, ev.reason, ev.msg)
			}
		})
	}
	return q
}

// Event queues an Event for nad.
func (q *QueuedEvents) Event(_ context.Context, nad *nadv1.NetworkAttachmentDefinition, eventType, reason, msg string) {
	q.mu.RLock()
	defer q.mu.RUnlock()
	if q.closed {
		q.dropped.Add(1)
		return
	}
	q.queue <- queuedEvent{nad: nad.DeepCopy(), eventType: eventType, reason: reason, msg: msg}
}

// Flush stops taking Events and waits up to bound for the queued ones to
// be written; it returns how many were dropped when the bound ran out.
func (q *QueuedEvents) Flush(bound time.Duration) (dropped int64) {
	q.once.Do(func() {
		q.mu.Lock()
		q.closed = true
		close(q.queue)
		q.mu.Unlock()
	})
	done := make(chan struct{})
	go func() { q.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(bound):
		q.quit()
		<-done
	}
	q.quit()
	return q.dropped.Load()
}

// EventPolicy says which Events a run records on NADs.
type EventPolicy string

const (
	// EventsAll records an Event on every NAD rewritten, restored or failed.
	EventsAll EventPolicy = "all"
	// EventsFailures records Events only on the NADs that need a person
	// (Warnings): a rewrite already shows in `kubectl describe` through the
	// normalized-from annotation and managedFields. The default.
	EventsFailures EventPolicy = "failures"
	// EventsNone records none.
	EventsNone EventPolicy = "none"
)

// ParseEventPolicy accepts all, failures or none (and true and false, the
// values of the flag when it was a switch).
func ParseEventPolicy(s string) (EventPolicy, error) {
	switch s {
	case "all", "true":
		return EventsAll, nil
	case "failures":
		return EventsFailures, nil
	case "none", "false":
		return EventsNone, nil
	}
	return "", fmt.Errorf("unknown events policy %q (want all, failures or none)", s)
}

// Filter returns the Events a run with this policy records through sink.
func (p EventPolicy) Filter(sink Events) Events {
	switch p {
	case EventsNone:
		return nil
	case EventsFailures:
		return warningsOnly{sink}
	}
	return sink
}

type warningsOnly struct{ Events }

func (w warningsOnly) Event(ctx context.Context, nad *nadv1.NetworkAttachmentDefinition, typ, reason, msg string) {
	if typ == corev1.EventTypeWarning {
		w.Events.Event(ctx, nad, typ, reason, msg)
	}
}

// ReasonRunSummary is the reason of the one Event a run records on its
// Lease: what it did, in counts.
const ReasonRunSummary = "RunSummary"

// RecordSummary records one Event for a whole run on the run Lease
// (namespace/lease), where `kubectl get events -n NAMESPACE` shows it:
// Normal when every NAD is clean or was fixed, Warning otherwise.
func RecordSummary(ctx context.Context, c client.Client, namespace, lease, host string, mode Mode, rep *report.Report) error {
	typ := corev1.EventTypeNormal
	if rep.NeedsAttention() {
		typ = corev1.EventTypeWarning
	}
	var b strings.Builder
	fmt.Fprintf(&b, "netconf-migrator %s visited %d NAD(s):", mode, rep.Summary.Total)
	for _, a := range []report.Action{report.ActionNormalized, report.ActionWouldNormalize, report.ActionRestored, report.ActionWouldRestore,
		report.ActionUnchanged, report.ActionReported, report.ActionFailed, report.ActionMissing, report.ActionSkipped, report.ActionUnvisited} {
		if n := rep.Count(a); n > 0 {
			fmt.Fprintf(&b, " %s=%d", a, n)
		}
	}
	if typ == corev1.EventTypeWarning {
		b.WriteString("; the report names the NADs that need a person")
	}
	now := metav1.NewTime(time.Now())
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: namespace, GenerateName: lease + "."},
		InvolvedObject: corev1.ObjectReference{APIVersion: "coordination.k8s.io/v1", Kind: "Lease", Namespace: namespace, Name: lease},
		Reason:         ReasonRunSummary, Message: b.String(), Type: typ,
		Source:         corev1.EventSource{Component: FieldManager, Host: host},
		FirstTimestamp: now, LastTimestamp: now, Count: 1,
		ReportingController: "harvesterhci.io/netconf-migrator", ReportingInstance: host,
	}
	if err := c.Create(ctx, ev); err != nil {
		return fmt.Errorf("recording the run's summary Event in %s: %w", namespace, err)
	}
	return nil
}
