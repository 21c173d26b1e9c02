package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/report"
	"github.com/harvester/netconf-migrator/migration"
	"github.com/harvester/netconf-migrator/test/harvester"
)

type fault int

const (
	faultNone fault = iota
	faultTooMany
	faultServerError
	faultDropBefore // the connection dies before the API server sees the write
	faultDropAfter  // the write lands, its answer is lost
	faultSlow
	// The write lands; its answer is the API server's 504 "may still be
	// processing the request" with Retry-After, and client-go resends it.
	faultTimeoutAfter
	faultKinds
)

func (f fault) String() string {
	return [...]string{"none", "429", "500", "drop-before", "drop-after", "slow", "504-after"}[f]
}

// faultProxy stands between migrate and the API server. The first write
// to each NAD gets the NAD's fault; the first list is dropped and the
// second is slow. It counts and times every write.
type faultProxy struct {
	upstream *httputil.ReverseProxy
	faultOf  func(name string) fault

	mu     sync.Mutex
	writes map[string][]time.Time
	lists  int
	counts map[fault]int
}

func newFaultProxy(t testing.TB, faultOf func(string) fault) (*faultProxy, *httptest.Server) {
	t.Helper()
	p := &faultProxy{upstream: upstream(t), faultOf: faultOf, writes: map[string][]time.Time{}, counts: map[fault]int{}}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv
}

// upstream is a reverse proxy to the API server with the admin
// credentials, for proxies that stand between migrate and the API server.
func upstream(t testing.TB) *httputil.ReverseProxy {
	t.Helper()
	target, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := rest.TransportFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = rt
	return rp
}

const nadPath = "/apis/k8s.cni.cncf.io/v1/namespaces/faults/network-attachment-definitions"

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f := faultNone
	p.mu.Lock()
	switch {
	case r.Method == http.MethodPatch && strings.HasPrefix(r.URL.Path, nadPath+"/"):
		name := strings.TrimPrefix(r.URL.Path, nadPath+"/")
		if len(p.writes[name]) == 0 {
			f = p.faultOf(name)
		}
		p.writes[name] = append(p.writes[name], time.Now())
	case r.Method == http.MethodGet && r.URL.Path == nadPath:
		p.lists++
		switch p.lists {
		case 1:
			f = faultDropBefore
		case 2:
			f = faultSlow
		}
	}
	p.counts[f]++
	p.mu.Unlock()

	f.serve(w, r, p.upstream)
}

// serve answers r as fault f says, passing it to upstream where the fault
// lets it through.
func (f fault) serve(w http.ResponseWriter, r *http.Request, upstream http.Handler) {
	switch f {
	case faultTooMany:
		w.Header().Set("Retry-After", "1")
		writeStatus(w, http.StatusTooManyRequests, "TooManyRequests", "injected: too many requests, please try again later")
	case faultServerError:
		writeStatus(w, http.StatusInternalServerError, "InternalError", "injected: etcdserver: leader changed")
	case faultDropBefore:
		dropConnection(w)
	case faultDropAfter:
		upstream.ServeHTTP(httptest.NewRecorder(), r)
		dropConnection(w)
	case faultSlow:
		time.Sleep(300 * time.Millisecond)
		upstream.ServeHTTP(w, r)
	case faultTimeoutAfter:
		upstream.ServeHTTP(httptest.NewRecorder(), r)
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusGatewayTimeout)
		fmt.Fprint(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"injected: the server was unable to return a response in the time allotted, but may still be processing the request","reason":"Timeout","details":{"retryAfterSeconds":1},"code":504}`)
	default:
		upstream.ServeHTTP(w, r)
	}
}

func writeStatus(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	fmt.Fprintf(w, `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":%q,"reason":%q,"code":%d}`, msg, reason, code)
}

func dropConnection(w http.ResponseWriter) {
	conn, _, err := w.(http.Hijacker).Hijack()
	if err == nil {
		_ = conn.Close()
	}
}

// TestFaultsAndDenials runs migrate through the fault proxy while
// Harvester v1.5's validator denies the NADs attached to running VMs.
func TestFaultsAndDenials(t *testing.T) {
	ctx := context.Background()
	const ns = "faults"
	if err := env.CreateNamespace(ctx, ns, map[string]string{harvester.NamespaceLabel: "true"}); err != nil {
		t.Fatal(err)
	}
	ensureBackupNamespace(t)
	harvester.Create(t, env.Client, harvester.NewClusterNetwork("mgmt", 0))
	var nads []*nadv1.NetworkAttachmentDefinition
	faults := map[string]fault{}
	for i := range 6 * int(faultKinds) {
		name := fmt.Sprintf("nad-%02d", i)
		faults[name] = fault(i % int(faultKinds))
		nads = append(nads, newNAD(ns, name, nestedConfig(name), harvesterLabels()))
	}
	for i := range 6 {
		nads = append(nads, newNAD(ns, fmt.Sprintf("flat-%d", i), flatConfig("flat"), harvesterLabels()))
	}
	denied := map[string]bool{}
	var vmis []client.Object
	for i := range 4 {
		n := newNAD(ns, fmt.Sprintf("vm-%d", i), nestedConfig("vm"), harvesterLabels())
		nads = append(nads, n)
		denied[n.Name] = true
		vmis = append(vmis, harvester.NewVMI(ns, n.Name, n.Name))
	}
	seed(t, nads)
	harvester.Create(t, env.Client, vmis...)
	// v1.5 flattens a nested NAD in place unless a running VM uses it.
	h := harvester.StartT(t, env, harvester.V15)
	t.Cleanup(func() { h.Clear(t, ns) })
	h.Settle(t)
	before := listAll(t, ns)

	proxy, srv := newFaultProxy(t, func(name string) fault { return faults[name] })
	r := runCLI(t, "migrate", "-n", ns, "--kubeconfig", kubeconfigFor(t, srv.URL))
	if r.code != 1 {
		t.Fatalf("exit %d, want 1: denied NADs need a person\n%s", r.code, r.errOut)
	}
	items := r.itemsByName()
	after := listAll(t, ns)
	for name := range faults {
		if it := items[name]; it.Action != report.ActionNormalized {
			t.Errorf("%s (fault %s): %s %q, want normalized", name, faults[name], it.Action, it.Reason)
		}
		if after[ns+"/"+name].Annotations[nadv1.AnnotationNormalizedFrom] != "nested" {
			t.Errorf("%s (fault %s) was not rewritten: %q", name, faults[name], after[ns+"/"+name].Spec.Config)
		}
	}
	for name := range denied {
		it := items[name]
		if it.Action != report.ActionFailed || !strings.Contains(it.Reason, "could not update nad faults/"+name+" because it's still used by VM(s) faults/"+name+" which must be stopped at first") {
			t.Errorf("%s: %s %q, want failed with Harvester's message", name, it.Action, it.Reason)
		}
		if !strings.Contains(it.Advice, "stop the VMs named") {
			t.Errorf("%s: advice %q", name, it.Advice)
		}
		if a, b := after[ns+"/"+name], before[ns+"/"+name]; a.ResourceVersion != b.ResourceVersion {
			t.Errorf("%s was written although denied", name)
		}
	}
	if got := r.report.Summary.Actions[report.ActionFailed]; got != len(denied) {
		t.Errorf("%d failed, want %d", got, len(denied))
	}
	if !strings.Contains(r.errOut, "vm-0") || !strings.Contains(r.errOut, "must be stopped at first") {
		t.Errorf("the summary does not name the denied NADs and the reason:\n%s", r.errOut)
	}

	// Retries are bounded: a denial is final, every fault costs one more
	// write (a lost answer: the retry meets our own write as a conflict).
	proxy.mu.Lock()
	defer proxy.mu.Unlock()
	for name, times := range proxy.writes {
		want := 1
		if faults[name] != faultNone && faults[name] != faultSlow && !denied[name] {
			want = 2
		}
		if len(times) != want {
			t.Errorf("%s (fault %s): %d writes, want %d", name, faults[name], len(times), want)
		}
		if faults[name] == faultTooMany && len(times) == 2 {
			if gap := times[1].Sub(times[0]); gap < 900*time.Millisecond {
				t.Errorf("%s: retried %v after a 429 with Retry-After: 1", name, gap)
			}
		}
	}
	if proxy.lists < 2 || proxy.counts[faultDropBefore] < 7 {
		t.Errorf("the proxy injected too little: %d lists, %v", proxy.lists, proxy.counts)
	}
	checkFailedEvents(ctx, t, ns, denied)
}

func checkFailedEvents(ctx context.Context, t *testing.T, ns string, denied map[string]bool) {
	t.Helper()
	var events corev1.EventList
	if err := fastClient(t).List(ctx, &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	warned := map[string]bool{}
	for _, e := range events.Items {
		if e.Reason == migration.ReasonNormalizeFail && e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "must be stopped at first") {
			warned[e.InvolvedObject.Name] = true
		}
	}
	for name := range denied {
		if !warned[name] {
			t.Errorf("no %s warning event for %s/%s", migration.ReasonNormalizeFail, ns, name)
		}
	}
}
