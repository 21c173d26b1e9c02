// Package consumers runs normalized and legacy configs through the programs
// that read them on a node: libcni as Multus calls it, the bridge CNI
// plugin inside network namespaces, and Whereabouts against a real API
// server. The programs are built from their Go modules at the versions
// hack/setup-cni-plugins.sh pins; a missing program fails the suite.
package consumers

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/harvester/netconf-migrator/test/testenv"
)

// pinned reads the versions hack/setup-cni-plugins.sh builds, so the suite
// and the script cannot drift apart.
func pinned() (plugins, whereabouts string, err error) {
	root, err := testenv.RepoRoot()
	if err != nil {
		return "", "", err
	}
	script, err := os.ReadFile(filepath.Join(root, "hack", "setup-cni-plugins.sh"))
	if err != nil {
		return "", "", fmt.Errorf("reading the CNI build script: %w", err)
	}
	get := func(key string) string {
		m := regexp.MustCompile(`(?m)^` + key + `=(v[0-9.]+)$`).FindSubmatch(script)
		if m == nil {
			return ""
		}
		return string(m[1])
	}
	plugins, whereabouts = get("PLUGINS_VERSION"), get("WHEREABOUTS_VERSION")
	if plugins == "" || whereabouts == "" {
		return "", "", errors.New("hack/setup-cni-plugins.sh pins no PLUGINS_VERSION or WHEREABOUTS_VERSION")
	}
	return plugins, whereabouts, nil
}

// cniDir is where the programs are: NETCONF_MIGRATOR_CNI_PATH when set,
// else the cache the script fills.
func cniDir() (string, error) {
	plugins, whereabouts, err := pinned()
	if err != nil {
		return "", err
	}
	dir := os.Getenv("NETCONF_MIGRATOR_CNI_PATH")
	if dir == "" {
		cache, err := testenv.CacheDir()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(cache, "cni", "plugins-"+plugins+"-whereabouts-"+whereabouts)
	}
	for _, bin := range []string{"bridge", "tuning", "static", "host-local", "whereabouts"} {
		if _, err := os.Stat(filepath.Join(dir, bin)); err != nil {
			return "", fmt.Errorf("%s is missing from %s: run hack/setup-cni-plugins.sh (make test does) to build the CNI plugins %s and Whereabouts %s", bin, dir, plugins, whereabouts)
		}
	}
	return dir, nil
}

// needNetns fails the suite on CI when it cannot make network namespaces
// (CI runs as root), and says why it does not run elsewhere.
func needNetns(t *testing.T) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "creating network namespaces needs root"
	} else if _, err := exec.LookPath("ip"); err != nil {
		why = "iproute2's ip is not installed"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("The network-namespace suite must run on CI: %s", why)
	}
	skipped = true
	t.Skipf("NOT RUN: %s", why)
}

func ip(args ...string) ([]byte, error) {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("ip %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return out, nil
}

// pod is a pair of network namespaces: host stands in for the node (the
// bridge and the host end of the veth go there, so the machine's own
// namespace is never touched) and sandbox for the pod. Both go when the
// test ends, pass or fail, and every link in them with them.
type pod struct {
	host, sandbox string
}

func (p pod) sandboxPath() string { return "/var/run/netns/" + p.sandbox }

func newPod(t *testing.T) pod {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	p := pod{host: "ncm-" + id + "-h", sandbox: "ncm-" + id + "-c"}
	for _, ns := range []string{p.host, p.sandbox} {
		if _, err := ip("netns", "add", ns); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if _, err := ip("netns", "del", ns); err != nil {
				t.Errorf("Removing network namespace %s: %v", ns, err)
			}
		})
		if _, err := ip("-n", ns, "link", "set", "lo", "up"); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// nsExec runs every plugin (and the IPAM plugin it calls) inside the
// pod's host namespace; otherwise it is invoke.RawExec.
type nsExec struct{ ns string }

func (e nsExec) ExecPlugin(ctx context.Context, pluginPath string, stdin []byte, environ []string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", e.ns, pluginPath)
	cmd.Env = environ
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		// A plugin reports its error as a CNI error object on stdout.
		perr := &types.Error{}
		if json.Unmarshal(stdout.Bytes(), perr) == nil && perr.Msg != "" {
			return nil, perr
		}
		return nil, fmt.Errorf("%s: %w: %s", filepath.Base(pluginPath), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return stdout.Bytes(), nil
}

func (nsExec) FindInPath(plugin string, paths []string) (string, error) {
	return invoke.FindInPath(plugin, paths)
}

func (nsExec) Decode(b []byte) (version.PluginInfo, error) {
	return (&version.PluginDecoder{}).Decode(b)
}

// multusConfig is what Multus does to spec.config before it hands it to
// libcni: network-attachment-definition-client v1.7.7's
// GetCNIConfigFromSpec, which Multus calls (decode it into a map, and only
// when the config has no name, or an empty one, set the NAD's name and
// marshal the map again). The module itself runs here.
func multusConfig(config []byte, nadName string) ([]byte, error) {
	return nadutils.GetCNIConfigFromSpec(string(config), nadName)
}

// network is a config loaded by libcni as the form says: a config list
// when it has plugins, else a single plugin config.
type network struct {
	list   *libcni.NetworkConfigList
	single *libcni.PluginConfig
}

func (n network) name() string {
	if n.list != nil {
		return n.list.Name
	}
	return n.single.Network.Name
}

func (n network) cniVersion() string {
	if n.list != nil {
		return n.list.CNIVersion
	}
	return n.single.Network.CNIVersion
}

func load(config []byte) (network, error) {
	var top struct {
		Plugins json.RawMessage `json:"plugins"`
	}
	if err := json.Unmarshal(config, &top); err == nil && top.Plugins != nil {
		l, err := libcni.NetworkConfFromBytes(config)
		return network{list: l}, err
	}
	c, err := libcni.NetworkPluginConfFromBytes(config)
	return network{single: c}, err
}

// attach is the CNI side of one attachment in a pod.
type attach struct {
	cni *libcni.CNIConfig
	rt  *libcni.RuntimeConf
}

func newRuntime(t *testing.T, dir string, p pod, ifName string) attach {
	t.Helper()
	return attach{
		cni: libcni.NewCNIConfigWithCacheDir([]string{dir}, t.TempDir(), nsExec{ns: p.host}),
		rt: &libcni.RuntimeConf{
			ContainerID: p.sandbox,
			NetNS:       p.sandboxPath(),
			IfName:      ifName,
			// As Multus sets them: plugins that know no K8S_ args ignore them.
			Args: [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", "default"}, {"K8S_POD_NAME", p.sandbox}, {"K8S_POD_INFRA_CONTAINER_ID", p.sandbox}},
		},
	}
}

func (r attach) add(ctx context.Context, n network) (types.Result, error) {
	if n.list != nil {
		return r.cni.AddNetworkList(ctx, n.list, r.rt)
	}
	return r.cni.AddNetwork(ctx, n.single, r.rt)
}

func (r attach) check(ctx context.Context, n network) error {
	if n.list != nil {
		return r.cni.CheckNetworkList(ctx, n.list, r.rt)
	}
	return r.cni.CheckNetwork(ctx, n.single, r.rt)
}

func (r attach) del(ctx context.Context, n network) error {
	if n.list != nil {
		return r.cni.DelNetworkList(ctx, n.list, r.rt)
	}
	return r.cni.DelNetwork(ctx, n.single, r.rt)
}

// link is what `ip -d -j link show` says about one interface.
type link struct {
	Name     string   `json:"ifname"`
	Flags    []string `json:"flags"`
	MTU      int      `json:"mtu"`
	Master   string   `json:"master"`
	LinkInfo struct {
		Kind string `json:"info_kind"`
	} `json:"linkinfo"`
}

func (l link) has(flag string) bool {
	for _, f := range l.Flags {
		if f == flag {
			return true
		}
	}
	return false
}

func links(ns string) ([]link, error) {
	out, err := ip("-n", ns, "-d", "-j", "link", "show")
	if err != nil {
		return nil, err
	}
	var ls []link
	if err := json.Unmarshal(out, &ls); err != nil {
		return nil, fmt.Errorf("reading ip's links of %s: %w", ns, err)
	}
	return ls, nil
}

func findLink(ns, name string) (link, bool, error) {
	ls, err := links(ns)
	if err != nil {
		return link{}, false, err
	}
	for _, l := range ls {
		if l.Name == name {
			return l, true, nil
		}
	}
	return link{}, false, nil
}

func addresses(ns, dev string) ([]string, error) {
	out, err := ip("-n", ns, "-j", "addr", "show", "dev", dev)
	if err != nil {
		return nil, err
	}
	var ifs []struct {
		AddrInfo []struct {
			Family    string `json:"family"`
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal(out, &ifs); err != nil {
		return nil, err
	}
	var as []string
	for _, i := range ifs {
		for _, a := range i.AddrInfo {
			if a.Family == "inet" {
				as = append(as, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
			}
		}
	}
	return as, nil
}

var (
	vlanProbe     sync.Once
	vlanSupported bool
	vlanWhy       string
)

// bridgeVLANFiltering says whether this kernel can filter VLANs on a
// bridge, which the bridge plugin needs for vlan and vlanTrunk; it probes
// in a namespace of its own.
func bridgeVLANFiltering(t *testing.T) (bool, string) {
	vlanProbe.Do(func() {
		p := newPod(t)
		_, err := ip("-n", p.host, "link", "add", "name", "probe-br", "type", "bridge", "vlan_filtering", "1")
		vlanSupported = err == nil
		if err != nil {
			out, _ := exec.Command("uname", "-r").Output()
			vlanWhy = fmt.Sprintf("kernel %s has no bridge VLAN filtering (%v)", strings.TrimSpace(string(out)), err)
		}
	})
	return vlanSupported, vlanWhy
}

// edit changes top-level members of a config without touching the bytes
// of the others.
func edit(config []byte, set map[string]any, drop ...string) ([]byte, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(config, &members); err != nil {
		return nil, err
	}
	for _, k := range drop {
		delete(members, k)
	}
	for k, v := range set {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		members[k] = b
	}
	return json.Marshal(members)
}

// execIn runs a command inside a network namespace.
func execIn(ns string, name string, args ...string) ([]byte, error) {
	out, err := exec.Command("ip", append([]string{"netns", "exec", ns, name}, args...)...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %s in %s: %w: %s", name, strings.Join(args, " "), ns, err, bytes.TrimSpace(out))
	}
	return out, nil
}
