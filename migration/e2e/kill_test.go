package e2e

import (
	"bufio"
	"context"
	"flag"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// buildBinary builds cmd/netconf-migrator for a test that runs and kills it
// as a separate process.
func buildBinary(t testing.TB) string { return testenv.BuildBinary(t) }

// killSeed fixes TestKilledRuns's kill points.
var killSeed = flag.String("kill-seed", os.Getenv("NETCONF_MIGRATOR_KILL_SEED"), "seed of TestKilledRuns's kill points (default: the clock)")

// TestKilledRuns SIGKILLs migrate at random points of a 5,000-NAD run (600
// of them to rewrite), counted in the writes it has logged, then lets a run
// finish. After every kill each NAD is either its original or
// its normalized self, with nothing lost and nothing half-written.
func TestKilledRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("5,000 NADs")
	}
	ctx := context.Background()
	const ns, n = "killed", 5000
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	nads := population(ns, n, nil)
	seed(t, nads)
	originals := map[string]string{}
	changing := 0
	for _, nad := range nads {
		originals[ns+"/"+nad.Name] = nad.Spec.Config
		if netconf.Normalize([]byte(nad.Spec.Config)).Changed {
			changing++
		}
	}
	bin := buildBinary(t)

	seedValue := uint64(time.Now().UnixNano())
	if *killSeed != "" {
		v, err := strconv.ParseUint(*killSeed, 10, 64)
		if err != nil {
			t.Fatalf("-kill-seed / NETCONF_MIGRATOR_KILL_SEED %q: %v", *killSeed, err)
		}
		seedValue = v
	}
	rng := rand.New(rand.NewPCG(seedValue, 0))
	// Printed whatever the outcome, so a failure can be replayed with
	// go test ./migration/e2e -run TestKilledRuns -kill-seed N.
	t.Logf("kill points from seed %d (replay with -kill-seed %d or NETCONF_MIGRATOR_KILL_SEED=%d)", seedValue, seedValue, seedValue)

	// Kill points are counted in the run's own writes, not in wall time: a
	// delay after "Starting" lands before the first write on a slow machine
	// and after the last on a fast one. Each kill comes within the first
	// third of what is left, so three kills leave work for the last run; the
	// first always waits for a write, the others may land before any.
	midRun := 0
	prev := 0
	for kill := 1; kill <= 3; kill++ {
		after := rng.IntN(max(1, (changing-prev)/3))
		if kill == 1 {
			after++
		}
		exited := runAndKill(t, bin, after, "migrate", "-n", ns, "--qps", "50", "--burst", "10", "--page-size", "500", "--lease-duration", "2s")
		done := checkEachOriginalOrNormalized(t, ns, originals)
		t.Logf("kill %d after the run's write %d: %d of %d NADs normalized (exited by itself: %v)", kill, after, done, changing, exited)
		if done > prev && done < changing && !exited {
			midRun++
		}
		prev = done
	}
	if midRun == 0 {
		t.Fatal("no kill landed in the middle of the writes: the test proves nothing")
	}

	r := runCLI(t, "migrate", "-n", ns)
	if r.code != 1 || r.report.Summary.Actions[report.ActionReported] != n/100 {
		t.Fatalf("final run: exit %d, %v; want exit 1 with the %d truncated NADs reported\n%s", r.code, r.report.Summary.Actions, n/100, r.errOut)
	}
	if got := r.report.Summary.Actions[report.ActionNormalized]; got != changing-prev {
		t.Errorf("the final run normalized %d NADs, want the %d left", got, changing-prev)
	}
	if done := checkEachOriginalOrNormalized(t, ns, originals); done != changing {
		t.Errorf("%d of %d NADs normalized after the final run", done, changing)
	}
	if r := runCLI(t, "migrate", "-n", ns); r.report.Summary.Actions[report.ActionNormalized] != 0 {
		t.Errorf("a run after the final one normalized %d NADs", r.report.Summary.Actions[report.ActionNormalized])
	}
}

// rewroteLine is what migrate logs once an in-place write is stored.
const rewroteLine = `"msg":"Rewrote NetworkAttachmentDefinition config to the flat form"`

// runAndKill starts the binary with the admin kubeconfig and SIGKILLs it as
// soon as it has logged its writes-th stored write, or, with writes 0, as
// soon as it logs that it starts working (preflight done). Writes in flight
// in other workers may still land. It reports whether the process exited on
// its own first.
func runAndKill(t *testing.T, bin string, writes int, args ...string) (exited bool) {
	t.Helper()
	cmd := exec.Command(bin, append(args, "--kubeconfig", env.KubeconfigPath, "--termination-message-path", "")...)
	cmd.Stdout = io.Discard
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	reached := make(chan struct{})
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
		started, seen, signalled := false, 0, false
		for sc.Scan() {
			line := sc.Text()
			switch {
			case !started && strings.Contains(line, `"msg":"Starting"`):
				started = true
			case strings.Contains(line, rewroteLine):
				seen++
			}
			if !signalled && started && seen >= writes {
				signalled = true
				close(reached)
			}
		}
	}()
	waitErr := make(chan error, 1)
	go func() {
		// Wait closes the pipe, so the scanner must have read it all first.
		<-scanned
		waitErr <- cmd.Wait()
	}()
	select {
	case err := <-waitErr:
		t.Logf("the run exited by itself before the kill: %v", err)
		return true
	case <-reached:
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil && err != os.ErrProcessDone {
		t.Fatal(err)
	}
	err = <-waitErr
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		t.Logf("the run ended with %v, not by the kill", err)
		return true
	}
	return false
}

// checkEachOriginalOrNormalized fails the test for any NAD lost or holding
// anything but its original config or the normalized one with matching
// annotations, and returns how many are normalized.
func checkEachOriginalOrNormalized(t *testing.T, ns string, originals map[string]string) (normalized int) {
	t.Helper()
	stored := listAll(t, ns)
	if len(stored) != len(originals) {
		t.Errorf("%d NADs stored, want %d", len(stored), len(originals))
	}
	for ref, orig := range originals {
		got, ok := stored[ref]
		if !ok {
			t.Errorf("%s is lost", ref)
			continue
		}
		res := netconf.Normalize([]byte(orig))
		switch {
		case got.Spec.Config == orig:
			if _, ok := got.Annotations[nadv1.AnnotationOriginalConfig]; ok {
				t.Errorf("%s holds its original config and an original-config annotation", ref)
			}
		case res.Changed && got.Spec.Config == string(res.Config):
			if got.Annotations[nadv1.AnnotationOriginalConfig] != orig || got.Annotations[nadv1.AnnotationNormalizedFrom] != string(res.Form) {
				t.Errorf("%s is normalized with annotations %v", ref, got.Annotations)
			}
			normalized++
		default:
			t.Errorf("%s holds %q: neither its original %q nor its normalized form", ref, got.Spec.Config, orig)
		}
	}
	return normalized
}
