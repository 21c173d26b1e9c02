package netconf

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	hv "github.com/harvester/netconf-migrator/internal/harvester"
)

// Profile selects which consumers' rules Validate applies.
type Profile string

const (
	// ProfileGeneric applies the bridge CNI plugin's and whereabouts' own rules.
	ProfileGeneric Profile = "generic"
	// ProfileHarvester adds the rules of Harvester's network validator.
	ProfileHarvester Profile = "harvester"
)

// ParseProfile accepts the names of the profiles.
func ParseProfile(s string) (Profile, error) {
	switch p := Profile(s); p {
	case ProfileGeneric, ProfileHarvester:
		return p, nil
	}
	return "", fmt.Errorf("unknown validation profile %q (want %s or %s)", s, ProfileHarvester, ProfileGeneric)
}

// Violation is one broken rule, naming the key and the value that break it
// and the consumer that enforces the rule.
type Violation struct {
	Rule     string `json:"rule"`
	Key      string `json:"key"`
	Value    string `json:"value,omitempty"`
	Message  string `json:"message"`
	Consumer string `json:"consumer,omitempty"`
}

func (v Violation) String() string {
	if v.Value == "" {
		return fmt.Sprintf("%s: %s", v.Key, v.Message)
	}
	return fmt.Sprintf("%s=%s: %s", v.Key, v.Value, v.Message)
}

// Rule names, stable for reports and metrics.
const (
	RuleBridgeName     = "bridge-name"
	RuleBridgeSuffix   = "bridge-suffix"
	RuleVLAN           = "vlan"
	RuleVLANTrunk      = "vlan-trunk"
	RuleHairpinPromisc = "hairpin-promisc"
	RuleMTU            = "mtu"
	RuleIPAMRange      = "ipam-range"
	RuleCNIVersion     = "cni-version"
	RuleDuplicateKey   = "duplicate-key"
	RuleCNIName        = "cni-name"
	RuleCNIType        = "cni-type"
	RuleCNIPlugins     = "cni-plugins"
	RuleFieldType      = "field-type"
	RuleIPAMInterface  = "ipam-without-interface"
	RuleIPAMGateway    = "ipam-gateway"
)

// The consumers whose rules Validate knows, read from their source at the
// versions the consumer suite runs (test/consumers).
const (
	ConsumerLibcni      = "libcni"
	ConsumerBridge      = "bridge plugin"
	ConsumerKernel      = "kernel"
	ConsumerWhereabouts = "whereabouts"
	ConsumerHarvester   = "harvester"
)

// cniVersions are the spec versions libcni v1.3 and the reference plugins
// accept; a plugin refuses any other with "incompatible CNI versions".
var cniVersions = map[string]bool{"0.1.0": true, "0.2.0": true, "0.3.0": true, "0.3.1": true, "0.4.0": true, "1.0.0": true, "1.1.0": true}

// validNetworkName is libcni's rule for network names (utils.ValidateNetworkName).
func validNetworkName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '.' && c != '-') {
			return false
		}
	}
	return true
}

// validIfName is the kernel's rule for interface names (dev_valid_name).
func validIfName(s string) bool {
	if s == "" || len(s) > 15 || s == "." || s == ".." {
		return false
	}
	return !strings.ContainsAny(s, "/: \t\n\r\v\f")
}

// bridgeFieldKinds are the JSON kinds the bridge plugin's NetConf decodes
// (keys with their own rule are not here). Go's decoder refuses any other
// kind and the plugin fails with "failed to load netconf"; null is the zero
// value and passes. An integer is any number with an integer value: libcni
// re-encodes the config first, so 1500.0 reaches the plugin as 1500.
var bridgeFieldKinds = map[string]byte{
	"isGateway": 'b', "isDefaultGateway": 'b', "forceAddress": 'b', "ipMasq": 'b', "hairpinMode": 'b',
	"promiscMode": 'b', "preserveDefaultVlan": 'b', "macspoofchk": 'b', "enabledad": 'b',
	"disableContainerInterface": 'b', "portIsolation": 'b',
	"mtu": 'i', "ipMasqBackend": 's', "type": 's',
	"ipam": 'o', "dns": 'o', "args": 'o', "runtimeConfig": 'o', "capabilities": 'o',
}

// bridgeFieldOrder reports field-type violations in a stable order.
var bridgeFieldOrder = slices.Sorted(maps.Keys(bridgeFieldKinds))

var kindNames = map[byte]string{'b': "boolean", 'i': "integer", 's': "string", 'o': "object"}

func hasKind(v []byte, kind byte) bool {
	if string(v) == "null" {
		return true
	}
	switch kind {
	case 'b':
		return string(v) == "true" || string(v) == "false"
	case 'i':
		return integral(v)
	case 's':
		return v[0] == '"'
	case 'o':
		return v[0] == '{'
	}
	return false
}

// Validate checks a flat config (or each plugin of a conflist) against the
// rules its consumers enforce and returns every violation. Configs of other
// types than bridge are only checked for the CNI base rules. A config that is
// not a JSON object yields no violations: Normalize reports those.
func Validate(config []byte, profile Profile) []Violation {
	s := skipSpace(config, 0)
	if s == len(config) || config[s] != '{' || validDocument(config).kind != errNone {
		return nil
	}
	return validateObject(config[s:], profile, "")
}

func validateObject(obj []byte, profile Profile, path string) []Violation {
	var vs []Violation
	ms := parseMembers(bytes.TrimRight(obj, " \t\r\n"))
	idx, dup, hasDup := index(ms)
	if hasDup {
		vs = append(vs, Violation{Rule: RuleDuplicateKey, Key: path + dup,
			Message: "the key appears twice; decoders disagree on which value wins"})
	}
	get := func(k string) ([]byte, bool) {
		if i, ok := idx[k]; ok {
			return ms[i].Value, true
		}
		return nil, false
	}
	if v, ok := get("cniVersion"); ok && v[0] != '"' && string(v) != "null" {
		vs = append(vs, Violation{Rule: RuleCNIVersion, Key: path + "cniVersion", Value: string(v), Consumer: ConsumerLibcni,
			Message: "invalid cniVersion type: it must be a string"})
	} else if s, _ := str(v); ok && s != "" && !cniVersions[s] {
		vs = append(vs, Violation{Rule: RuleCNIVersion, Key: path + "cniVersion", Value: quoteClipped(v), Consumer: ConsumerLibcni,
			Message: "incompatible CNI versions: the plugins know 0.1.0 to 1.1.0"})
	}
	// Multus fills in a missing or empty name from the NAD's; one that is
	// there must suit libcni, which refuses to run the network otherwise.
	if v, ok := get("name"); ok && path == "" {
		if s, isStr := str(v); !isStr && string(v) != "null" {
			vs = append(vs, Violation{Rule: RuleCNIName, Key: "name", Value: quoteClipped(v), Consumer: ConsumerLibcni, Message: "name must be a string"})
		} else if s != "" && !validNetworkName(s) {
			vs = append(vs, Violation{Rule: RuleCNIName, Key: "name", Value: quoteClipped(v), Consumer: ConsumerLibcni,
				Message: "invalid characters found in network name (libcni takes letters, digits, '_', '.' and '-', starting with a letter or digit)"})
		}
	}
	if v, ok := get("plugins"); ok && path == "" {
		if profile != ProfileGeneric {
			vs = append(vs, Violation{Rule: RuleBridgeSuffix, Key: "bridge", Consumer: ConsumerHarvester,
				Message: hv.MsgConfListNoBridge})
		}
		els := parseElements(v, 0)
		if v[0] != '[' || len(els) == 0 {
			vs = append(vs, Violation{Rule: RuleCNIPlugins, Key: "plugins", Value: quoteClipped(v), Consumer: ConsumerLibcni,
				Message: "error parsing configuration list: plugins must be a non-empty list"})
			return vs
		}
		for k, el := range els {
			if e := v[el.start:el.end]; e[0] == '{' {
				vs = append(vs, validateObject(e, profile, path+"plugins["+strconv.Itoa(k)+"].")...)
			} else {
				vs = append(vs, Violation{Rule: RuleCNIPlugins, Key: "plugins[" + strconv.Itoa(k) + "]", Value: quoteClipped(e), Consumer: ConsumerLibcni,
					Message: "each plugin must be an object"})
			}
		}
		return vs
	}
	v, ok := get("type")
	if t, isStr := str(v); !ok || !isStr || t == "" {
		vs = append(vs, Violation{Rule: RuleCNIType, Key: path + "type", Value: quoteClipped(v), Consumer: ConsumerLibcni,
			Message: "missing 'type': libcni cannot tell which plugin to run"})
		return vs
	}
	if string(v) != `"bridge"` {
		return vs
	}
	vs = append(vs, validateBridge(get, profile, path)...)
	return vs
}

func validateBridge(get func(string) ([]byte, bool), profile Profile, path string) []Violation {
	var vs []Violation
	add := func(rule, consumer, key string, val []byte, msg string) {
		vs = append(vs, Violation{Rule: rule, Key: path + key, Value: quoteClipped(val), Message: msg, Consumer: consumer})
	}
	harvester := profile != ProfileGeneric

	for _, k := range bridgeFieldOrder {
		if v, ok := get(k); ok && !hasKind(v, bridgeFieldKinds[k]) {
			add(RuleFieldType, ConsumerBridge, k, v, fmt.Sprintf("%s must be a JSON %s: the bridge plugin fails to load the config", k, kindNames[bridgeFieldKinds[k]]))
		}
	}

	// bridge
	if v, ok := get("bridge"); !ok {
		if harvester {
			add(RuleBridgeSuffix, ConsumerHarvester, "bridge", nil, hv.MsgBridgeMissingSuffix)
		} else {
			add(RuleBridgeName, ConsumerBridge, "bridge", nil, "bridge is missing, so the plugin would use cni0")
		}
	} else if name, isStr := str(v); !isStr || name == "" {
		add(RuleBridgeName, ConsumerBridge, "bridge", v, "bridge must be a non-empty string")
	} else {
		if len(name) > hv.MaxBridgeNameLength {
			if harvester {
				add(RuleBridgeName, ConsumerHarvester, "bridge", v, hv.MsgBridgeLength)
			} else {
				add(RuleBridgeName, ConsumerKernel, "bridge", v, "the kernel refuses interface names longer than 15 bytes")
			}
		} else if !validIfName(name) {
			add(RuleBridgeName, ConsumerKernel, "bridge", v, "the kernel refuses interface names with '/', ':' or white space, and . or ..")
		}
		if harvester && !hv.BridgeNameOK(name) {
			add(RuleBridgeSuffix, ConsumerHarvester, "bridge", v, hv.MsgBridgeSuffix)
		}
	}

	// vlan and vlanTrunk. Harvester decodes the stored bytes, so 100.0 is
	// not a VLAN ID there; the plugin gets it through libcni as 100.
	vlan := int64(0)
	if v, ok := get("vlan"); ok && string(v) != "null" {
		f, _ := strconv.ParseFloat(string(v), 64)
		_, isInt := integer(v)
		switch {
		case !integral(v) || f < 0 || f > 4094:
			add(RuleVLAN, ConsumerBridge, "vlan", v, fmt.Sprintf("invalid VLAN ID %s (must be between 0 and 4094)", v))
		case !isInt && harvester:
			add(RuleVLAN, ConsumerHarvester, "vlan", v, hv.MsgVLANNotInteger)
		}
		vlan = int64(f)
	}
	if v, ok := get("vlanTrunk"); ok && string(v) != "null" {
		vs = append(vs, validateTrunk(v, vlan, harvester, path)...)
	}

	// hairpin and promisc
	if h, ok := get("hairpinMode"); ok && string(h) == "true" {
		if p, ok := get("promiscMode"); ok && string(p) == "true" {
			add(RuleHairpinPromisc, ConsumerBridge, "hairpinMode", h, "cannot set hairpin mode and promiscuous mode at the same time")
		}
	}

	// mtu: its kind is a field-type rule; Harvester decodes the stored
	// bytes (1500.0 fails there) and bounds the value.
	if v, ok := get("mtu"); ok && harvester {
		if n, isInt := integer(v); !isInt && integral(v) {
			add(RuleMTU, ConsumerHarvester, "mtu", v, hv.MsgMTUNotInteger)
		} else if isInt && !hv.MTUOK(n) {
			add(RuleMTU, ConsumerHarvester, "mtu", v, hv.MsgMTURange)
		}
	}

	if ipam, ok := get("ipam"); ok && ipam[0] == '{' {
		ms := parseMembers(ipam)
		idx, _, _ := index(ms)
		var ipamType []byte
		if t, ok := idx["type"]; ok {
			ipamType = ms[t].Value
		}
		if d, ok := get("disableContainerInterface"); ok && string(d) == "true" {
			if s, _ := str(ipamType); s != "" {
				add(RuleIPAMInterface, ConsumerBridge, "disableContainerInterface", d, "cannot use IPAM when DisableContainerInterface flag is set")
			}
		}
		if string(ipamType) == `"whereabouts"` {
			vs = append(vs, validateWhereabouts(ms, idx, path)...)
		}
	}
	return vs
}

// validateTrunk follows the bridge plugin's collectVlanTrunk; an entry with
// none of id, minID and maxID is ignored there and refused by Harvester,
// which also wants vlan 0 beside a trunk.
func validateTrunk(v []byte, vlan int64, harvester bool, path string) []Violation {
	bad := func(val []byte, consumer, msg string) []Violation {
		return []Violation{{Rule: RuleVLANTrunk, Key: path + "vlanTrunk", Value: quoteClipped(val), Message: msg, Consumer: consumer}}
	}
	if v[0] != '[' {
		return bad(v, ConsumerBridge, "vlanTrunk must be a list: the bridge plugin fails to load the config")
	}
	var vs []Violation
	if vlan != 0 && harvester {
		vs = append(vs, Violation{Rule: RuleVLANTrunk, Key: path + "vlan", Value: strconv.FormatInt(vlan, 10), Consumer: ConsumerHarvester,
			Message: hv.MsgTrunkWithVLAN})
	}
	inRange := func(b []byte) (int64, bool) {
		n, ok := integer(b)
		return n, ok && n >= 1 && n <= 4094
	}
	for _, el := range parseElements(v, 0) {
		e := v[el.start:el.end]
		if e[0] != '{' {
			vs = append(vs, bad(e, ConsumerBridge, "each vlanTrunk entry must be an object: the bridge plugin fails to load the config")...)
			continue
		}
		ms := parseMembers(e)
		idx, _, _ := index(ms)
		id, hasID := idx["id"]
		minI, hasMin := idx["minID"]
		maxI, hasMax := idx["maxID"]
		switch {
		case hasMin && hasMax:
			lo, okLo := inRange(ms[minI].Value)
			hi, okHi := inRange(ms[maxI].Value)
			if !okLo {
				vs = append(vs, bad(e, ConsumerBridge, "incorrect trunk minID parameter")...)
			} else if !okHi {
				vs = append(vs, bad(e, ConsumerBridge, "incorrect trunk maxID parameter")...)
			} else if lo > hi {
				vs = append(vs, bad(e, ConsumerBridge, "minID is greater than maxID in trunk parameter")...)
			}
		case hasMax:
			vs = append(vs, bad(e, ConsumerBridge, "minID and maxID should be configured simultaneously, minID is missing")...)
		case hasMin:
			vs = append(vs, bad(e, ConsumerBridge, "minID and maxID should be configured simultaneously, maxID is missing")...)
		case !hasID && harvester:
			vs = append(vs, bad(e, ConsumerHarvester, hv.MsgTrunkEntryEmpty)...)
		}
		if hasID {
			if _, ok := inRange(ms[id].Value); !ok {
				vs = append(vs, bad(e, ConsumerBridge, "incorrect trunk id parameter")...)
			}
		}
	}
	return vs
}

// validateWhereabouts follows whereabouts' LoadIPAMConfig and its
// allocator's reading of exclude.
func validateWhereabouts(ms []Member, idx map[string]int, path string) []Violation {
	var vs []Violation
	add := func(rule, key string, val []byte, msg string) {
		vs = append(vs, Violation{Rule: rule, Key: path + key, Value: quoteClipped(val), Message: msg, Consumer: ConsumerWhereabouts})
	}
	msg := "invalid CIDR (do you have the 'range' parameter set for Whereabouts?)"
	if r, ok := idx["range"]; !ok {
		add(RuleIPAMRange, "ipam.range", nil, msg)
	} else if s, isStr := str(ms[r].Value); !isStr || !validRange(s) {
		add(RuleIPAMRange, "ipam.range", ms[r].Value, msg)
	} else if first, cidr, dash := strings.Cut(s, "-"); dash {
		a, _ := netip.ParseAddr(first)
		if p, _ := netip.ParsePrefix(cidr); !p.Masked().Contains(a) {
			add(RuleIPAMRange, "ipam.range", ms[r].Value, "invalid range start for CIDR")
		}
	}
	for _, k := range []string{"range_start", "range_end"} {
		if r, ok := idx[k]; ok {
			if s, isStr := str(ms[r].Value); !isStr || !validAddr(s) {
				add(RuleIPAMRange, "ipam."+k, ms[r].Value, "not an IP address: whereabouts ignores it and allocates from the whole range")
			}
		}
	}
	if x, ok := idx["exclude"]; ok && ms[x].Value[0] == '[' {
		ex := ms[x].Value
		for k, el := range parseElements(ex, 0) {
			e := ex[el.start:el.end]
			if s, isStr := str(e); !isStr || !validCIDR(s) {
				add(RuleIPAMRange, "ipam.exclude["+strconv.Itoa(k)+"]", e, "could not parse exclude range: every allocation fails")
			}
		}
	}
	if g, ok := idx["gateway"]; ok {
		if s, isStr := str(ms[g].Value); !isStr || !validAddr(s) {
			add(RuleIPAMGateway, "ipam.gateway", ms[g].Value, "couldn't parse gateway IP")
		}
	}
	return vs
}

func validAddr(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

func validCIDR(s string) bool {
	_, err := netip.ParsePrefix(s)
	return err == nil
}

// validRange accepts a CIDR, or whereabouts' "first-last/prefix" form.
func validRange(s string) bool {
	if first, rest, found := strings.Cut(s, "-"); found {
		_, err := netip.ParseAddr(first)
		return err == nil && validCIDR(rest)
	}
	return validCIDR(s)
}

func str(v []byte) (string, bool) {
	if len(v) == 0 || v[0] != '"' {
		return "", false
	}
	s, ok := unquote(v)
	return s, ok
}

// integral reports whether a JSON number has an integer value. libcni
// re-encodes every config through a map before a plugin reads it (to set
// name and cniVersion), so 1500.0 and 1e3 reach the plugin as 1500 and
// 1000: only a fraction or a non-number breaks it.
func integral(v []byte) bool {
	f, err := strconv.ParseFloat(string(v), 64)
	return err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<53
}

// integer reads a JSON integer. Consumers decode these keys into Go ints,
// which refuse 100.0 and 1e2, so those spellings are not integers here.
func integer(v []byte) (int64, bool) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}
