package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
)

// TestConcurrentLogging logs from many goroutines into a plain buffer, as
// the migration's workers do into a caller's writer: every line must come
// out whole (run with -race, an unlocked writer is a data race).
func TestConcurrentLogging(t *testing.T) {
	var buf bytes.Buffer
	log, err := New(&buf, Options{Format: "json"})
	if err != nil {
		t.Fatal(err)
	}
	const workers, lines = 8, 200
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range lines {
				log.Info("Visiting NetworkAttachmentDefinition", KeyObject, "ns/name", "worker", w, "i", i)
			}
		})
	}
	wg.Wait()
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(got) != workers*lines {
		t.Fatalf("%d lines, want %d", len(got), workers*lines)
	}
	for _, l := range got {
		if !json.Valid([]byte(l)) {
			t.Fatalf("a torn line: %q", l)
		}
	}
}
