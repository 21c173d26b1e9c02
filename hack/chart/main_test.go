package main

import (
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// make chart-package with a push leaves the chart's digest
// (repository@sha256:..., never a tag) for the release to sign, and it is
// the digest the registry serves under the chart's version.
func TestThePushedChartLeavesItsDigest(t *testing.T) {
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	pkg := t.TempDir()
	if err := run(filepath.Join("..", "..", "config", "chart", "netconf-migrator"), "netconf-migrator-system", "", "", pkg, "oci://"+host+"/charts"); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(pkg, "digest"))
	if err != nil {
		t.Fatal(err)
	}
	d, err := name.NewDigest(strings.TrimSpace(string(raw)))
	if err != nil || d.Context().String() != host+"/charts/netconf-migrator" {
		t.Fatalf("digest file %q: %v", raw, err)
	}
	version, err := os.ReadFile(filepath.Join("..", "..", "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	desc, err := remote.Head(d.Context().Tag(strings.TrimSpace(string(version))))
	if err != nil || desc.Digest.String() != d.DigestStr() {
		t.Errorf("the registry serves %v (%v) under the chart's version, the digest file says %s", desc, err, d.DigestStr())
	}
}
