package netconf

import (
	"bytes"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
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

// Violation is one broken rule, naming the key and the value that break it.
type Violation struct {
	Rule    string `json:"rule"`
	Key     string `json:"key"`
	Value   string `json:"value,omitempty"`
	Message string `json:"message"`
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
)

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
	if v, ok := get("cniVersion"); ok && v[0] != '"' {
		vs = append(vs, Violation{Rule: RuleCNIVersion, Key: path + "cniVersion", Value: string(v), Message: "invalid cniVersion type: it must be a string"})
	}
	if v, ok := get("plugins"); ok && v[0] == '[' {
		for k, el := range parseElements(v, 0) {
			if e := v[el.start:el.end]; e[0] == '{' {
				vs = append(vs, validateObject(e, profile, path+"plugins["+strconv.Itoa(k)+"].")...)
			}
		}
		return vs
	}
	if v, ok := get("type"); !ok || string(v) != `"bridge"` {
		return vs
	}
	vs = append(vs, validateBridge(get, profile, path)...)
	return vs
}

func validateBridge(get func(string) ([]byte, bool), profile Profile, path string) []Violation {
	var vs []Violation
	add := func(rule, key string, val []byte, msg string) {
		vs = append(vs, Violation{Rule: rule, Key: path + key, Value: quoteClipped(val), Message: msg})
	}
	harvester := profile != ProfileGeneric

	// bridge
	if v, ok := get("bridge"); !ok {
		if harvester {
			add(RuleBridgeSuffix, "bridge", nil, "the suffix of the brName should be -br (bridge is missing, so the plugin would use cni0)")
		} else {
			add(RuleBridgeName, "bridge", nil, "bridge is missing, so the plugin would use cni0")
		}
	} else if name, isStr := str(v); !isStr || name == "" {
		add(RuleBridgeName, "bridge", v, "bridge must be a non-empty string")
	} else {
		if len(name) > 15 {
			add(RuleBridgeName, "bridge", v, "the length of the brName could not be more than 15")
		}
		if harvester && (!strings.HasSuffix(name, "-br") || len(name) <= 3) {
			add(RuleBridgeSuffix, "bridge", v, "the suffix of the brName should be -br")
		}
	}

	// vlan and vlanTrunk
	vlan := int64(0)
	if v, ok := get("vlan"); ok {
		n, isInt := integer(v)
		if !isInt || n < 0 || n > 4094 {
			add(RuleVLAN, "vlan", v, fmt.Sprintf("invalid VLAN ID %s (must be between 0 and 4094)", v))
		}
		vlan = n
	}
	if v, ok := get("vlanTrunk"); ok && !(v[0] == 'n') {
		vs = append(vs, validateTrunk(v, vlan, path)...)
	}

	// hairpin and promisc
	if h, ok := get("hairpinMode"); ok && string(h) == "true" {
		if p, ok := get("promiscMode"); ok && string(p) == "true" {
			add(RuleHairpinPromisc, "hairpinMode", h, "cannot set hairpin mode and promiscuous mode at the same time")
		}
	}

	// mtu
	if v, ok := get("mtu"); ok && harvester {
		if n, isInt := integer(v); !isInt {
			add(RuleMTU, "mtu", v, "mtu must be an integer")
		} else if n != 0 && (n < 576 || n > 9000) {
			add(RuleMTU, "mtu", v, "mtu must be 0 or between 576 and 9000 (Harvester: nad MTU does not match cluster network MTU)")
		}
	}

	// whereabouts ipam
	if ipam, ok := get("ipam"); ok && ipam[0] == '{' {
		vs = append(vs, validateWhereabouts(ipam, path)...)
	}
	return vs
}

func validateTrunk(v []byte, vlan int64, path string) []Violation {
	bad := func(val []byte, msg string) []Violation {
		return []Violation{{Rule: RuleVLANTrunk, Key: path + "vlanTrunk", Value: quoteClipped(val), Message: "incorrect trunk " + msg}}
	}
	if v[0] != '[' {
		return bad(v, "parameter: vlanTrunk must be a list")
	}
	var vs []Violation
	if vlan != 0 {
		vs = append(vs, Violation{Rule: RuleVLANTrunk, Key: path + "vlan", Value: strconv.FormatInt(vlan, 10),
			Message: "vlan must be 0 when vlanTrunk is set"})
	}
	inRange := func(b []byte) (int64, bool) {
		n, ok := integer(b)
		return n, ok && n >= 1 && n <= 4094
	}
	for _, el := range parseElements(v, 0) {
		e := v[el.start:el.end]
		if e[0] != '{' {
			vs = append(vs, bad(e, "parameter: each entry must be an object")...)
			continue
		}
		ms := parseMembers(e)
		idx, _, _ := index(ms)
		id, hasID := idx["id"]
		minI, hasMin := idx["minID"]
		maxI, hasMax := idx["maxID"]
		switch {
		case hasID:
			if _, ok := inRange(ms[id].Value); !ok {
				vs = append(vs, bad(e, "id parameter")...)
			}
		case hasMin && hasMax:
			lo, okLo := inRange(ms[minI].Value)
			hi, okHi := inRange(ms[maxI].Value)
			if !okLo {
				vs = append(vs, bad(e, "minID parameter")...)
			}
			if !okHi {
				vs = append(vs, bad(e, "maxID parameter")...)
			}
			if okLo && okHi && lo > hi {
				vs = append(vs, bad(e, "minID/maxID parameter: minID is greater than maxID")...)
			}
		default:
			vs = append(vs, bad(e, "parameter: each entry needs id, or both minID and maxID")...)
		}
	}
	return vs
}

func validateWhereabouts(ipam []byte, path string) []Violation {
	ms := parseMembers(ipam)
	idx, _, _ := index(ms)
	t, ok := idx["type"]
	if !ok || string(ms[t].Value) != `"whereabouts"` {
		return nil
	}
	var vs []Violation
	msg := "invalid CIDR (do you have the 'range' parameter set for Whereabouts?)"
	if r, ok := idx["range"]; !ok {
		vs = append(vs, Violation{Rule: RuleIPAMRange, Key: path + "ipam.range", Message: msg})
	} else if s, isStr := str(ms[r].Value); !isStr || !validRange(s) {
		vs = append(vs, Violation{Rule: RuleIPAMRange, Key: path + "ipam.range", Value: quoteClipped(ms[r].Value), Message: msg})
	}
	if x, ok := idx["exclude"]; ok && ms[x].Value[0] == '[' {
		ex := ms[x].Value
		for k, el := range parseElements(ex, 0) {
			e := ex[el.start:el.end]
			if s, isStr := str(e); !isStr || !validCIDR(s) {
				vs = append(vs, Violation{Rule: RuleIPAMRange, Key: path + "ipam.exclude[" + strconv.Itoa(k) + "]", Value: quoteClipped(e),
					Message: "invalid CIDR in exclude"})
			}
		}
	}
	return vs
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
	if v[0] != '"' {
		return "", false
	}
	s, ok := unquote(v)
	return s, ok
}

// integer reads a JSON integer. Consumers decode these keys into Go ints,
// which refuse 100.0 and 1e2, so those spellings are not integers here.
func integer(v []byte) (int64, bool) {
	n, err := strconv.ParseInt(string(v), 10, 64)
	return n, err == nil
}
