package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The binary's module lists only what the binary and its suites need: the
// image builder, the chart renderer and the demo are the tooling module's
// (hack/go.mod), so a scanner of this module sees no Helm or registry
// client. Checked on what go.mod requires and on what the binary links.
func TestTheProductModuleHoldsNoTooling(t *testing.T) {
	tooling := []string{"helm.sh/", "github.com/google/go-containerregistry", "oras.land/", "github.com/docker/"}
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	deps, err := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{.Path}}{{end}}", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, m := range tooling {
		if strings.Contains(string(mod), m) {
			t.Errorf("go.mod requires %s: tooling belongs in hack/go.mod", m)
		}
		if strings.Contains(string(deps), m) {
			t.Errorf("the binary links %s", m)
		}
	}
}

// No shipped package imports the suites' support: the Harvester stand-ins
// (test/harvester) start controller-runtime managers and webhooks of their
// own, and envtest starts control planes. Checked on what the binary links.
func TestTheBinaryLinksNoTestSupport(t *testing.T) {
	deps, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, p := range strings.Fields(string(deps)) {
		if strings.HasPrefix(p, "github.com/harvester/netconf-migrator/test/") || strings.HasSuffix(p, "/envtest") || p == "testing" {
			t.Errorf("the binary links %s", p)
		}
	}
}
