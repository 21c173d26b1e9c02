package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/internal/serving"
	"github.com/harvester/netconf-migrator/test/testenv"
	"github.com/harvester/netconf-migrator/webhooks"
)

// flatBench is a flat config like those Harvester writes: the shipped
// configuration's matchConditions keep it away from the webhook.
const flatBench = `{"cniVersion":"0.3.1","name":"bench","type":"bridge","bridge":"bench-br","promiscMode":true,"vlan":100,"ipam":{}}`

// BenchmarkCreateLatency creates NADs through the API server from 1 and 16
// concurrent clients, and reports the p50 and p99 latency of a create:
//
//	none        no webhook configuration at all (the baseline)
//	allow-only  the shipped configuration calling a server that only decodes
//	            the review and allows it: what any webhook costs here
//	fixed-patch the shipped configuration calling a server that answers every
//	            review with the response our handler gives for this NAD (the
//	            same patch and warning), computed once: what any webhook that
//	            rewrites the config costs, since the API server applies the
//	            patch and decodes the result
//	ours        the shipped configuration calling our webhook
//	hung        the shipped configuration pointing at a server that accepts
//	            connections and never answers (an unreachable webhook)
//
// each with a nested config (which the webhook rewrites) and a flat one
// (which the shipped matchConditions keep away from the webhook; allow-only
// and fixed-patch are not called for it, and hung would cost its 5 s
// timeout per nested create). hack/bench-webhook.sh turns the runs into
// ratios.
func BenchmarkCreateLatency(b *testing.B) {
	c, err := env.UnlimitedClient() // measure the API server, not client-side throttling
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	run := 0
	for _, mode := range []string{"none", "allow-only", "fixed-patch", "ours", "hung"} {
		stop := func() {}
		configs := map[string]string{"nested": nestedProbe, "flat": flatBench}
		switch mode {
		case "none":
			removeShipped(b)
		case "allow-only":
			stop = startBaseline(b, func(context.Context, admission.Request) admission.Response { return admission.Allowed("") })
			delete(configs, "flat")
		case "fixed-patch":
			resp := oursResponse(b, newNAD("bench", "n-0", nestedProbe))
			stop = startBaseline(b, func(context.Context, admission.Request) admission.Response { return resp })
			delete(configs, "flat")
		case "ours":
			w := startOurs(b, webhooks.ServerOptions{})
			stop = func() { w.stop(b) }
			removeShipped(b) // the baselines' configuration points elsewhere
			installShipped(b)
		case "hung":
			stop = startHung(b)
			delete(configs, "nested")
		}
		for _, shape := range []string{"flat", "nested"} {
			config, ok := configs[shape]
			if !ok {
				continue
			}
			for _, clients := range []int{1, 16} {
				b.Run(fmt.Sprintf("%s/%s/clients=%d", mode, shape, clients), func(b *testing.B) {
					run++
					ns := fmt.Sprintf("bench-create-%d", run)
					if err := env.CreateNamespace(ctx, ns, nil); err != nil {
						b.Fatal(err)
					}
					lat := creates(b, c, clients, b.N, func(i int) *nadv1.NetworkAttachmentDefinition {
						return newNAD(ns, fmt.Sprintf("n-%d", i), config)
					})
					slices.Sort(lat)
					b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
					b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()), "p99-µs")
					if err := env.Client.DeleteAllOf(ctx, &nadv1.NetworkAttachmentDefinition{}, client.InNamespace(ns)); err != nil {
						b.Fatal(err)
					}
				})
			}
		}
		stop()
	}
}

// creates makes n NADs from clients concurrent clients, timed from
// ResetTimer to StopTimer, and returns each create's latency, by index.
func creates(b *testing.B, c client.Client, clients, n int, nad func(i int) *nadv1.NetworkAttachmentDefinition) []time.Duration {
	b.Helper()
	lat := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	b.ResetTimer()
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				obj := nad(i)
				start := time.Now()
				if err := c.Create(context.Background(), obj); err != nil {
					errs <- err
					return
				}
				lat[i] = time.Since(start)
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	return lat
}

// startHung registers the shipped configuration pointing at a listener
// that accepts connections and never answers, and waits until the API
// server gives up on it (failurePolicy Ignore) for a nested config. The
// returned function removes both.
func startHung(b testing.TB) func() {
	b.Helper()
	removeShipped(b)
	url, stop := hungListener(b)
	mwc := shippedMWC(b)
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.URL = ptr.To(url)
	}
	if err := env.Client.Create(context.Background(), mwc); err != nil {
		b.Fatal(err)
	}
	// A nested config waits the webhook's timeout, then goes through as is.
	nad := newNAD(probeNamespace, "", nestedProbe)
	nad.GenerateName = "probe-"
	if err := env.Client.Create(context.Background(), nad, client.DryRunAll); err != nil || nad.Annotations[webhooks.AnnotationNormalizedFrom] != "" {
		b.Fatalf("the hung webhook was not ignored: %v %v", err, nad.Annotations)
	}
	return func() {
		removeShipped(b)
		stop()
	}
}

// oursResponse is our handler's response to a CREATE of nad, checked to be
// a patch so that the fixed-patch baseline does what ours does.
func oursResponse(b testing.TB, nad *nadv1.NetworkAttachmentDefinition) admission.Response {
	b.Helper()
	raw, err := json.Marshal(nad)
	if err != nil {
		b.Fatal(err)
	}
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		Operation: admissionv1.Create, Namespace: nad.Namespace, Name: nad.Name, Object: runtime.RawExtension{Raw: raw},
	}}
	resp := webhooks.NewHandler(webhooks.Options{}, logr.Discard()).Handle(context.Background(), req)
	if !resp.Allowed || len(resp.Patches) == 0 || len(resp.Warnings) == 0 {
		b.Fatalf("our handler did not patch %s with a warning: %+v", nad.Name, resp)
	}
	return resp
}

// startBaseline serves handle in our webhook's place, registers the
// shipped configuration pointing at it and waits until the API server
// calls it. The returned function stops it.
func startBaseline(b testing.TB, handle admission.HandlerFunc) func() {
	b.Helper()
	var calls atomic.Int64
	url, stop := serveElsewhere(b, func(ctx context.Context, req admission.Request) admission.Response {
		calls.Add(1)
		return handle(ctx, req)
	})
	ctx := context.Background()
	mwc := shippedMWC(b)
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.URL = ptr.To(url)
	}
	removeShipped(b)
	if err := env.Client.Create(ctx, mwc); err != nil {
		b.Fatal(err)
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		nad := newNAD(probeNamespace, "", nestedProbe)
		nad.GenerateName = "probe-"
		return calls.Load() > 0, env.Client.Create(ctx, nad, client.DryRunAll)
	})
	if err != nil {
		b.Fatalf("waiting for the baseline webhook: %v", err)
	}
	return stop
}

// BenchmarkCreateLatencyPaired measures creates that differ only in the
// webhook configuration that applies to their namespace, interleaved in
// one run so that drift between runs (etcd's state, the other processes
// on two shared cores) cancels out:
//
//	none   a namespace no webhook configuration selects (the baseline)
//	ours   the shipped configuration, with its matchConditions, calling ours
//	fixed  the same configuration calling a server that answers our patch
//	       for a nested NAD without computing it (the floor any patching
//	       webhook pays)
//	hung   the same configuration pointing at a server that accepts and
//	       never answers (flat NADs only: a nested one waits its timeout)
//
// Flat creates rotate over none, ours and hung; nested ones over none,
// ours and fixed. hack/bench-webhook.sh reports the ratios.
func BenchmarkCreateLatencyPaired(b *testing.B) {
	ctx := context.Background()
	c, err := env.UnlimitedClient()
	if err != nil {
		b.Fatal(err)
	}
	removeShipped(b)
	w := startOurs(b, webhooks.ServerOptions{})
	defer w.stop(b)
	fixedResp := oursResponse(b, newNAD("bench", "n-0", nestedProbe))
	fixedURL, stopFixed := serveElsewhere(b, func(context.Context, admission.Request) admission.Response { return fixedResp })
	defer stopFixed()
	hungURL, stopHung := hungListener(b)
	defer stopHung()

	const scopeLabel = "netconf-migrator.test/bench-scope"
	scoped := func(name, scope, url string) {
		mwc := shippedMWC(b)
		mwc.Name = name
		for i := range mwc.Webhooks {
			mwc.Webhooks[i].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{scopeLabel: scope}}
			if url != "" {
				mwc.Webhooks[i].ClientConfig.URL = ptr.To(url)
			}
		}
		if err := env.Client.Create(ctx, mwc); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { deleteWebhookConfiguration(b, "MutatingWebhookConfiguration", mwc.Name) })
	}
	scoped("00-netconf-migrator-bench-ours", "ours", "")
	scoped("00-netconf-migrator-bench-fixed", "fixed", fixedURL)
	scoped("00-netconf-migrator-bench-hung", "hung", hungURL)
	run := 0
	namespaces := func() map[string]string {
		run++
		out := map[string]string{}
		for _, scope := range []string{"none", "ours", "fixed", "hung"} {
			ns := fmt.Sprintf("bench-paired-%d-%s", run, scope)
			labels := map[string]string{scopeLabel: scope}
			if err := env.CreateNamespace(ctx, ns, labels); err != nil {
				b.Fatal(err)
			}
			out[scope] = ns
		}
		return out
	}
	// The API server picks configurations up a moment after they are
	// created: wait until ours and the fixed server rewrite a nested NAD.
	probe := namespaces()
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, scope := range []string{"ours", "fixed"} {
			nad := newNAD(probe[scope], "probe", nestedProbe)
			if err := env.Client.Create(ctx, nad, client.DryRunAll); err != nil || nad.Annotations[webhooks.AnnotationNormalizedFrom] == "" {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		b.Fatalf("waiting for the scoped configurations: %v", err)
	}

	for _, shape := range []struct {
		name, config string
		scopes       []string
	}{
		{"flat", flatBench, []string{"none", "ours", "hung"}},
		{"nested", nestedProbe, []string{"none", "ours", "fixed"}},
	} {
		for _, clients := range []int{1, 16} {
			b.Run(fmt.Sprintf("%s/clients=%d", shape.name, clients), func(b *testing.B) {
				ns := namespaces()
				n := b.N * len(shape.scopes)
				lat := creates(b, c, clients, n, func(i int) *nadv1.NetworkAttachmentDefinition {
					return newNAD(ns[shape.scopes[i%len(shape.scopes)]], fmt.Sprintf("n-%d", i), shape.config)
				})
				p := map[string][2]float64{}
				for k, scope := range shape.scopes {
					var l []time.Duration
					for i := k; i < n; i += len(shape.scopes) {
						l = append(l, lat[i])
					}
					slices.Sort(l)
					p50, p99 := float64(l[len(l)/2].Microseconds()), float64(l[min(len(l)-1, len(l)*99/100)].Microseconds())
					p[scope] = [2]float64{p50, p99}
					b.ReportMetric(p50, scope+"-p50-µs")
					b.ReportMetric(p99, scope+"-p99-µs")
				}
				for _, scope := range shape.scopes[1:] {
					b.ReportMetric(p[scope][0]/p["none"][0], scope+"/none-p50")
					b.ReportMetric(p[scope][1]/p["none"][1], scope+"/none-p99")
				}
				if shape.name == "nested" {
					b.ReportMetric(p["ours"][0]/p["fixed"][0], "ours/fixed-p50")
					b.ReportMetric(p["ours"][1]/p["fixed"][1], "ours/fixed-p99")
				}
				for _, scope := range shape.scopes {
					if err := env.Client.DeleteAllOf(ctx, &nadv1.NetworkAttachmentDefinition{}, client.InNamespace(ns[scope])); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// serveElsewhere serves handle on a free port with envtest's serving
// certificate and returns the URL of our path there.
func serveElsewhere(b testing.TB, handle admission.HandlerFunc) (string, func()) {
	b.Helper()
	port, err := testenv.FreePort(env.Webhook.LocalServingHost)
	if err != nil {
		b.Fatal(err)
	}
	srv := webhook.NewServer(webhook.Options{
		Host: env.Webhook.LocalServingHost, Port: port, CertDir: env.Webhook.LocalServingCertDir,
		TLSOpts: []func(*tls.Config){serving.TLSOptions(false)},
	})
	srv.Register(webhooks.Path, &webhook.Admission{Handler: handle})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	return "https://" + net.JoinHostPort(env.Webhook.LocalServingHost, fmt.Sprint(port)) + webhooks.Path, func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
}

// hungListener accepts connections and never answers them.
func hungListener(b testing.TB) (string, func()) {
	b.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(env.Webhook.LocalServingHost, "0"))
	if err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn) // held open, never read
			mu.Unlock()
		}
	}()
	return "https://" + l.Addr().String() + webhooks.Path, func() {
		_ = l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	}
}
