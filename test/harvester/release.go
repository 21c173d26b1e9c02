// Package harvester stands in for the parts of a Harvester cluster that
// judge NetworkAttachmentDefinition writes: the network controller's
// validating and mutating webhooks (harvester/network-controller-harvester,
// pkg/webhook/nad) and Harvester's own NAD validator (harvester/harvester,
// pkg/webhook/resources/networkattachmentdefinition), release by release.
//
// Every rule and message was read from the source at the tag its release
// names (Release.Tag); where the shared facts sheet and the source disagree,
// the source was followed. The stand-ins read real objects (ClusterNetwork,
// VlanConfig, VirtualMachine, VirtualMachineInstance, Setting) from the test
// API server through CRDs this package installs. It is test support: nothing
// shipped imports it.
package harvester

import (
	"fmt"
	"strconv"
	"strings"
)

// Release is a Harvester release line whose NAD webhooks behave alike.
type Release string

const (
	// V15 is Harvester v1.4.x - v1.5.x, which ship the network controller's
	// v0.5.x line.
	V15 Release = "v1.5"
	// V16 is Harvester v1.6.x.
	V16 Release = "v1.6"
	// V17 is Harvester v1.7.x: the mutator rewrites labels on every UPDATE.
	V17 Release = "v1.7"
	// V18 is Harvester v1.8.x: v1.7's network webhooks plus Harvester's own
	// refusal to delete a NAD a setting uses.
	V18 Release = "v1.8"
	// V19 is Harvester v1.9 (master): the "system network" rule.
	V19 Release = "v1.9"
)

// Releases are the release lines the suites run against, oldest first. V18
// differs from V17 in one DELETE rule that V19 has too, so the unit tables
// cover it and the end-to-end suites leave it out.
var Releases = []Release{V15, V16, V17, V19}

// Tag is the tag of harvester/network-controller-harvester the release's
// network webhooks were read from.
func (r Release) Tag() string {
	switch r {
	case V15:
		return "v0.5.6"
	case V16:
		return "v1.6.0"
	case V17:
		return "v1.7.0"
	case V18:
		return "v1.8.0"
	case V19:
		return "v1.9.0-rc6"
	}
	return "unknown"
}

// HarvesterTag is the tag of harvester/harvester whose NAD validator the
// release runs, or "" before v1.8 (no such validator).
func (r Release) HarvesterTag() string {
	if r.minor() >= 8 {
		if r == V18 {
			return "v1.8.0"
		}
		return "master (v1.9 development, same file as v1.8.0)"
	}
	return ""
}

func (r Release) minor() int {
	s, ok := strings.CutPrefix(string(r), "v1.")
	if !ok {
		panic(fmt.Sprintf("harvester: release %q is not v1.N", r))
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		panic(fmt.Sprintf("harvester: release %q is not v1.N", r))
	}
	return n
}

// AtLeast reports whether r is the release o or later.
func (r Release) AtLeast(o Release) bool { return r.minor() >= o.minor() }

// ParseRelease accepts v1.5 ... v1.9.
func ParseRelease(s string) (Release, error) {
	for _, r := range []Release{V15, V16, V17, V18, V19} {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown Harvester release %q (want v1.5, v1.6, v1.7, v1.8 or v1.9)", s)
}
