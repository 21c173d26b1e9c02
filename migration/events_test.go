package migration

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/report"
)

// blockingSink holds every Event until released, counting those written.
type blockingSink struct {
	release chan struct{}
	written atomic.Int64
}

func (b *blockingSink) Event(ctx context.Context, _ *nadv1.NetworkAttachmentDefinition, _, _, _ string) {
	select {
	case <-b.release:
		b.written.Add(1)
	case <-ctx.Done():
	}
}

// TestEventsAreOffTheWorkersPath: with every Event request stuck, the run
// still writes every NAD and returns; the Events go out on Flush.
func TestEventsAreOffTheWorkersPath(t *testing.T) {
	configs := map[string]string{}
	for i := range 20 {
		configs[fmt.Sprintf("ns/n%02d", i)] = nested
	}
	s := newMemStore(configs)
	sink := &blockingSink{release: make(chan struct{})}
	q := NewQueuedEvents(sink, 2, 100)
	m := &Migrator{Store: s, Events: q, Log: logr.Discard(), Opts: Options{Backoff: fastBackoff}}
	rep, err := m.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if rep.Count(report.ActionNormalized) != 20 || sink.written.Load() != 0 {
		t.Fatalf("%v normalized with %d events written while the sink was stuck", rep.Summary.Actions, sink.written.Load())
	}
	close(sink.release)
	if dropped := q.Flush(time.Minute); dropped != 0 || sink.written.Load() != 20 {
		t.Errorf("flush: %d dropped, %d written; want 0 and 20", dropped, sink.written.Load())
	}
}

// TestFlushIsBounded: a sink that never answers costs the flush bound, and
// the Events still queued are counted as dropped.
func TestFlushIsBounded(t *testing.T) {
	sink := &blockingSink{release: make(chan struct{})} // never released
	q := NewQueuedEvents(sink, 1, 10)
	nad := &nadv1.NetworkAttachmentDefinition{}
	for range 5 {
		q.Event(context.Background(), nad, "Normal", ReasonNormalized, "x")
	}
	// One is in the stuck sender; four wait in the queue.
	if dropped := q.Flush(50 * time.Millisecond); dropped != 4 || sink.written.Load() != 0 {
		t.Errorf("%d dropped, %d written; want 4 and 0", dropped, sink.written.Load())
	}
}
