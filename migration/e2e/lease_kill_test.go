package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/internal/runlock"
)

// TestAKilledRunsLeaseIsTakenInBoundedTime SIGKILLs a migrate process in
// the middle of its run, holding the run Lease. The next holder tries the
// way the operator does (NADMigration attempts and the legacy-NAD watch
// wait 10 s and 2 s at a time, shorter than the Lease: here 1 s against
// 3 s): it takes the Lease no earlier than the killed run's Lease expired,
// and within its duration plus a retry period of the killed run's last
// renewal (asserted as twice the duration, for a loaded machine). Before,
// such attempts never took it. The next run then fixes every NAD.
func TestAKilledRunsLeaseIsTakenInBoundedTime(t *testing.T) {
	ctx := context.Background()
	const ns, duration = "killed-holder", 3 * time.Second
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	var nads []*nadv1.NetworkAttachmentDefinition
	for i := range 40 {
		name := fmt.Sprintf("nad-%02d", i)
		nads = append(nads, newNAD(ns, name, nestedConfig(name), nil))
	}
	seed(t, nads)
	var patches atomic.Int64
	p, srv := newKillProxy(t, func(r *http.Request) bool {
		return r.Method == http.MethodPatch && strings.Contains(r.URL.Path, "/network-attachment-definitions/") && patches.Add(1) == 10
	})
	run := exec.Command(buildBinary(t), "migrate", "-n", ns, "--lease-duration", duration.String(), "--concurrency", "1",
		"--termination-message-path", "", "--kubeconfig", kubeconfigFor(t, srv.URL))
	p.start(t, run)
	_ = run.Wait()
	if ws, ok := run.ProcessState.Sys().(syscall.WaitStatus); !ok || !ws.Signaled() {
		t.Fatalf("the run was not killed in the middle: %v", run.ProcessState)
	}
	dead := &coordinationv1.Lease{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: backupNamespace, Name: runlock.LeaseName}, dead); err != nil {
		t.Fatal(err)
	}
	if dead.Spec.HolderIdentity == nil || *dead.Spec.HolderIdentity == "" {
		t.Fatalf("the killed run left the Lease released: %v", dead.Spec)
	}

	attempts := 0
	var held *runlock.Held
	for held == nil {
		if attempts++; attempts > 10 {
			t.Fatalf("10 attempts of 1 s never took the Lease of a run killed %s ago", time.Since(dead.Spec.RenewTime.Time).Round(time.Second))
		}
		h, err := runlock.Acquire(ctx, env.Config, backupNamespace, "next-holder", time.Second, duration)
		switch {
		case errors.Is(err, runlock.ErrHeld):
		case err != nil:
			t.Fatal(err)
		default:
			held = h
		}
	}
	taken := &coordinationv1.Lease{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: backupNamespace, Name: runlock.LeaseName}, taken); err != nil {
		t.Fatal(err)
	}
	held.Release()
	late := taken.Spec.AcquireTime.Sub(dead.Spec.RenewTime.Time)
	t.Logf("taken after %d attempts, %s after the killed run's last renewal (Lease %s, retry period %s)", attempts, late.Round(time.Millisecond), duration, runlock.RetryPeriod(duration))
	if late < duration || late > 2*duration {
		t.Errorf("taken %s after the killed run's last renewal, want between %s and %s", late, duration, 2*duration)
	}

	if r := runCLI(t, "migrate", "-n", ns); r.code != 0 {
		t.Fatalf("the next run: exit %d\n%s", r.code, r.errOut)
	}
	for ref, n := range listAll(t, ns) {
		if f := netconf.Normalize([]byte(n.Spec.Config)).Form; f != netconf.FormFlat {
			t.Errorf("%s is %s after the next run", ref, f)
		}
	}
}
