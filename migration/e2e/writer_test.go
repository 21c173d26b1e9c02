package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
)

// TestConcurrentWriter runs migrate while other writers keep rewriting the
// same NADs (labels and configs, nested and flat). Every writer's last write
// must survive, and after a second run every NAD is flat.
func TestConcurrentWriter(t *testing.T) {
	ctx := context.Background()
	const ns, n, writers = "writer", 120, 4
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	nads := make([]*nadv1.NetworkAttachmentDefinition, n)
	for i := range nads {
		name := fmt.Sprintf("nad-%03d", i)
		nads[i] = newNAD(ns, name, nestedConfig(name+"-0"), map[string]string{"gen": "0"})
	}
	seed(t, nads)

	// Each NAD has one writer goroutine, so its last successful write is
	// well defined: last[i] is that write's generation.
	last := make([]atomic.Int64, n)
	var writes, writerConflicts atomic.Int64
	stop := make(chan struct{})
	errs := make(chan error, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			c := fastClient(t)
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			for gen := int64(1); ; gen++ {
				select {
				case <-stop:
					errs <- nil
					return
				default:
				}
				i := w + writers*rng.IntN(n/writers)
				if err := writeGeneration(ctx, c, ns, nads[i].Name, gen); err != nil {
					if apierrors.IsConflict(err) {
						writerConflicts.Add(1) // the migrator was first: the writer loses this one, as it would in a cluster
						continue
					}
					errs <- fmt.Errorf("writer %d on %s: %w", w, nads[i].Name, err)
					return
				}
				last[i].Store(gen)
				writes.Add(1)
			}
		})
	}

	// A low QPS stretches the run so the writers move NADs under it.
	r := runCLI(t, "migrate", "-n", ns, "--page-size", "10", "--qps", "20", "--burst", "1", "-v", "1")
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if r.code != 0 {
		t.Fatalf("first run: exit %d\n%s", r.code, r.errOut)
	}
	conflicts := strings.Count(r.errOut, "Reading NetworkAttachmentDefinition again after a conflicting write")
	t.Logf("writers: %d writes, %d lost races to the migrator; migrator: %d conflicts, %v", writes.Load(), writerConflicts.Load(), conflicts, r.report.Summary.Actions)
	if conflicts == 0 {
		t.Fatal("the migrator never met a conflicting write: the test proves nothing; lower --qps")
	}
	if failed := r.report.Summary.Actions[report.ActionFailed]; failed != 0 {
		t.Errorf("%d NADs failed: %v", failed, r.report.Items)
	}

	// The writers wrote nested configs after the first run visited them.
	r = runCLI(t, "migrate", "-n", ns)
	if r.code != 0 {
		t.Fatalf("second run: exit %d\n%s", r.code, r.errOut)
	}
	if again := runCLI(t, "migrate", "-n", ns); again.report.Summary.Actions[report.ActionNormalized] != 0 {
		t.Errorf("a third run still normalized %d NADs", again.report.Summary.Actions[report.ActionNormalized])
	}

	after := listAll(t, ns)
	stale := map[string]bool{}
	for i, nad := range nads {
		got := after[ns+"/"+nad.Name]
		gen := last[i].Load()
		if got.Labels["gen"] != strconv.FormatInt(gen, 10) {
			t.Errorf("%s: label gen=%s, the writer's last write was %d", nad.Name, got.Labels["gen"], gen)
		}
		res := netconf.Normalize([]byte(got.Spec.Config))
		if res.Form != netconf.FormFlat {
			t.Errorf("%s ends %s: %s", nad.Name, res.Form, got.Spec.Config)
			continue
		}
		var conf struct{ Name string }
		if err := json.Unmarshal([]byte(got.Spec.Config), &conf); err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%s-%d", nad.Name, gen); conf.Name != want {
			t.Errorf("%s holds the config of write %q, the writer's last write was %q", nad.Name, conf.Name, want)
		}
		if orig, ok := got.Annotations[nadv1.AnnotationOriginalConfig]; ok && string(netconf.Normalize([]byte(orig)).Config) != got.Spec.Config {
			stale[got.Namespace+"/"+got.Name] = true
		}
	}

	// A writer that replaced a migrated config kept our annotations (it
	// read, changed spec.config and wrote back): rollback must leave those
	// NADs alone and say so.
	rb := runCLI(t, "rollback", "-n", ns, "--dry-run=server")
	t.Logf("rollback: %v; %d NADs changed since their migration", rb.report.Summary.Actions, len(stale))
	for _, it := range rb.report.Items {
		if stale[it.Ref()] != (it.Action == report.ActionReported) {
			t.Errorf("rollback %s: %s (%s); changed since the migration: %v", it.Ref(), it.Action, it.Reason, stale[it.Ref()])
		}
	}
	if got := rb.report.Summary.Actions[report.ActionReported]; got != len(stale) {
		t.Errorf("rollback reported %d NADs as changed since, want %d", got, len(stale))
	}
}

// writeGeneration reads the NAD and writes generation gen: a new label and
// a config carrying the marker name-gen, nested two times in three.
func writeGeneration(ctx context.Context, c client.Client, ns, name string, gen int64) error {
	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, nad); err != nil {
		return err
	}
	marker := fmt.Sprintf("%s-%d", name, gen)
	nad.Labels["gen"] = strconv.FormatInt(gen, 10)
	if gen%3 == 0 {
		nad.Spec.Config = flatConfig(marker)
	} else {
		nad.Spec.Config = nestedConfig(marker)
	}
	return c.Update(ctx, nad)
}
