// Package chart holds the Helm chart, embedded, so that the binary can
// serve it as a Helm repository inside a cluster that reaches no registry
// (netconf-migrator chart-repo; Harvester's Addon installs from a repository
// URL, as its own add-ons do from its cluster repository).
package chart

import "embed"

// Files is the chart's directory, netconf-migrator/, as Helm packages it.
//
//go:embed all:netconf-migrator
var Files embed.FS

// Dir is the chart's directory in Files.
const Dir = "netconf-migrator"
