package consumers

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/test/testenv"
)

// attachment is one NAD's config as a cluster may hold it.
type attachment struct {
	origin string // the corpus or the example file it comes from
	nad    string // the NAD's name, which Multus puts in a config without one
	config []byte
}

// attachments gathers every config of the corpus and of examples/.
func attachments(t *testing.T) []attachment {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(root, "apis", "netconf", "testdata", "netconf-corpus.json"))
	if err != nil {
		t.Fatal(err)
	}
	var corpus struct {
		Cases []struct{ Name, Config string }
	}
	if err := json.Unmarshal(raw, &corpus); err != nil {
		t.Fatalf("Decoding the corpus: %v", err)
	}
	var as []attachment
	for _, c := range corpus.Cases {
		as = append(as, attachment{origin: "corpus", nad: c.Name, config: []byte(c.Config)})
	}
	examples, err := filepath.Glob(filepath.Join(root, "examples", "*"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range examples {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, doc := range bytes.Split(raw, []byte("\n---")) {
			var obj struct {
				Kind     string
				Metadata struct{ Name string }
				Spec     struct{ Config string }
				Items    []struct {
					Kind     string
					Metadata struct{ Name string }
					Spec     struct{ Config string }
				}
			}
			if err := yaml.Unmarshal(doc, &obj); err != nil {
				t.Fatalf("Reading %s: %v", f, err)
			}
			if obj.Kind == "NetworkAttachmentDefinition" {
				as = append(as, attachment{origin: filepath.Base(f), nad: obj.Metadata.Name, config: []byte(obj.Spec.Config)})
			}
			for _, it := range obj.Items {
				if it.Kind == "NetworkAttachmentDefinition" {
					as = append(as, attachment{origin: filepath.Base(f), nad: it.Metadata.Name, config: []byte(it.Spec.Config)})
				}
			}
		}
	}
	return as
}

// formOf is the form a table row counts a config under: a list with a
// nested plugin is a nested config.
func formOf(res netconf.Result) netconf.Form {
	if res.Form == netconf.FormConflist && res.Changed {
		return netconf.FormNested
	}
	return res.Form
}

// bridgePlugins lists the bridge plugin configs in a flat config or list.
func bridgePlugins(config []byte) []map[string]json.RawMessage {
	var top map[string]json.RawMessage
	if json.Unmarshal(config, &top) != nil {
		return nil
	}
	var plugins []map[string]json.RawMessage
	if p, ok := top["plugins"]; ok {
		if json.Unmarshal(p, &plugins) != nil {
			return nil
		}
	} else {
		plugins = []map[string]json.RawMessage{top}
	}
	var bridges []map[string]json.RawMessage
	for _, p := range plugins {
		if string(p["type"]) == `"bridge"` {
			bridges = append(bridges, p)
		}
	}
	return bridges
}

// forEachPlugin rewrites each plugin of a config (the config itself when it
// is not a list) with fn.
func forEachPlugin(config []byte, fn func([]byte) ([]byte, error)) ([]byte, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(config, &top); err != nil {
		return nil, err
	}
	p, ok := top["plugins"]
	if !ok {
		return fn(config)
	}
	var plugins []json.RawMessage
	if err := json.Unmarshal(p, &plugins); err != nil {
		return nil, err
	}
	for i := range plugins {
		b, err := fn(plugins[i])
		if err != nil {
			return nil, err
		}
		plugins[i] = b
	}
	list, err := json.Marshal(plugins)
	if err != nil {
		return nil, err
	}
	top["plugins"] = list
	return json.Marshal(top)
}

// staticFor picks an address Whereabouts could hand out: in range, outside
// every exclude.
func staticFor(ipam map[string]json.RawMessage) (netip.Prefix, error) {
	var r string
	if err := json.Unmarshal(ipam["range"], &r); err != nil {
		return netip.Prefix{}, fmt.Errorf("reading ipam.range: %w", err)
	}
	prefix, err := netip.ParsePrefix(r)
	if err != nil {
		return netip.Prefix{}, err
	}
	var excludes []string
	_ = json.Unmarshal(ipam["exclude"], &excludes)
	for a := prefix.Masked().Addr().Next(); prefix.Contains(a); a = a.Next() {
		if !slices.ContainsFunc(excludes, func(x string) bool {
			p, err := netip.ParsePrefix(x)
			return err == nil && p.Contains(a)
		}) {
			return netip.PrefixFrom(a, prefix.Bits()), nil
		}
	}
	return netip.Prefix{}, fmt.Errorf("range %s has no address outside its excludes", r)
}

// kernelRun is a config as this machine's kernel can run it, and what was
// changed for that.
type kernelRun struct {
	config  []byte
	static  []string // addresses the static IPAM stands in for Whereabouts with
	notRun  []string // checks left out, said in the output
	vlanOff bool
}

func forKernel(t *testing.T, config []byte, ipamSwap bool) kernelRun {
	t.Helper()
	vlanOK, why := bridgeVLANFiltering(t)
	run := kernelRun{}
	out, err := forEachPlugin(config, func(p []byte) ([]byte, error) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(p, &m); err != nil {
			return nil, err
		}
		if string(m["type"]) != `"bridge"` {
			return p, nil
		}
		set := map[string]any{}
		var drop []string
		var ipam map[string]json.RawMessage
		_ = json.Unmarshal(m["ipam"], &ipam)
		if ipamSwap && string(ipam["type"]) == `"whereabouts"` {
			addr, err := staticFor(ipam)
			if err != nil {
				return nil, err
			}
			set["ipam"] = map[string]any{"type": "static", "addresses": []map[string]string{{"address": addr.String()}}}
			run.static = append(run.static, addr.String())
		}
		_, hasVLAN := m["vlan"]
		_, hasTrunk := m["vlanTrunk"]
		if (hasVLAN && string(m["vlan"]) != "0") || hasTrunk {
			if !vlanOK {
				drop = append(drop, "vlan", "vlanTrunk")
				run.vlanOff = true
				run.notRun = append(run.notRun, "VLAN on the port: "+why+"; ran with vlan and vlanTrunk removed")
			}
		}
		return edit(p, set, drop...)
	})
	if err != nil {
		t.Fatalf("Preparing the config for the kernel: %v", err)
	}
	run.config = out
	return run
}

// failingViolations are the warnings whose consumer (libcni, the bridge
// plugin, the kernel, Whereabouts) fails on the config; a missing bridge
// is not one of them: the plugin uses cni0.
func failingViolations(config []byte) []netconf.Violation {
	var vs []netconf.Violation
	for _, v := range netconf.Validate(config, netconf.ProfileGeneric) {
		if v.Rule != netconf.RuleBridgeName || !strings.Contains(v.Message, "cni0") {
			vs = append(vs, v)
		}
	}
	return vs
}

// TestBridgePlugin attaches every bridge config of the corpus and of
// examples/ to a pod with the real bridge plugin, through libcni as Multus
// calls a delegate, before and after normalization.
func TestBridgePlugin(t *testing.T) {
	needNetns(t)
	dir, err := cniDir()
	if err != nil {
		t.Fatal(err)
	}
	plugins, _, _ := pinned()
	t.Logf("CNI plugins %s from %s", plugins, dir)
	seen := map[string]bool{}
	ran := 0
	for _, a := range attachments(t) {
		res := netconf.Normalize(a.config)
		if len(bridgePlugins(res.Config)) == 0 || seen[string(a.config)] {
			continue // not a bridge network, or already run
		}
		seen[string(a.config)] = true
		ran++
		t.Run(a.origin+"/"+a.nad, func(t *testing.T) {
			t.Parallel()
			if res.Changed || res.Form == netconf.FormTruncated {
				t.Run("before", func(t *testing.T) { attachLegacy(t, dir, a, res) })
			}
			t.Run("after", func(t *testing.T) { attachNormalized(t, dir, a, res) })
		})
	}
	if ran < 10 {
		t.Fatalf("Only %d bridge configs found in the corpus and examples", ran)
	}
}

// attachLegacy shows what a legacy form does today: Multus or libcni
// refuses it, or the plugin attaches the pod to cni0.
func attachLegacy(t *testing.T, dir string, a attachment, res netconf.Result) {
	ctx := context.Background()
	refused := func(f netconf.Form, err error, want string) {
		t.Helper()
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("The %s config got past Multus and libcni (%v), want %q", f, err, want)
		}
		record(t, consumerMultus, f, before, "refused: "+want)
		record(t, consumerBridge, f, before, "never called")
	}
	conf, err := multusConfig(a.config, a.nad)
	if res.Form == netconf.FormDoubleEncoded {
		refused(res.Form, err, "failed to unmarshal Spec.Config")
		return
	}
	if err != nil {
		t.Fatalf("Multus refused the %s config: %v", res.Form, err)
	}
	n, err := load(conf)
	if res.Changed { // nested, alone or in a list
		refused(netconf.FormNested, err, "missing 'type'")
		return
	}
	if err != nil {
		t.Fatalf("libcni refused the %s config: %v", res.Form, err)
	}
	record(t, consumerMultus, res.Form, before, "loads")
	p := newPod(t)
	r := newRuntime(t, dir, p, "net1")
	if _, err := r.add(ctx, n); err != nil {
		t.Fatalf("ADD of the %s config: %v", res.Form, err)
	}
	br, ok, err := findLink(p.host, "cni0")
	if err != nil || !ok || br.LinkInfo.Kind != "bridge" {
		t.Fatalf("The %s config did not put the pod on cni0: %+v %v", res.Form, br, err)
	}
	if err := attachedTo(p, "cni0"); err != nil {
		t.Fatal(err)
	}
	t.Logf("The %s config attached the pod to cni0, the plugin's default, as it does today", res.Form)
	record(t, consumerBridge, res.Form, before, "attaches the pod to cni0")
	if err := r.del(ctx, n); err != nil {
		t.Errorf("DEL: %v", err)
	}
}

// attachNormalized runs the normalized config: ADD, the kernel state the
// config asks for, CHECK where the config's version has it, DEL.
func attachNormalized(t *testing.T, dir string, a attachment, res netconf.Result) {
	ctx := context.Background()
	conf, err := multusConfig(res.Config, a.nad)
	if err != nil {
		t.Fatalf("Multus refused the normalized config: %v", err)
	}
	n, err := load(conf)
	if err != nil {
		t.Fatalf("libcni refused the normalized config: %v", err)
	}
	record(t, consumerMultus, formOf(res), after, "loads")
	run := forKernel(t, conf, true)
	for _, s := range run.notRun {
		t.Logf("NOT CHECKED: %s", s)
	}
	if n, err = load(run.config); err != nil {
		t.Fatal(err)
	}
	p := newPod(t)
	r := newRuntime(t, dir, p, "net1")
	vs := failingViolations(res.Config)
	_, err = r.add(ctx, n)
	if len(vs) > 0 {
		// The validator warned: the real consumer must fail as it said.
		if err == nil {
			t.Fatalf("ADD succeeded, but the validator warned: %v", vs)
		}
		t.Logf("ADD failed as the warnings %v say: %v", vs, err)
		record(t, consumerBridge, formOf(res), after, "fails as warned")
		return
	}
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	for _, br := range bridgePlugins(run.config) {
		if _, named := br["bridge"]; !named {
			// Truncated: the bridge was lost before we saw the config, so
			// it is left as it is and reported; the plugin still uses cni0.
			if !slices.ContainsFunc(netconf.Validate(res.Config, netconf.ProfileGeneric), func(v netconf.Violation) bool {
				return v.Rule == netconf.RuleBridgeName && strings.Contains(v.Message, "cni0")
			}) {
				t.Errorf("No warning that the plugin would use cni0")
			}
			if err := attachedTo(p, "cni0"); err != nil {
				t.Fatal(err)
			}
			record(t, consumerBridge, res.Form, after, "left as is, warned: attaches to cni0")
			return
		}
		checkBridge(t, p, br, run)
	}
	if err := r.check(ctx, n); err != nil {
		if !strings.Contains(err.Error(), "does not support the CHECK command") {
			t.Errorf("CHECK: %v", err)
		} else {
			t.Logf("NOT CHECKED: CHECK, which cniVersion %s does not have", n.cniVersion())
		}
	}
	if err := r.del(ctx, n); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if _, ok, err := findLink(p.sandbox, "net1"); err != nil || ok {
		t.Errorf("DEL left net1 in the pod (%v)", err)
	}
	record(t, consumerBridge, formOf(res), after, "attaches to the named bridge")
}

// checkBridge looks at what ADD left in the kernel for one bridge plugin.
func checkBridge(t *testing.T, p pod, br map[string]json.RawMessage, run kernelRun) {
	t.Helper()
	var name string
	if err := json.Unmarshal(br["bridge"], &name); err != nil {
		t.Fatalf("The config names no bridge: %v", err)
	}
	l, ok, err := findLink(p.host, name)
	if err != nil || !ok || l.LinkInfo.Kind != "bridge" {
		t.Fatalf("Bridge %s not created on the node (%+v, %v)", name, l, err)
	}
	if _, ok, _ := findLink(p.host, "cni0"); ok {
		t.Errorf("cni0 was created beside %s", name)
	}
	if promisc := string(br["promiscMode"]) == "true"; l.has("PROMISC") != promisc {
		t.Errorf("Bridge %s flags %v, promiscMode %v", name, l.Flags, promisc)
	}
	if err := attachedTo(p, name); err != nil {
		t.Fatal(err)
	}
	c, _, err := findLink(p.sandbox, "net1")
	if err != nil {
		t.Fatal(err)
	}
	if m := string(br["mtu"]); m != "" && m != "0" && fmt.Sprint(c.MTU) != m {
		t.Errorf("net1 MTU %d, config %s", c.MTU, m)
	}
	if len(run.static) > 0 {
		as, err := addresses(p.sandbox, "net1")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(as, run.static[0]) {
			t.Errorf("net1 has %v, want %s", as, run.static[0])
		}
	}
	if run.vlanOff {
		return
	}
	port, err := portOf(p, name)
	if err != nil {
		t.Fatal(err)
	}
	vlans, pvid, err := portVLANs(p.host, port)
	if err != nil {
		t.Fatal(err)
	}
	if v := string(br["vlan"]); v != "" && v != "0" {
		if want, _ := strconv.Atoi(v); pvid != want {
			t.Errorf("Port %s has PVID %d, want the config's vlan %s", port, pvid, v)
		}
	}
	var trunk []struct{ ID, MinID, MaxID *int }
	_ = json.Unmarshal(br["vlanTrunk"], &trunk)
	for _, e := range trunk {
		lo, hi := 0, -1
		switch {
		case e.ID != nil:
			lo, hi = *e.ID, *e.ID
		case e.MinID != nil && e.MaxID != nil:
			lo, hi = *e.MinID, *e.MaxID
		}
		for id := lo; id <= hi; id++ {
			if !vlans[id] {
				t.Errorf("Port %s lacks trunk VLAN %d", port, id)
			}
		}
	}
}

// portOf is the node end of the pod's veth on bridge br.
func portOf(p pod, br string) (string, error) {
	ls, err := links(p.host)
	if err != nil {
		return "", err
	}
	for _, l := range ls {
		if l.Master == br && l.LinkInfo.Kind == "veth" {
			return l.Name, nil
		}
	}
	return "", fmt.Errorf("bridge %s has no veth port", br)
}

// portVLANs reads `bridge -j vlan show` for one port: the VLANs it
// carries and its PVID.
func portVLANs(ns, port string) (map[int]bool, int, error) {
	out, err := execIn(ns, "bridge", "-j", "vlan", "show", "dev", port)
	if err != nil {
		return nil, 0, err
	}
	var ports []struct {
		Ifname string `json:"ifname"`
		Vlans  []struct {
			Vlan    int      `json:"vlan"`
			VlanEnd int      `json:"vlanEnd"`
			Flags   []string `json:"flags"`
		} `json:"vlans"`
	}
	if err := json.Unmarshal(out, &ports); err != nil {
		return nil, 0, fmt.Errorf("reading bridge's VLANs of %s: %w: %s", port, err, out)
	}
	vlans, pvid := map[int]bool{}, 0
	for _, p := range ports {
		for _, v := range p.Vlans {
			end := max(v.VlanEnd, v.Vlan)
			for id := v.Vlan; id <= end; id++ {
				vlans[id] = true
			}
			if slices.Contains(v.Flags, "PVID") {
				pvid = v.Vlan
			}
		}
	}
	return vlans, pvid, nil
}

// attachedTo checks the pod's net1 is a veth whose node end is a port of br.
func attachedTo(p pod, br string) error {
	c, ok, err := findLink(p.sandbox, "net1")
	if err != nil {
		return err
	}
	if !ok || c.LinkInfo.Kind != "veth" {
		return fmt.Errorf("the pod has no veth net1 (%+v)", c)
	}
	ls, err := links(p.host)
	if err != nil {
		return err
	}
	var ports []string
	for _, l := range ls {
		if l.Master == br && l.LinkInfo.Kind == "veth" {
			ports = append(ports, l.Name)
		}
	}
	if len(ports) != 1 {
		return fmt.Errorf("bridge %s has veth ports %v, want the pod's one", br, ports)
	}
	return nil
}
