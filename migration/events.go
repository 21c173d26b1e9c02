package migration

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
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
