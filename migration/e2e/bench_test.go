package e2e

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/cmd/netconf-migrator/app"
)

// The benchmarks share seeded namespaces: seeding 10,000 NADs costs more
// than a run.
var (
	seeded   = map[string]bool{}
	seededMu sync.Mutex
)

// size is n, or a tenth of it under -short: `make test` runs every
// benchmark once that way, so the code behind BENCHMARKS.md cannot rot
// between measurements.
func size(n int) int {
	if testing.Short() {
		return n / 10
	}
	return n
}

// skipOrFail skips a benchmark whose tool is missing, except in CI, where
// the setup script has installed it and a skip would hide a broken setup.
func skipOrFail(b *testing.B, why string) {
	b.Helper()
	if os.Getenv("CI") == "true" {
		b.Fatal(why)
	}
	b.Skip(why)
}

// exitCodeFor is what migrate exits with on population(ns, n): 1 once it
// holds a truncated NAD, which needs a person.
func exitCodeFor(n int) int {
	for i := range n {
		if kindOf(i) == kindTruncated {
			return 1
		}
	}
	return 0
}

// seedPopulation creates population(ns, n) once per process and returns the
// NADs as created.
func seedPopulation(b *testing.B, ns string, n int) []*nadv1.NetworkAttachmentDefinition {
	b.Helper()
	nads := population(ns, n, nil)
	seededMu.Lock()
	defer seededMu.Unlock()
	if !seeded[ns] {
		if err := env.CreateNamespace(context.Background(), ns, nil); err != nil {
			b.Fatal(err)
		}
		seed(b, nads)
		seeded[ns] = true
	}
	return nads
}

// reset puts every NAD in ns back to its seeded config and removes the
// events of the last run, so every timed run does the same work.
func reset(b *testing.B, ns string, nads []*nadv1.NetworkAttachmentDefinition) {
	b.Helper()
	ctx := context.Background()
	c := fastClient(b)
	want := map[string]string{}
	for _, n := range nads {
		want[n.Name] = n.Spec.Config
	}
	var todo []nadv1.NetworkAttachmentDefinition
	for _, n := range listAll(b, ns) {
		if n.Spec.Config != want[n.Name] || len(n.Annotations) > 0 {
			todo = append(todo, n)
		}
	}
	parallel(b, len(todo), func(i int) error {
		n := todo[i]
		n.Spec.Config, n.Annotations = want[n.Name], nil
		return c.Update(ctx, &n)
	})
	if err := c.DeleteAllOf(ctx, &corev1.Event{}, client.InNamespace(ns)); err != nil {
		b.Fatal(err)
	}
}

func parallel(b testing.TB, n int, f func(i int) error) {
	b.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	ch := make(chan int)
	for range 16 {
		wg.Go(func() {
			for i := range ch {
				if err := f(i); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		ch <- i
	}
	close(ch)
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
}

// floorRun is the least any migration can do: the same list pages and the
// same updates (configs computed beforehand, the same annotations) from the
// same number of workers under the same client QPS, and nothing else.
func floorRun(b *testing.B, ns string, qps float32, burst int, updates map[string]*nadv1.NetworkAttachmentDefinition) {
	b.Helper()
	ctx := context.Background()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = qps, burst
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	work := make(chan *nadv1.NetworkAttachmentDefinition, 4)
	var wg sync.WaitGroup
	var failed error
	var mu sync.Mutex
	for range 4 {
		wg.Go(func() {
			for n := range work {
				if err := c.Update(ctx, n); err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
				}
			}
		})
	}
	cont := ""
	for {
		page := &nadv1.NetworkAttachmentDefinitionList{}
		if err := c.List(ctx, page, client.InNamespace(ns), client.Limit(500), client.Continue(cont)); err != nil {
			b.Fatal(err)
		}
		for i := range page.Items {
			n := &page.Items[i]
			if u, ok := updates[n.Name]; ok {
				n.Spec.Config, n.Annotations = u.Spec.Config, u.Annotations
				work <- n
			}
		}
		if cont = page.Continue; cont == "" {
			break
		}
	}
	close(work)
	wg.Wait()
	if failed != nil {
		b.Fatal(failed)
	}
}

// expectedUpdates is what migrate writes for the population.
func expectedUpdates(nads []*nadv1.NetworkAttachmentDefinition) map[string]*nadv1.NetworkAttachmentDefinition {
	out := map[string]*nadv1.NetworkAttachmentDefinition{}
	for _, n := range nads {
		res := netconf.Normalize([]byte(n.Spec.Config))
		if !res.Changed {
			continue
		}
		u := n.DeepCopy()
		u.Spec.Config = string(res.Config)
		u.Annotations = map[string]string{nadv1.AnnotationOriginalConfig: n.Spec.Config, nadv1.AnnotationNormalizedFrom: string(res.Form)}
		out[n.Name] = u
	}
	return out
}

// BenchmarkMigrateVsFloor times `migrate` (in process, preflight, events
// and report included) on 10,000 NADs against floorRun, alternating the two
// in every iteration, at the default QPS and with the API server as the
// only limit. Run with -benchtime 1x.
func BenchmarkMigrateVsFloor(b *testing.B) {
	n := size(10000)
	ns := fmt.Sprintf("bench-%d", n)
	nads := seedPopulation(b, ns, n)
	updates := expectedUpdates(nads)
	for _, tc := range []struct {
		qps    int
		events string
	}{{50, "failures"}, {2000, "all"}, {2000, "failures"}} {
		b.Run(fmt.Sprintf("qps=%d/events=%s", tc.qps, tc.events), func(b *testing.B) {
			burst := 2 * tc.qps
			var ours, floor time.Duration
			for range b.N {
				reset(b, ns, nads)
				start := time.Now()
				code := app.Execute([]string{"migrate", "-n", ns, "--kubeconfig", env.KubeconfigPath, "--termination-message-path", "",
					"--qps", strconv.Itoa(tc.qps), "--burst", strconv.Itoa(burst), "--events=" + tc.events,
					"--progress-interval", "1h"}, nil, io.Discard, io.Discard)
				ours += time.Since(start)
				if code != exitCodeFor(n) {
					b.Fatalf("migrate: exit %d", code)
				}
				reset(b, ns, nads)
				start = time.Now()
				floorRun(b, ns, float32(tc.qps), burst, updates)
				floor += time.Since(start)
			}
			b.ReportMetric(ours.Seconds()/float64(b.N), "migrate-s")
			b.ReportMetric(floor.Seconds()/float64(b.N), "floor-s")
			b.ReportMetric(float64(ours)/float64(floor), "migrate/floor")
			b.ReportMetric(float64(len(updates)), "updates")
			b.ReportMetric(0, "ns/op")
		})
	}
}

// BenchmarkPeakMemory runs the built binary on 1,000 and on 10,000 NADs and
// compares the peak resident set sizes the kernel reports.
func BenchmarkPeakMemory(b *testing.B) {
	if _, err := os.Stat(gnuTime); err != nil {
		skipOrFail(b, "GNU time is not installed (hack/setup-test-assets.sh installs it)")
	}
	bin := buildBinary(b)
	nsSmall, nsLarge := fmt.Sprintf("bench-%d", size(1000)), fmt.Sprintf("bench-%d", size(10000))
	small := seedPopulation(b, nsSmall, size(1000))
	large := seedPopulation(b, nsLarge, size(10000))
	var rss1k, rss10k int64
	for range b.N {
		reset(b, nsSmall, small)
		rss1k += maxRSS(b, bin, nsSmall, size(1000))
		reset(b, nsLarge, large)
		rss10k += maxRSS(b, bin, nsLarge, size(10000))
	}
	b.ReportMetric(float64(rss1k)/float64(b.N)/1024, "rss-1k-MiB")
	b.ReportMetric(float64(rss10k)/float64(b.N)/1024, "rss-10k-MiB")
	b.ReportMetric(float64(rss10k)/float64(rss1k), "10k/1k")
	b.ReportMetric(0, "ns/op")
}

// maxRSS runs migrate on ns (n NADs) as a process and returns its peak RSS in KiB,
// as GNU time reports it. The rusage of a child started from this process
// would not do: Go starts children with vfork, and Linux carries the
// parent's peak RSS into the child's across exec.
func maxRSS(b *testing.B, bin, ns string, n int) int64 {
	b.Helper()
	out := filepath.Join(b.TempDir(), "maxrss")
	cmd := exec.Command(gnuTime, "-f", "%M", "-o", out, bin, "migrate", "-n", ns, "--kubeconfig", env.KubeconfigPath,
		"--termination-message-path", "", "--qps", "2000", "--burst", "4000")
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != exitCodeFor(n) {
		b.Fatalf("migrate -n %s: %v", ns, err)
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		b.Fatal(err)
	}
	// GNU time writes "Command exited with non-zero status 1" first.
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	kib, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	if err != nil {
		b.Fatalf("reading GNU time's output %q: %v", raw, err)
	}
	return kib
}

const gnuTime = "/usr/bin/time"

// kubectlLoop is the per-object migration Harvester shipped before: for
// every NAD, kubectl get, a jq rewrite of spec.config, kubectl replace.
const kubectlLoop = `
set -euo pipefail
for name in $(kubectl get network-attachment-definitions -n "$NS" -o jsonpath='{.items[*].metadata.name}'); do
  kubectl get network-attachment-definitions -n "$NS" "$name" -o json |
    jq '.spec.config |= (fromjson | if type == "string" then fromjson else . end
                         | if type == "object" and has("NetConf") then .NetConf + del(.NetConf) else . end | tojson)' |
    kubectl replace -f - >/dev/null
done
`

// BenchmarkKubectlLoop compares the time per NAD of kubectlLoop with that
// of the migrate binary (process start and preflight included) on 500 NADs.
func BenchmarkKubectlLoop(b *testing.B) {
	if _, err := exec.LookPath("jq"); err != nil {
		skipOrFail(b, "jq is not installed (hack/setup-test-assets.sh installs it)")
	}
	bin := buildBinary(b)
	// Not size(500): make test's smoke run takes 10, not a tenth. Each NAD
	// is three processes, about a second of CI's two loaded cores each,
	// and a few NADs show the loop works.
	n := 500
	if testing.Short() {
		n = 10
	}
	ns := fmt.Sprintf("bench-%d", n)
	nads := seedPopulation(b, ns, n)
	var ours, loop time.Duration
	for range b.N {
		reset(b, ns, nads)
		start := time.Now()
		cmd := exec.Command(bin, "migrate", "-n", ns, "--kubeconfig", env.KubeconfigPath, "--termination-message-path", "")
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Run(); cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != exitCodeFor(n) {
			b.Fatalf("migrate: %v", err)
		}
		ours += time.Since(start)
		reset(b, ns, nads)
		start = time.Now()
		sh := exec.Command("bash", "-c", kubectlLoop)
		sh.Env = append(os.Environ(), "KUBECONFIG="+env.KubeconfigPath, "NS="+ns)
		if out, err := sh.CombinedOutput(); err != nil {
			b.Fatalf("the kubectl loop: %v\n%s", err, out)
		}
		loop += time.Since(start)
		// The baseline must have done the job it is compared with.
		for ref, nad := range listAll(b, ns) {
			if f := netconf.Normalize([]byte(nad.Spec.Config)).Form; f == netconf.FormNested || f == netconf.FormDoubleEncoded {
				b.Fatalf("the kubectl loop left %s %s", ref, f)
			}
		}
	}
	b.ReportMetric(float64(ours.Milliseconds())/float64(b.N*n), "migrate-ms/NAD")
	b.ReportMetric(float64(loop.Milliseconds())/float64(b.N*n), "kubectl-ms/NAD")
	b.ReportMetric(float64(loop)/float64(ours), "speedup")
	b.ReportMetric(0, "ns/op")
}
