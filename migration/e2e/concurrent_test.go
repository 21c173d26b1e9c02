package e2e

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/cmd/netconf-migrator/app"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/test/harvester"
)

var replaceNADs = flag.Int("replace-nads", 200, "NADs in TestTwoRunsOneKilledMidReplacement (make soak and the benchmark use thousands)")

// TestTwoRunsOneKilledMidReplacement starts two runs together beside
// Harvester v1.6 and its controllers (both finalizers on every NAD), on a
// population with 20% nested NADs: the first takes the Lease and is killed
// in the middle of its replacements (after its fifth delete); the second
// waits for the Lease, takes it once the killed holder's expires, finishes
// the replacement the first left and the rest. Afterwards nothing is lost,
// nothing is duplicated, each nested NAD was deleted exactly once (the
// controllers finished one deletion each) and every NAD is flat.
func TestTwoRunsOneKilledMidReplacement(t *testing.T) {
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	bin := buildBinary(t)
	h := harvester.StartT(t, env, harvester.V16)
	ns := h.Namespace(t, "two-runs")
	var nads []*nadv1.NetworkAttachmentDefinition
	nested := 0
	for i := range *replaceNADs {
		name := fmt.Sprintf("nad-%05d", i)
		config := flatConfig(name)
		if i%5 == 0 {
			config, nested = nestedConfig(name), nested+1
		}
		nads = append(nads, newNAD(ns, name, config, harvesterLabels()))
	}
	h.Pause(func() { seed(t, nads) })
	before := listAll(t, ns)
	removed := h.Controllers.Removed.Load()

	var deletes atomic.Int64
	p, srv := newKillProxy(t, func(r *http.Request) bool {
		return r.Method == http.MethodDelete && strings.Contains(r.URL.Path, "/network-attachment-definitions") && deletes.Add(1) == 5
	})
	// 6 s: a run renews every 0.75 s and stops writing once its last
	// renewal is 3.6 s old (runlock's fence). With 3 s that was 1.8 s, and
	// a cold CI run's saturated cores held a renewal back 1.85 s: the
	// second run stopped (exit 4), as it must. Only the wait for the
	// killed run's Lease grows.
	args := []string{"migrate", "-n", ns, "--lease-duration", "6s", "--termination-message-path", ""}
	first := exec.Command(bin, append(args, "--kubeconfig", kubeconfigFor(t, srv.URL))...)
	first.Stdout = io.Discard
	stderr, err := first.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.start(t, first)
	// The second starts once the first holds the Lease.
	sc := bufio.NewScanner(stderr)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() && !strings.Contains(sc.Text(), `"msg":"Starting"`) {
	}
	go func() { _, _ = io.Copy(io.Discard, stderr) }()
	second := make(chan result, 1)
	go func() { second <- runCLI(t, append(args, "--lease-wait", "5m")...) }()
	_ = first.Wait()
	if ws, ok := first.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("the first run was not killed in the middle of its replacements: %v", first.ProcessState)
	}
	var r result
	select {
	case r = <-second:
	case <-time.After(10 * time.Minute):
		t.Fatal("the second run did not end")
	}
	if r.code != 0 {
		t.Fatalf("the second run: exit %d\n%s", r.code, r.errOut)
	}

	// What the second run said, for any check below that fails.
	defer func() {
		if t.Failed() {
			t.Logf("the second run's log:\n%s", r.errOut)
		}
	}()
	after := listAll(t, ns)
	if len(after) != len(before) {
		t.Fatalf("%d NADs after, %d before", len(after), len(before))
	}
	for ref, b := range before {
		a, ok := after[ref]
		switch {
		case !ok:
			t.Errorf("%s is missing", ref)
		case netconf.Normalize([]byte(a.Spec.Config)).Form != netconf.FormFlat:
			t.Errorf("%s: %s", ref, a.Spec.Config)
		case netconf.Normalize([]byte(b.Spec.Config)).Form == netconf.FormNested && (a.UID == b.UID || a.Annotations[nadv1.AnnotationOriginalConfig] != b.Spec.Config):
			t.Errorf("%s: not replaced as wanted: uid %s -> %s, %v", ref, b.UID, a.UID, a.Annotations)
		case netconf.Normalize([]byte(b.Spec.Config)).Form == netconf.FormFlat && a.UID != b.UID:
			t.Errorf("%s: a flat NAD was replaced", ref)
		}
	}
	if got := h.Controllers.Removed.Load() - removed; got != int64(nested) {
		t.Errorf("Harvester's controllers finished %d deletions, want %d: each nested NAD deleted exactly once", got, nested)
	}
	checkNoBackups(t)
}

var (
	benchReplaceNADs        = flag.Int("bench-replace-nads", 3000, "NADs in BenchmarkReplaceBesideV16, a fifth of them nested (the issue's figures: 3000 and 15000)")
	benchReplaceConcurrency = flag.Int("bench-replace-concurrency", 0, "migrate's --replace-concurrency in BenchmarkReplaceBesideV16 (0: its default)")
	benchReplaceLatency     = flag.Duration("bench-replace-latency", 0, "BenchmarkReplaceBesideV16: each request of migrate's and of the replacements alone held this long on its way to the API server, as a round trip to a control plane on other nodes (0: none)")
)

// apiserverRequests sums the API server's apiserver_request_total: every
// request it answered, and those it answered 429 (too many requests).
func apiserverRequests(tb testing.TB) (all, throttled float64) {
	tb.Helper()
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		tb.Fatal(err)
	}
	raw, err := cs.Discovery().RESTClient().Get().AbsPath("/metrics").DoRaw(context.Background())
	if err != nil {
		tb.Fatalf("reading the API server's metrics: %v", err)
	}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 0, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		all += v
		if strings.Contains(line, `code="429"`) {
			throttled += v
		}
	}
	return all, throttled
}

// BenchmarkReplaceBesideV16 runs migrate on -bench-replace-nads NADs (3,000;
// 100 under -short), 20% of them nested, three times in one run: beside
// Harvester v1.5, which lets every nested NAD be flattened in place (the
// baseline), then beside v1.6 and beside v1.9 with their controllers, which
// refuse that, so every nested NAD is replaced while the controllers'
// cleanup takes 0 to 2 s per NAD. Each must end with every NAD flat. After
// each replacing run the same NADs are replaced again with nothing of the
// tool's (replacedAgain): the time the release's controllers alone make a
// replacement take, against which the tool's own share is read. Run with
// -benchtime 1x.
func BenchmarkReplaceBesideV16(b *testing.B) {
	n := *benchReplaceNADs
	if testing.Short() { // make test's smoke run: the code behind the figure, small
		n = 100
	}
	// What the API server answered during each timed run.
	var requests, throttled float64
	inFlight := *benchReplaceConcurrency
	if inFlight <= 0 {
		inFlight = migration.DefaultReplaceConcurrency
	}
	// alone is what the same replacements took with nothing of the tool's
	// (replacedAgain), as many in flight, right after each release's run.
	var alone time.Duration
	// Both talk to the API server through a proxy that holds each request
	// for -bench-replace-latency: on one machine a request waits on CPU,
	// in a cluster also on the network and etcd's disk, and what a
	// replacement sends one after the other then counts.
	kubeconfig, cfg := env.KubeconfigPath, env.UnlimitedConfig()
	if *benchReplaceLatency > 0 {
		kubeconfig, cfg = delayed(b, *benchReplaceLatency)
	}
	run := func(b *testing.B, r harvester.Release, cleanup bool) (time.Duration, int) {
		// Each release's NADs on a cluster network of their own: a
		// replacement's check lists every NAD of its cluster network, and
		// the earlier releases' NADs stay until the benchmark ends.
		cn := "bench" + strings.NewReplacer("v", "", ".", "").Replace(string(r))
		harvester.Create(b, env.Client, harvester.NewClusterNetwork(cn, 0))
		labels := harvesterLabels()
		labels[harvester.LabelClusterNetwork] = cn
		// One release's stand-ins at a time, reading caches as Harvester
		// does: the API server serves only what it serves in a cluster.
		h, err := harvester.Start(context.Background(), env, r, harvester.ReadingCaches())
		if err != nil {
			b.Fatal(err)
		}
		defer func() {
			if err := h.Remove(context.Background()); err != nil {
				b.Error(err)
			}
		}()
		ns := h.Namespace(b, fmt.Sprintf("bench-replace-%d", n))
		var nads []*nadv1.NetworkAttachmentDefinition
		for i := range n {
			name := fmt.Sprintf("nad-%05d", i)
			config := flatConfig(name)
			if i%5 == 0 {
				config = nestedConfig(name)
			}
			config = strings.Replace(config, `"mgmt-br"`, strconv.Quote(cn+"-br"), 1)
			nads = append(nads, newNAD(ns, name, config, labels))
		}
		h.Pause(func() { seed(b, nads) })
		if cleanup {
			h.Controllers.SetCleanup(func(*nadv1.NetworkAttachmentDefinition) (time.Duration, error) {
				return time.Duration(rand.Int64N(int64(2 * time.Second))), nil
			})
		}
		args := []string{"migrate", "-n", ns, "--kubeconfig", kubeconfig, "--termination-message-path", "",
			"--progress-interval", "1h", "--timeout", "0"}
		if *benchReplaceConcurrency > 0 {
			args = append(args, "--replace-concurrency", strconv.Itoa(*benchReplaceConcurrency))
		}
		all0, throttled0 := apiserverRequests(b)
		start := time.Now()
		code := app.Execute(args, nil, io.Discard, io.Discard)
		took := time.Since(start)
		all1, throttled1 := apiserverRequests(b)
		requests, throttled = all1-all0, throttled1-throttled0
		// Said at once: Go prints no metrics of a benchmark that fails
		// later (at 15,000 NADs, twice, in the namespaces' cleanup).
		b.Logf("beside %s: %d NADs, migrate took %.2f s; the API server answered %.0f requests, %.0f of them 429", r, n, took.Seconds(), requests, throttled)
		if code != 0 {
			b.Fatalf("beside %s: exit %d", r, code)
		}
		replaced := 0
		for ref, a := range listAll(b, ns) {
			if netconf.Normalize([]byte(a.Spec.Config)).Form != netconf.FormFlat {
				b.Fatalf("beside %s: %s is %s", r, ref, a.Spec.Config)
			}
			if a.Annotations[nadv1.AnnotationNormalizedFrom] != "" {
				replaced++
			}
		}
		if cleanup {
			var again int
			alone, again = replacedAgain(b, cfg, ns, inFlight)
			b.Logf("beside %s: the %d replaced NADs deleted and created again with nothing of the tool's, %d at a time: %.2f s", r, again, inFlight, alone.Seconds())
			if again != replaced {
				b.Fatalf("beside %s: %d NADs deleted and created again, want the %d replaced", r, again, replaced)
			}
		}
		return took, replaced
	}
	for range b.N {
		inPlace, fixed15 := run(b, harvester.V15, false)
		replaced16, fixed16 := run(b, harvester.V16, true)
		b.ReportMetric(requests, "v1.6-apiserver-requests")
		b.ReportMetric(throttled, "v1.6-apiserver-429s")
		b.ReportMetric(alone.Seconds(), "v1.6-alone-s")
		b.ReportMetric(float64(replaced16)/float64(alone), "v1.6/alone")
		replaced19, fixed19 := run(b, harvester.V19, true)
		b.ReportMetric(requests, "v1.9-apiserver-requests")
		b.ReportMetric(throttled, "v1.9-apiserver-429s")
		b.ReportMetric(alone.Seconds(), "v1.9-alone-s")
		b.ReportMetric(float64(replaced19)/float64(alone), "v1.9/alone")
		if fixed15 != n/5 || fixed16 != n/5 || fixed19 != n/5 {
			b.Fatalf("fixed %d beside v1.5, %d beside v1.6 and %d beside v1.9, want %d each", fixed15, fixed16, fixed19, n/5)
		}
		b.ReportMetric(inPlace.Seconds(), "v1.5-in-place-s")
		b.ReportMetric(replaced16.Seconds(), "v1.6-replaced-s")
		b.ReportMetric(replaced19.Seconds(), "v1.9-replaced-s")
		b.ReportMetric(float64(replaced16)/float64(inPlace), "v1.6/in-place")
		b.ReportMetric(float64(replaced19)/float64(inPlace), "v1.9/in-place")
		b.ReportMetric(float64(n/5), "nested")
		b.ReportMetric(0, "ns/op")
	}
}
