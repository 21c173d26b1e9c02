package consumers

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/test/testenv"
)

var env *testenv.Env

// skipped is set when a test does not run; the table in docs/consumers.md is then
// neither checked nor written.
var skipped bool

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := cniDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, "FAIL:", err)
		os.Exit(1)
	}
	files, err := filepath.Glob(filepath.Join(dir, "crds", "*.yaml"))
	if err != nil || len(files) == 0 {
		fmt.Fprintln(os.Stderr, "FAIL: no Whereabouts CRDs in", filepath.Join(dir, "crds"), err)
		os.Exit(1)
	}
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			os.Exit(1)
		}
		crd := &apiextensionsv1.CustomResourceDefinition{}
		if err := yaml.Unmarshal(raw, crd); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL: decoding", f, err)
			os.Exit(1)
		}
		crds = append(crds, crd)
	}
	code := testenv.Main(m, testenv.Options{CRDs: crds}, &env)
	full := flag.Lookup("test.run").Value.String() == "" && flag.Lookup("test.skip").Value.String() == "" && !testing.Short()
	if code == 0 && full && !skipped {
		if err := checkTable(); err != nil {
			fmt.Fprintln(os.Stderr, "FAIL:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var ipPoolGVK = schema.GroupVersionKind{Group: "whereabouts.cni.cncf.io", Version: "v1alpha1", Kind: "IPPoolList"}

// allocations lists every address Whereabouts holds for a container, as
// stored in its IPPools.
func allocations(ctx context.Context, t *testing.T, containerID string) []netip.Addr {
	t.Helper()
	pools := &unstructured.UnstructuredList{}
	pools.SetGroupVersionKind(ipPoolGVK)
	if err := env.Client.List(ctx, pools, client.InNamespace("kube-system")); err != nil {
		t.Fatalf("Listing IPPools: %v", err)
	}
	var addrs []netip.Addr
	for _, p := range pools.Items {
		r, _, _ := unstructured.NestedString(p.Object, "spec", "range")
		allocs, _, _ := unstructured.NestedMap(p.Object, "spec", "allocations")
		prefix, err := netip.ParsePrefix(r)
		if err != nil {
			t.Fatalf("IPPool %s has range %q: %v", p.GetName(), r, err)
		}
		for offset, a := range allocs {
			if m, _ := a.(map[string]any); m["id"] != containerID {
				continue
			}
			var n uint64
			if _, err := fmt.Sscan(offset, &n); err != nil {
				t.Fatalf("IPPool %s: offset %q: %v", p.GetName(), offset, err)
			}
			addrs = append(addrs, addOffset(prefix.Masked().Addr(), n))
		}
	}
	return addrs
}

func addOffset(a netip.Addr, n uint64) netip.Addr {
	for ; n > 0; n-- {
		a = a.Next()
	}
	return a
}

// apiServerIn makes the test API server reachable from inside a network
// namespace at 127.0.0.1 (where its certificate is valid): a listener
// opened in that namespace forwards to the API server in ours. It returns
// a kubeconfig that points there.
func apiServerIn(t *testing.T, ns string) string {
	t.Helper()
	target, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	lnc := make(chan net.Listener, 1)
	errc := make(chan error, 1)
	go func() {
		// This thread enters the namespace and is never unlocked, so Go
		// retires it when the goroutine ends instead of reusing it.
		runtime.LockOSThread()
		f, err := os.Open("/var/run/netns/" + ns)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		if err := unix.Setns(int(f.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("entering %s: %w", ns, err)
			return
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			errc <- err
			return
		}
		lnc <- ln
	}()
	var ln net.Listener
	select {
	case err := <-errc:
		t.Fatal(err)
	case ln = <-lnc:
	}
	t.Cleanup(func() { ln.Close() })
	testenv.Forward(ln, func() (net.Conn, error) { return net.Dial("tcp", target.Host) })
	cfg, err := clientcmd.LoadFromFile(env.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cfg.Clusters {
		c.Server = "https://" + ln.Addr().String()
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// withKubeconfig gives a config's Whereabouts IPAM the flat file that
// Whereabouts' DaemonSet installs on each node (Whereabouts refuses to run
// without one), naming the kubeconfig; it is found through
// configuration_path instead of the node's /etc/cni/net.d.
func withKubeconfig(t *testing.T, config []byte, kubeconfig string) []byte {
	t.Helper()
	flat := filepath.Join(filepath.Dir(kubeconfig), "whereabouts.conf")
	b, err := json.Marshal(map[string]any{"datastore": "kubernetes", "kubernetes": map[string]string{"kubeconfig": kubeconfig}})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(flat, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := forEachPlugin(config, func(p []byte) ([]byte, error) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(p, &m); err != nil {
			return nil, err
		}
		var ipam map[string]json.RawMessage
		if json.Unmarshal(m["ipam"], &ipam) != nil || string(ipam["type"]) != `"whereabouts"` {
			return p, nil
		}
		b, err := edit(m["ipam"], map[string]any{"configuration_path": flat})
		if err != nil {
			return nil, err
		}
		m["ipam"] = b
		return json.Marshal(m)
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// TestWhereabouts runs every Whereabouts config of the corpus and the
// examples through the bridge plugin with the real Whereabouts below it,
// against the test API server: the address comes from range, never from
// exclude, is stored in an IPPool, and DEL releases it.
func TestWhereabouts(t *testing.T) {
	needNetns(t)
	dir, err := cniDir()
	if err != nil {
		t.Fatal(err)
	}
	_, version, _ := pinned()
	t.Logf("Whereabouts %s from %s", version, dir)
	ctx := context.Background()
	seen := map[string]bool{}
	ran := 0
	for _, a := range attachments(t) {
		res := netconf.Normalize(a.config)
		brs := bridgePlugins(res.Config)
		if len(brs) != 1 || seen[string(res.Config)] {
			continue
		}
		var ipam map[string]json.RawMessage
		if json.Unmarshal(brs[0]["ipam"], &ipam) != nil || string(ipam["type"]) != `"whereabouts"` {
			continue
		}
		seen[string(res.Config)] = true
		ran++
		t.Run(a.origin+"/"+a.nad, func(t *testing.T) {
			if res.Changed {
				// Before: Multus or libcni stops it before Whereabouts runs.
				conf, err := multusConfig(a.config, a.nad)
				if err == nil {
					_, err = load(conf)
				}
				if err == nil {
					t.Fatalf("The %s form reached the plugins", res.Form)
				}
				record(t, consumerWhereabouts, formOf(res), before, "never called: Multus or libcni refuses first")
			}
			p := newPod(t)
			conf, err := multusConfig(res.Config, a.nad)
			if err != nil {
				t.Fatal(err)
			}
			run := forKernel(t, conf, false)
			for _, s := range run.notRun {
				t.Logf("NOT CHECKED: %s", s)
			}
			n, err := load(withKubeconfig(t, run.config, apiServerIn(t, p.host)))
			if err != nil {
				t.Fatal(err)
			}
			r := newRuntime(t, dir, p, "net1")
			if _, err := r.add(ctx, n); err != nil {
				t.Fatalf("ADD: %v", err)
			}
			var rng string
			var excludes []string
			_ = json.Unmarshal(ipam["range"], &rng)
			_ = json.Unmarshal(ipam["exclude"], &excludes)
			prefix := netip.MustParsePrefix(rng)
			got, err := addresses(p.sandbox, "net1")
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != 1 {
				t.Fatalf("net1 has addresses %v, want one from %s", got, rng)
			}
			addr := netip.MustParsePrefix(got[0])
			if !prefix.Contains(addr.Addr()) || addr.Bits() != prefix.Bits() {
				t.Errorf("net1 has %s, outside range %s", addr, rng)
			}
			for _, x := range excludes {
				if netip.MustParsePrefix(x).Contains(addr.Addr()) {
					t.Errorf("net1 has %s, inside exclude %s", addr, x)
				}
			}
			if held := allocations(ctx, t, r.rt.ContainerID); len(held) != 1 || held[0] != addr.Addr() {
				t.Errorf("IPPools hold %v for the pod, want %s", held, addr.Addr())
			}
			t.Logf("Whereabouts gave %s from %s (exclude %s)", addr, rng, strings.Join(excludes, ", "))
			if err := r.del(ctx, n); err != nil {
				t.Fatalf("DEL: %v", err)
			}
			if held := allocations(ctx, t, r.rt.ContainerID); len(held) != 0 {
				t.Errorf("DEL left %v allocated", held)
			}
			record(t, consumerWhereabouts, formOf(res), after, "address from range, released on DEL")
		})
	}
	if ran < 2 {
		t.Fatalf("Only %d Whereabouts configs found", ran)
	}
}
