package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/migration/replace"
)

// soakFor bounds TestSoakMigration: short in make test, longer in make soak.
var soakFor = flag.Duration("soak", 12*time.Second, "how long the soak tests run (make soak sets SOAK_DURATION)")

// chaosProxy stands between migrate and the API server and injects a
// fault into a share of the requests on NADs and backups, at random (the
// seed is logged): the faults of faultProxy.
type chaosProxy struct {
	upstream *httputil.ReverseProxy
	share    float64

	mu     sync.Mutex
	rng    *rand.Rand
	counts map[fault]int
	total  int
}

func (p *chaosProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f := faultNone
	p.mu.Lock()
	if strings.Contains(r.URL.Path, "/network-attachment-definitions") || strings.Contains(r.URL.Path, "/secrets") {
		p.total++
		if p.rng.Float64() < p.share {
			f = fault(1 + p.rng.IntN(int(faultKinds)-1))
		}
		p.counts[f]++
	}
	p.mu.Unlock()
	f.serve(w, r, p.upstream)
}

// TestSoakMigration runs migrate again and again through the chaos proxy
// while a writer keeps rewriting the NADs (nested two times in three), for
// -soak. Then, with the faults and the writer gone, two runs settle it:
// no NAD is lost or duplicated, each holds the writer's last write, flat.
func TestSoakMigration(t *testing.T) {
	ctx := context.Background()
	const ns, n = "soak", 200
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	ensureBackupNamespace(t)
	nads := population(ns, n, map[string]string{"gen": "0"})
	seed(t, nads)

	seedValue := uint64(time.Now().UnixNano())
	t.Logf("chaos seed %d", seedValue)
	proxy := &chaosProxy{upstream: upstream(t), share: 0.15, rng: rand.New(rand.NewPCG(seedValue, 2)), counts: map[fault]int{}}
	srv := httptest.NewServer(proxy)
	t.Cleanup(srv.Close)
	kubeconfig := kubeconfigFor(t, srv.URL)

	last := make([]atomic.Int64, n)
	for i := range last {
		last[i].Store(-1) // the seeded config, no write yet
	}
	var writes atomic.Int64
	stop := make(chan struct{})
	writerErr := make(chan error, 1)
	go func() {
		c := fastClient(t)
		rng := rand.New(rand.NewPCG(seedValue, 3))
		for gen := int64(1); ; gen++ {
			select {
			case <-stop:
				writerErr <- nil
				return
			default:
			}
			i := rng.IntN(n)
			if err := writeGeneration(ctx, c, ns, nads[i].Name, gen); err != nil {
				if apierrors.IsConflict(err) {
					continue
				}
				writerErr <- fmt.Errorf("writer on %s: %w", nads[i].Name, err)
				return
			}
			last[i].Store(gen)
			writes.Add(1)
			time.Sleep(5 * time.Millisecond)
		}
	}()

	began := time.Now()
	runs, codes := 0, map[int]int{}
	for time.Since(began) < *soakFor {
		r := runCLI(t, "migrate", "-n", ns, "--kubeconfig", kubeconfig, "--page-size", "50", "--nad-retry-budget", "5s", "--timeout", "1m")
		runs++
		codes[r.code]++
		if r.code != 0 && r.code != 1 {
			t.Errorf("run %d: exit %d\n%s", runs, r.code, r.errOut)
		}
	}
	close(stop)
	if err := <-writerErr; err != nil {
		t.Fatal(err)
	}

	for i := range 2 {
		r := runCLI(t, "migrate", "-n", ns)
		if r.code == 0 {
			continue
		}
		// A seeded truncated NAD the writer never wrote is reported, as
		// it should be (exit 1); anything else wants a person. Say which
		// NADs or backups: the log may not.
		var why []string
		for _, it := range r.report.Items {
			if it.Action == report.ActionReported && it.Namespace == ns && untouchedTruncated(nads, last, it.Name) {
				continue
			}
			if it.Action == report.ActionFailed || it.Action == report.ActionReported || it.Action == report.ActionMissing {
				why = append(why, fmt.Sprintf("%s/%s %s: %s", it.Namespace, it.Name, it.Action, it.Reason))
			}
		}
		if r.code != 1 || len(why) > 0 || len(r.report.Summary.RejectedBackups) > 0 {
			t.Fatalf("settling run %d: exit %d; %v; rejected backups %v\n%s", i, r.code, why, r.report.Summary.RejectedBackups, r.errOut)
		}
	}
	after := listAll(t, ns)
	if len(after) != n {
		t.Errorf("%d NADs after the soak, want %d", len(after), n)
	}
	lost := 0
	for i, nad := range nads {
		got, ok := after[ns+"/"+nad.Name]
		if !ok {
			lost++
			t.Errorf("%s is gone", nad.Name)
			continue
		}
		gen := last[i].Load()
		res := netconf.Normalize([]byte(got.Spec.Config))
		if gen < 0 {
			// Never written: migrate's result of the seeded config, or
			// the seeded truncated config left as it is.
			if want := netconf.Normalize([]byte(nad.Spec.Config)).Config; string(want) != got.Spec.Config {
				t.Errorf("%s holds %s, want %s", nad.Name, got.Spec.Config, want)
			}
			continue
		}
		if got.Labels["gen"] != strconv.FormatInt(gen, 10) || res.Form != netconf.FormFlat {
			t.Errorf("%s: gen %s form %s, the writer's last write was %d", nad.Name, got.Labels["gen"], res.Form, gen)
			continue
		}
		var conf struct{ Name string }
		if err := json.Unmarshal([]byte(got.Spec.Config), &conf); err != nil || conf.Name != fmt.Sprintf("%s-%d", nad.Name, gen) {
			t.Errorf("%s holds the config of write %q, the writer's last was %d (%v)", nad.Name, conf.Name, gen, err)
		}
	}
	var backups corev1.SecretList
	if err := env.Client.List(ctx, &backups, client.InNamespace(backupNamespace), client.MatchingLabels{replace.LabelBackup: "true"}); err != nil {
		t.Fatal(err)
	}
	proxy.mu.Lock()
	defer proxy.mu.Unlock()
	injected := 0
	for f, c := range proxy.counts {
		if f != faultNone {
			injected += c
		}
	}
	t.Logf("SOAK migration: %s, %d runs (exit codes %v), %d requests through the proxy, %d faults injected %v, writer %d writes; %d NADs checked, %d lost, %d backups left",
		soakFor.String(), runs, codes, proxy.total, injected, proxy.counts, writes.Load(), len(after), lost, len(backups.Items))
	if injected == 0 || writes.Load() == 0 || runs < 2 {
		t.Errorf("The soak proved nothing: %d faults, %d writes, %d runs", injected, writes.Load(), runs)
	}
	if len(backups.Items) != 0 {
		t.Errorf("%d backups left behind", len(backups.Items))
	}
}

// untouchedTruncated says whether name is a seeded truncated NAD the
// writer never wrote: left as it is and reported by every run.
func untouchedTruncated(nads []*nadv1.NetworkAttachmentDefinition, last []atomic.Int64, name string) bool {
	for i, n := range nads {
		if n.Name == name {
			return kindOf(i) == kindTruncated && last[i].Load() < 0
		}
	}
	return false
}
