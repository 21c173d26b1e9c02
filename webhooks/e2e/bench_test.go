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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
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
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = -1, 0 // measure the API server, not client-side throttling
	c, err := client.New(cfg, client.Options{Scheme: env.Scheme})
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
					lat := make([]time.Duration, b.N)
					var next atomic.Int64
					var wg sync.WaitGroup
					errs := make(chan error, clients)
					b.ResetTimer()
					for range clients {
						wg.Go(func() {
							for {
								i := int(next.Add(1) - 1)
								if i >= b.N {
									return
								}
								nad := newNAD(ns, fmt.Sprintf("n-%d", i), config)
								start := time.Now()
								if err := c.Create(ctx, nad); err != nil {
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

// startHung registers the shipped configuration pointing at a listener
// that accepts connections and never answers, and waits until the API
// server gives up on it (failurePolicy Ignore) for a nested config. The
// returned function removes both.
func startHung(b testing.TB) func() {
	b.Helper()
	removeShipped(b)
	l, err := net.Listen("tcp", net.JoinHostPort(env.Webhook.LocalServingHost, "0"))
	if err != nil {
		b.Fatal(err)
	}
	var conns []net.Conn
	var mu sync.Mutex
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
	mwc := shippedMWC(b)
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig.URL = ptr.To("https://" + l.Addr().String() + webhooks.Path)
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
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
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

// startBaseline serves handle where our webhook would be, registers the
// shipped configuration and waits until the API server calls it. The
// returned function stops it.
func startBaseline(b testing.TB, handle admission.HandlerFunc) func() {
	b.Helper()
	var calls atomic.Int64
	srv := webhook.NewServer(webhook.Options{
		Host: env.Webhook.LocalServingHost, Port: env.Webhook.LocalServingPort, CertDir: env.Webhook.LocalServingCertDir,
		TLSOpts: []func(*tls.Config){webhooks.TLSOptions(false)},
	})
	srv.Register(webhooks.Path, &webhook.Admission{Handler: admission.HandlerFunc(func(ctx context.Context, req admission.Request) admission.Response {
		calls.Add(1)
		return handle(ctx, req)
	})})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Start(ctx) }()
	if err := env.Client.Create(ctx, shippedMWC(b)); err != nil && !apierrors.IsAlreadyExists(err) {
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
	return func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
}
