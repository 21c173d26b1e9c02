// Package version holds the build's version, set with -ldflags -X.
package version

import "runtime/debug"

// Version is set at build time: -ldflags "-X github.com/harvester/netconf-migrator/internal/version.Version=v1.2.3".
var Version = ""

// String returns the version, falling back to the module build info.
func String() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}
