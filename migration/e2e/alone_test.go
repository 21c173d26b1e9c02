package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
)

// replacedAgain deletes and creates again every NAD of ns that migrate
// replaced (the ones with its normalized-from annotation), inFlight at a
// time, with nothing of the tool's: no read before the delete, no checks,
// no dry run, no backup, one informer for every deletion. It is what any
// replacement of those NADs costs beside the release's controllers, whose
// cleanup a delete waits on: the floor the tool's own time is measured
// against, in the same run and on the same cluster network, through cfg
// (the way to the API server migrate's run took). It returns the time
// taken and how many NADs it replaced.
func replacedAgain(tb testing.TB, cfg *rest.Config, ns string, inFlight int) (time.Duration, int) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var todo []nadv1.NetworkAttachmentDefinition
	for _, a := range listAll(tb, ns) {
		if a.Annotations[nadv1.AnnotationNormalizedFrom] != "" {
			todo = append(todo, a)
		}
	}
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		tb.Fatal(err)
	}
	// An informer, not a bare watch: it watches again when the API server
	// ends a watch (a 504 while its watch cache catches up), and lists
	// again when it must, without missing a deletion.
	informers, err := cache.New(cfg, cache.Options{Scheme: env.Scheme, DefaultNamespaces: map[string]cache.Config{ns: {}}})
	if err != nil {
		tb.Fatal(err)
	}
	informer, err := informers.GetInformer(ctx, &nadv1.NetworkAttachmentDefinition{})
	if err != nil {
		tb.Fatal(err)
	}
	var mu sync.Mutex
	gone := map[string]chan struct{}{}
	for _, a := range todo {
		gone[a.Name] = make(chan struct{})
	}
	if _, err := informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		nad, ok := obj.(*nadv1.NetworkAttachmentDefinition)
		if !ok {
			return
		}
		mu.Lock()
		ch, ok := gone[nad.Name]
		delete(gone, nad.Name)
		mu.Unlock()
		if ok {
			close(ch)
		}
	}}); err != nil {
		tb.Fatal(err)
	}
	go func() { _ = informers.Start(ctx) }()
	if !informers.WaitForCacheSync(ctx) {
		tb.Fatalf("the informer of %s's NADs did not sync", ns)
	}

	work := make(chan *nadv1.NetworkAttachmentDefinition)
	var done atomic.Int64
	var failed atomic.Pointer[error]
	fail := func(err error) { failed.CompareAndSwap(nil, &err) }
	var wg sync.WaitGroup
	start := time.Now()
	for range inFlight {
		wg.Go(func() {
			for a := range work {
				mu.Lock()
				ch := gone[a.Name]
				mu.Unlock()
				if err := c.Delete(ctx, a); err != nil {
					fail(fmt.Errorf("deleting %s/%s: %w", a.Namespace, a.Name, err))
					continue
				}
				<-ch
				again := &nadv1.NetworkAttachmentDefinition{
					ObjectMeta: metav1.ObjectMeta{Namespace: a.Namespace, Name: a.Name, Labels: a.Labels, Annotations: a.Annotations},
					Spec:       a.Spec,
				}
				if err := c.Create(ctx, again); err != nil {
					fail(fmt.Errorf("creating %s/%s again: %w", a.Namespace, a.Name, err))
					continue
				}
				done.Add(1)
			}
		})
	}
	for i := range todo {
		if failed.Load() != nil {
			break
		}
		work <- &todo[i]
	}
	close(work)
	wg.Wait()
	took := time.Since(start)
	if err := failed.Load(); err != nil {
		tb.Fatal(*err)
	}
	return took, int(done.Load())
}

// delayed starts a proxy to the API server that holds each request for
// latency before it forwards it (watches stream through, held once), and
// returns a kubeconfig and a config without a rate limit for it.
func delayed(tb testing.TB, latency time.Duration) (string, *rest.Config) {
	tb.Helper()
	rp := upstream(tb)
	rp.FlushInterval = -1 // watches: each event at once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(latency)
		rp.ServeHTTP(w, r)
	}))
	tb.Cleanup(srv.Close)
	return kubeconfigFor(tb, srv.URL), &rest.Config{Host: srv.URL, QPS: -1}
}
