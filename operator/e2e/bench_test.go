package e2e

import (
	"context"
	"flag"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	nadv1 "github.com/harvester/netconf-migrator/apis/k8scni/v1"
	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/operator"
	"github.com/harvester/netconf-migrator/operator/detect"
)

var (
	benchNADs   = flag.Int("bench-nads", 10000, "NADs stored for BenchmarkOperatorMemory (-short: 1,000)")
	benchLegacy = flag.Int("bench-legacy-percent", 1, "percent of BenchmarkOperatorMemory's NADs stored nested")
)

// harvesterNestedConfig is harvesterConfig as code that embeds
// types.NetConf in a struct of its own writes it.
func harvesterNestedConfig(name string) string {
	return `{"NetConf":{"cniVersion":"0.3.1","name":"` + name + `","type":"bridge"},"bridge":"mgmt-br","promiscMode":true,"vlan":100,"ipam":{},"mtu":1500}`
}

// harvesterConfig is the size of a Harvester VLAN network's config.
func harvesterConfig(name string) string {
	return `{"cniVersion":"0.3.1","name":"` + name + `","type":"bridge","bridge":"mgmt-br","promiscMode":true,"vlan":100,"ipam":{},"mtu":1500}`
}

// seedMany creates n NADs as Harvester and kubectl apply store them
// (labels, the last-applied annotation) from 16 writers, legacyPercent of
// them nested.
func seedMany(b *testing.B, ns string, n, legacyPercent int) (configBytes int64) {
	b.Helper()
	objs := make([]client.Object, n)
	for i := range n {
		nad := newNAD(ns, fmt.Sprintf("nad-%06d", i), flat)
		nad.Spec.Config = harvesterConfig(nad.Name)
		if i%100 < legacyPercent {
			nad.Spec.Config = harvesterNestedConfig(nad.Name)
		}
		// As `kubectl apply` (and GitOps tools) store it: the object once
		// more in an annotation.
		nad.Annotations = map[string]string{"kubectl.kubernetes.io/last-applied-configuration": `{"apiVersion":"k8s.cni.cncf.io/v1","kind":"NetworkAttachmentDefinition","metadata":{"name":"` + nad.Name + `","namespace":"` + ns + `"},"spec":{"config":` + strconv.Quote(nad.Spec.Config) + `}}`}
		nad.Labels = map[string]string{"network.harvesterhci.io/clusternetwork": "mgmt", "network.harvesterhci.io/type": "L2VlanNetwork", "network.harvesterhci.io/vlan-id": "100"}
		objs[i] = nad
		configBytes += int64(len(nad.Spec.Config))
	}
	if err := env.CreateMany(context.Background(), objs); err != nil {
		b.Fatal(err)
	}
	return configBytes
}

// heap returns the live heap after a full collection.
func heap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// BenchmarkOperatorMemory measures the heap the operator holds (its NAD
// cache and the watch's state) with -bench-nads NADs stored, 1% of them
// nested (-bench-legacy-percent), as a ratio to the bytes of their
// configs, against two baselines in the same run: the same operator with an
// untrimmed cache, and with the trim before it kept a nested NAD's config
// (the config of every NAD dropped):
//
//	go test ./operator/e2e -run '^$' -bench OperatorMemory -benchtime 1x -args -bench-nads=100000
func BenchmarkOperatorMemory(b *testing.B) {
	n := *benchNADs
	if testing.Short() {
		n = 1000
	}
	ns := namespace(b, fmt.Sprintf("memory-%d", n), nil)
	configBytes := seedMany(b, ns, n, *benchLegacy)
	dropAll := operator.CacheOptions()
	for obj, by := range dropAll.ByObject {
		keep := by.Transform
		by.Transform = func(o any) (any, error) {
			o, err := keep(o)
			if nad, ok := o.(*nadv1.NetworkAttachmentDefinition); ok {
				nad.Spec.Config = ""
			}
			return o, err
		}
		dropAll.ByObject[obj] = by
	}
	measure := func(cache *cache.Options) float64 {
		before := heap()
		opts := ctrl.Options{Scheme: env.Scheme, Logger: logr.Discard(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
			Controller: config.Controller{SkipNameValidation: ptr.To(true)}}
		if cache != nil {
			opts.Cache = *cache
		}
		mgr, err := ctrl.NewManager(env.Config, opts)
		if err != nil {
			b.Fatal(err)
		}
		// The whole operator: its cache, and the watch's counts of every
		// NAD (with the setting Off nothing is written).
		if err := operator.Setup(mgr, env.Config, logr.Discard(), operator.Options{Fix: detect.FixOff, Identity: "bench", BackupNamespace: backupNamespace}); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { defer close(done); _ = mgr.Start(ctx) }()
		defer func() { cancel(); <-done }()
		waitFor(b, "the operator to count every NAD", func() (bool, error) {
			return gauge(b, "netconf_migrator_stored_nads", map[string]string{"form": "flat"})+
				gauge(b, "netconf_migrator_stored_nads", map[string]string{"form": "nested"}) >= float64(n), nil
		})
		held := heap() - before
		runtime.KeepAlive(mgr)
		return float64(held)
	}
	for b.Loop() {
		untrimmed := measure(nil)
		before := measure(&dropAll)
		trimmed := measure(ptr.To(operator.CacheOptions()))
		b.ReportMetric(trimmed/float64(configBytes), "heap/config-bytes")
		b.ReportMetric(untrimmed/float64(configBytes), "untrimmed-heap/config-bytes")
		b.ReportMetric(trimmed/untrimmed, "x-untrimmed")
		b.ReportMetric(trimmed/before, "x-configs-dropped")
		b.ReportMetric(trimmed/float64(n), "B/NAD")
		b.ReportMetric(before/float64(n), "configs-dropped-B/NAD")
	}
}

// BenchmarkLegacyNADFixLatency measures the time from a nested NAD being
// stored (behind the webhook's back) to the operator having fixed it in
// place, against the baseline of the same two writes made back to back by
// one client (the floor: a create, then an update), in the same run:
//
//	go test ./operator/e2e -run '^$' -bench FixLatency -benchtime 200x
func BenchmarkLegacyNADFixLatency(b *testing.B) {
	ns := namespace(b, "latency", nil)
	startOperator(b, operator.Options{Fix: detect.FixInPlace})
	c := env.Client
	// The fix is seen on a watch opened before the first create: reading
	// the NAD again and again would add the reads' own time.
	wc, err := client.NewWithWatch(env.Config, client.Options{Scheme: env.Scheme})
	if err != nil {
		b.Fatal(err)
	}
	// A watch opened just after the control plane started may end at once
	// ("Too large resource version": the API server's watch cache is behind
	// etcd): open it until it delivers a probe NAD's event.
	var w watch.Interface
	for attempt := 0; w == nil; attempt++ {
		if attempt == 20 {
			b.Fatal("no watch of the NADs delivered an event")
		}
		cand, err := wc.Watch(context.Background(), &nadv1.NetworkAttachmentDefinitionList{}, client.InNamespace(ns))
		if err != nil {
			b.Fatal(err)
		}
		probe := newNAD(ns, fmt.Sprintf("probe-%d", attempt), flat)
		create(b, probe)
		for ev := range cand.ResultChan() {
			if n, ok := ev.Object.(*nadv1.NetworkAttachmentDefinition); ok && n.Name == probe.Name {
				w = cand
				break
			} else if !ok {
				break
			}
		}
		if w == nil {
			cand.Stop()
			time.Sleep(500 * time.Millisecond)
		}
	}
	defer w.Stop()
	var fixed, floor []time.Duration
	i := 0
	for b.Loop() {
		i++
		name := fmt.Sprintf("nad-%05d", i)
		start := time.Now()
		create(b, newNAD(ns, name, nested))
		for ev := range w.ResultChan() {
			nad, ok := ev.Object.(*nadv1.NetworkAttachmentDefinition)
			if !ok {
				b.Fatalf("the watch ended: %v", ev.Object)
			}
			if nad.Name == name && netconf.Normalize([]byte(nad.Spec.Config)).Form == netconf.FormFlat {
				break
			}
		}
		fixed = append(fixed, time.Since(start))

		// The floor: the same create and rewrite, by the writer itself.
		start = time.Now()
		nad := newNAD(ns, "floor-"+name, nested)
		nad.Labels = map[string]string{"netconf-migrator.harvesterhci.io/skip": "true"} // the operator looks away
		create(b, nad)
		nad.Spec.Config = strings.ReplaceAll(flat, "%s", nad.Name)
		if err := c.Update(context.Background(), nad); err != nil {
			b.Fatal(err)
		}
		floor = append(floor, time.Since(start))
	}
	p := func(d []time.Duration, q float64) time.Duration {
		s := append([]time.Duration(nil), d...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		return s[int(q*float64(len(s)-1))]
	}
	b.ReportMetric(float64(p(fixed, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(p(fixed, 0.95).Microseconds())/1000, "p95-ms")
	b.ReportMetric(float64(p(fixed, 0.5))/float64(p(floor, 0.5)), "p50-x-floor")
	b.ReportMetric(float64(p(floor, 0.5).Microseconds())/1000, "floor-p50-ms")
}
