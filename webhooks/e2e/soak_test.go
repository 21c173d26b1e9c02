package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/test/testenv"
	"github.com/harvester/netconf-migrator/webhooks"
)

// soakFor bounds TestSoakWebhook: short in make test, longer in make soak.
var soakFor = flag.Duration("soak", 12*time.Second, "how long the soak tests run (make soak sets SOAK_DURATION)")

// balancer stands for a Service in front of the webhook's replicas: it
// passes TCP (and so TLS) through to a ready replica, round robin, and a
// replica taken out of it gets no new connections, as an endpoint that is
// no longer ready.
type balancer struct {
	ln       net.Listener
	backends []string
	ready    []atomic.Bool
	next     atomic.Uint64
}

func newBalancer(t *testing.T, backends ...string) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(env.Webhook.LocalServingHost, "0"))
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{ln: ln, backends: backends, ready: make([]atomic.Bool, len(backends))}
	for i := range b.ready {
		b.ready[i].Store(true)
	}
	t.Cleanup(func() { ln.Close() })
	testenv.Forward(ln, b.dial)
	return b
}

// dial connects to the next ready replica.
func (b *balancer) dial() (net.Conn, error) {
	for range len(b.backends) {
		i := int(b.next.Add(1) % uint64(len(b.backends)))
		if !b.ready[i].Load() {
			continue
		}
		if c, err := net.Dial("tcp", b.backends[i]); err == nil {
			return c, nil
		}
	}
	return nil, errors.New("no replica is ready")
}

// TestDrainMovesConnections: told to stop, the webhook serves on for its
// drain period, answering each request with Connection: close, then
// stops. Without it the API server's pooled connections are cut under it
// (TestSoakWebhook lost an admission that way, one run in three).
func TestDrainMovesConnections(t *testing.T) {
	w, _, _, addr := startWithCA(t, 3*time.Second)
	url := "https://" + addr + webhooks.Path
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	post := func() (*http.Response, error) {
		resp, err := c.Post(url, "application/json", strings.NewReader(`{}`))
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		return resp, err
	}
	resp, err := post()
	if err != nil {
		t.Fatal(err)
	}
	if resp.Close {
		t.Fatal("the webhook closes connections before it is told to stop")
	}
	w.cancel()
	time.Sleep(500 * time.Millisecond)
	resp, err = post()
	if err != nil {
		t.Fatalf("the webhook stopped serving at once: %v", err)
	}
	if !resp.Close {
		t.Error("while draining, a response did not close its connection")
	}
	if err := <-w.done; err != nil {
		t.Errorf("the webhook stopped with an error: %v", err)
	}
	if _, err := post(); err == nil {
		t.Error("the webhook still serves after its drain period")
	}
}

// TestSoakWebhook keeps the API server admitting nested NADs through two
// replicas of the webhook behind a balancer, registered with the shipped
// configuration, while the serving certificate is renewed under the same
// CA and one replica is restarted the way a rollout does it (out of the
// endpoints, preStop delay, graceful stop, back): every admission must
// succeed and every stored config must be flat. Then the replicas' TLS
// and paths are probed. The figures go to the log for BENCHMARKS.md.
func TestSoakWebhook(t *testing.T) {
	ctx := context.Background()
	ca := newCAChain(t)
	certDir := t.TempDir()
	ca.issue(t, certDir, 2)
	host := env.Webhook.LocalServingHost
	ports := make([]int, 2)
	replicas := make([]*ours, 2)
	addrs := make([]string, 2)
	start := func(i int) {
		replicas[i] = startOurs(t, webhooks.ServerOptions{Host: host, Port: ports[i], CertDir: certDir, CertMode: webhooks.CertModeExternal,
			DrainPeriod: 2 * time.Second})
	}
	for i := range ports {
		p, err := testenv.FreePort(host)
		if err != nil {
			t.Fatal(err)
		}
		ports[i], addrs[i] = p, net.JoinHostPort(host, fmt.Sprint(p))
		start(i)
	}
	defer func() {
		for _, r := range replicas {
			r.stop(t)
		}
	}()
	lb := newBalancer(t, addrs...)

	registerCAChain(t, "00-netconf-migrator-soak", lb.ln.Addr().String(), ca)
	const ns = "soak"
	if err := env.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	waitWebhook(t, true)

	var admitted, failed, unchanged atomic.Int64
	var failures sync.Map
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				nad := newNAD(ns, fmt.Sprintf("w%d-%d", w, i), `{"NetConf":{"cniVersion":"0.3.1","type":"bridge"},"bridge":"soak-br","vlan":`+fmt.Sprint(1+i%4094)+`}`)
				if err := env.Client.Create(ctx, nad); err != nil {
					failed.Add(1)
					failures.Store(nad.Name, err.Error())
					continue
				}
				admitted.Add(1)
				if nad.Annotations[nadv1.AnnotationNormalizedFrom] == "" {
					unchanged.Add(1)
					failures.Store(nad.Name, "stored without the webhook's rewrite")
				}
			}
		}()
	}

	began := time.Now()
	time.Sleep(*soakFor / 3)
	ca.issue(t, certDir, 3)
	renewedAt := admitted.Load()
	for _, a := range addrs {
		for servedSerial(a) != 3 {
			time.Sleep(50 * time.Millisecond)
		}
	}
	time.Sleep(*soakFor / 3)
	// The rollout of replica 0: out of the endpoints, SIGTERM (it drains
	// the API server's pooled connections, then stops), a new one.
	lb.ready[0].Store(false)
	restartAt := admitted.Load()
	replicas[0].stop(t)
	start(0)
	lb.ready[0].Store(true)
	time.Sleep(time.Until(began.Add(*soakFor)))
	close(stop)
	wg.Wait()

	failures.Range(func(k, v any) bool {
		t.Errorf("NAD %s/%s: %v", ns, k, v)
		return true
	})
	list := &nadv1.NetworkAttachmentDefinitionList{}
	if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	flat := 0
	for _, n := range list.Items {
		if res := netconf.Normalize([]byte(n.Spec.Config)); res.Form == netconf.FormFlat && !res.Changed {
			flat++
		}
	}
	if int64(len(list.Items)) != admitted.Load() || flat != len(list.Items) {
		t.Errorf("Stored %d NADs (%d flat) for %d admissions", len(list.Items), flat, admitted.Load())
	}
	t.Logf("SOAK webhook: %s, 2 replicas, %d admissions (%.0f/s), %d failed, %d not rewritten; certificate renewed after %d, replica restarted after %d; %d NADs checked flat",
		soakFor.String(), admitted.Load(), float64(admitted.Load())/time.Since(began).Seconds(), failed.Load(), unchanged.Load(), renewedAt, restartAt, flat)
	if admitted.Load() < 50 {
		t.Errorf("Only %d admissions in %s", admitted.Load(), soakFor)
	}

	t.Run("HTTP/2 when enabled", func(t *testing.T) {
		port, err := testenv.FreePort(host)
		if err != nil {
			t.Fatal(err)
		}
		h2 := startOurs(t, webhooks.ServerOptions{Host: host, Port: port, CertDir: certDir, CertMode: webhooks.CertModeExternal, EnableHTTP2: true})
		defer h2.stop(t)
		conn, err := tls.Dial("tcp", net.JoinHostPort(host, fmt.Sprint(port)), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if p := conn.ConnectionState().NegotiatedProtocol; p != "h2" {
			t.Errorf("--enable-http2 negotiated %q", p)
		}
	})
	t.Run("TLS 1.0 and 1.1 refused, HTTP/2 not offered, only the webhook's paths", func(t *testing.T) {
		for _, a := range addrs {
			for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
				conn, err := tls.Dial("tcp", a, &tls.Config{InsecureSkipVerify: true, MinVersion: v, MaxVersion: v})
				if err == nil {
					conn.Close()
					t.Errorf("%s accepted TLS version %x", a, v)
				}
			}
			conn, err := tls.Dial("tcp", a, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
			if err == nil {
				if p := conn.ConnectionState().NegotiatedProtocol; p == "h2" {
					t.Errorf("%s negotiated HTTP/2 without --enable-http2", a)
				}
				conn.Close()
			}
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
			for _, path := range []string{"/", "/metrics", "/healthz", "/readyz", "/debug/pprof/", webhooks.Path + "/x", "/convert"} {
				resp, err := c.Get("https://" + a + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("GET https://%s%s: %d, want 404", a, path, resp.StatusCode)
				}
			}
		}
	})
}
