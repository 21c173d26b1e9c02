package migration

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
)

// TestClassifyRealResponses sends a write through the real client stack
// (controller-runtime over client-go) to a server answering as the API
// server does, and checks how the error is classified and how many
// requests one write costs in all: client-go retries a 429 or 5xx that
// carries Retry-After (10 times), so ours must not; everything else
// transient is ours alone.
func TestClassifyRealResponses(t *testing.T) {
	status := func(code int32, reason metav1.StatusReason, msg string, retryAfter int32) func(http.ResponseWriter) {
		return func(w http.ResponseWriter) {
			st := metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusFailure, Code: code, Reason: reason, Message: msg}
			if retryAfter > 0 {
				st.Details = &metav1.StatusDetails{RetryAfterSeconds: retryAfter}
				w.Header().Set("Retry-After", "0") // the wait is the header's; 0 keeps the test fast
			}
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(int(code))
			_ = json.NewEncoder(w).Encode(st)
		}
	}
	for _, tc := range []struct {
		name     string
		answer   func(http.ResponseWriter) // nil: the server is gone
		slow     bool                      // answer after the client's timeout
		class    Class
		requests int64 // what one write costs before classification
	}{
		{"webhook denial as 500", status(500, metav1.StatusReasonInternalError, `admission webhook "validator.harvester-system.harvester-network-webhook" denied the request: can't update nad a/n because it's still used by VM(s) a/vm which must be stopped at first`, 0), false, Final, 1},
		{"unreachable webhook as 500", status(500, metav1.StatusReasonInternalError, `Internal error occurred: failed calling webhook "validator.harvester-system.harvester-network-webhook": failed to call webhook: Post "https://x/validate": dial tcp 127.0.0.1:1: connect: connection refused`, 0), false, Retry, 1},
		{"409 conflict", status(409, metav1.StatusReasonConflict, `Operation cannot be fulfilled on network-attachment-definitions.k8s.cni.cncf.io "n": the object has been modified; please apply your changes to the latest version and try again`, 0), false, Conflict, 1},
		{"410 expired", status(410, metav1.StatusReasonExpired, "The provided continue parameter is too old to display a consistent list result.", 0), false, Final, 1},
		{"422 invalid", status(422, metav1.StatusReasonInvalid, `NetworkAttachmentDefinition.k8s.cni.cncf.io "n" is invalid: spec.config: Invalid value`, 0), false, Final, 1},
		{"429 with Retry-After", status(429, metav1.StatusReasonTooManyRequests, "Too many requests, please try again later.", 1), false, Final, 11},
		{"503 with Retry-After", status(503, metav1.StatusReasonServiceUnavailable, "the server is currently unable to handle the request", 1), false, Final, 11},
		{"504 timeout", status(504, metav1.StatusReasonTimeout, "the server was unable to return a response in the time allotted", 0), false, Retry, 1},
		{"connection refused", nil, false, Retry, 0},
		{"request timeout", status(200, "", "", 0), true, Retry, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var requests atomic.Int64
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				requests.Add(1)
				if tc.slow {
					time.Sleep(300 * time.Millisecond)
				}
				tc.answer(w)
			}))
			defer srv.Close()
			if tc.answer == nil {
				srv.Close()
			}
			scheme := runtime.NewScheme()
			if err := nadv1.AddToScheme(scheme); err != nil {
				t.Fatal(err)
			}
			// A fixed REST mapping: no discovery requests to count.
			mapper := meta.NewDefaultRESTMapper(nil)
			mapper.Add(nadv1.GroupVersion.WithKind(nadv1.Kind), meta.RESTScopeNamespace)
			cfg := &rest.Config{Host: srv.URL, QPS: -1, Timeout: 10 * time.Second}
			if tc.slow {
				cfg.Timeout = 100 * time.Millisecond
			}
			c, err := client.New(cfg, client.Options{Scheme: scheme, Mapper: mapper})
			if err != nil {
				t.Fatal(err)
			}
			nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "n", ResourceVersion: "1"}}
			err = ClientStore{Client: c}.Patch(context.Background(), nad, nad.DeepCopy(), false)
			if err == nil {
				t.Fatal("no error")
			}
			if got := Classify(err); got != tc.class {
				t.Errorf("Classify(%v) = %d, want %d", err, got, tc.class)
			}
			if got := requests.Load(); got != tc.requests {
				t.Errorf("one write cost %d requests, want %d", got, tc.requests)
			}
			// Our own layer: one attempt unless the error is ours to retry.
			attempts, _ := fastBackoff.retry(context.Background(), func() error {
				return ClientStore{Client: c}.Patch(context.Background(), nad, nad.DeepCopy(), false)
			})
			if (attempts > 1) != (tc.class == Retry) {
				t.Errorf("our retry made %d attempts for a class %d error", attempts, tc.class)
			}
		})
	}
}

// TestTheRetriesWaitOnTheBackoffsClock: the waits between attempts are the
// Backoff's clock's (issue 35: time is injected), and the budget counts
// them: 1 s, 2 s, 4 s and then 4 s more (each up to a quarter longer)
// overrun 10 s, so the fourth attempt is the last.
func TestTheRetriesWaitOnTheBackoffsClock(t *testing.T) {
	fc := clocktesting.NewFakeClock(time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC))
	b := Backoff{Initial: time.Second, Max: 4 * time.Second, Budget: 10 * time.Second, Clock: fc}
	var attempts atomic.Int32
	steps := 0
	done := make(chan error, 1)
	go func() {
		_, err := b.retry(context.Background(), func() error {
			attempts.Add(1)
			return apierrors.NewServiceUnavailable("etcd leader changed")
		})
		done <- err
	}()
	for {
		select {
		case err := <-done:
			if n := attempts.Load(); n != 4 || err == nil || !strings.Contains(err.Error(), "giving up after 4 attempts") {
				t.Fatalf("%d attempts, then %v; want 4 and the budget spent", n, err)
			}
			if steps != 3 {
				t.Fatalf("the fake clock released %d waits, want the 3 between the 4 attempts (the others waited on another clock)", steps)
			}
			return
		default:
		}
		// Each wait is the fake clock's: it waits until moved.
		if err := wait.PollUntilContextTimeout(context.Background(), time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
			select {
			case err := <-done:
				done <- err
				return true, nil
			default:
			}
			return fc.HasWaiters(), nil
		}); err != nil {
			t.Fatalf("after %d attempts the retry waits on no fake clock: %v", attempts.Load(), err)
		}
		if fc.HasWaiters() {
			fc.Step(5 * time.Second)
			steps++
		}
	}
}
