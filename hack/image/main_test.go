package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/layout"
	"sigs.k8s.io/yaml"

	"github.com/harvester/netconf-migrator/hack/imagebuild"
)

// make image leaves what the release signs and publishes beside the image:
// the index's digest (repository@sha256:..., never a tag) and each
// platform's SBOM.
func TestTheImageLeavesItsDigestAndSBOMs(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "netconf-migrator")
	cmd := exec.Command("go", "-C", filepath.Join("..", ".."), "build", "-o", bin, "./cmd/netconf-migrator")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=amd64")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out := t.TempDir()
	o := imagebuild.Options{Binaries: map[string]string{"linux/amd64": bin}, Repository: "ghcr.io/harvester/netconf-migrator",
		Version: "v0.0.0-test", Revision: "0123", Created: time.Unix(1764000000, 0).UTC()}
	if err := run(o, out, false); err != nil {
		t.Fatal(err)
	}
	p, err := layout.FromPath(filepath.Join(out, "oci-layout"))
	if err != nil {
		t.Fatal(err)
	}
	outer, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	m, err := outer.IndexManifest()
	if err != nil || len(m.Manifests) != 1 {
		t.Fatalf("the layout's index: %v, %+v", err, m)
	}
	digest, err := os.ReadFile(filepath.Join(out, "digest"))
	if want := "ghcr.io/harvester/netconf-migrator@" + m.Manifests[0].Digest.String() + "\n"; err != nil || string(digest) != want {
		t.Errorf("digest file %q (%v), want %q", digest, err, want)
	}
	// The tag an air-gapped install names (README: --set
	// image.tag=$(cat dist/image/tag)) is the one the archives carry: the
	// README once told git describe's, which is not the image's.
	tag, err := os.ReadFile(filepath.Join(out, "tag"))
	if carried := m.Manifests[0].Annotations["org.opencontainers.image.ref.name"]; err != nil || string(tag) != carried+"\n" || carried != o.Version {
		t.Errorf("tag file %q (%v); the layout carries %q, built as %q", tag, err, carried, o.Version)
	}
	var doc struct{ BOMFormat string }
	raw, err := os.ReadFile(filepath.Join(out, "netconf-migrator-linux-amd64.cdx.json"))
	if err != nil || json.Unmarshal(raw, &doc) != nil || doc.BOMFormat != "CycloneDX" {
		t.Errorf("the linux/amd64 SBOM: %v, %.100q", err, raw)
	}
}

// The release workflow may mint an OIDC token, installs cosign, signs the
// image index and the chart by the digests make image and make
// chart-package leave, after both are pushed, and publishes the image's
// SBOMs. Keyless signing itself needs GitHub's token, Fulcio and Rekor:
// it runs only on the forge.
func TestTheReleaseSignsWhatItPushes(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", ".github", "workflows", "release.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var wf struct {
		Permissions map[string]string
		Jobs        map[string]struct {
			Steps []struct {
				Name, Uses, Run string
			}
		}
	}
	if err := yaml.Unmarshal(raw, &wf); err != nil {
		t.Fatal(err)
	}
	if wf.Permissions["id-token"] != "write" {
		t.Errorf("permissions %v: keyless signing needs id-token: write", wf.Permissions)
	}
	var order []string
	for _, s := range wf.Jobs["release"].Steps {
		switch {
		case strings.Contains(s.Run, "make image IMAGE_PUSH=-push"):
			order = append(order, "push image")
		case strings.Contains(s.Run, "make chart-package CHART_PUSH="):
			order = append(order, "push chart")
		case strings.HasPrefix(s.Uses, "sigstore/cosign-installer@"):
			order = append(order, "install cosign")
		case strings.Contains(s.Run, "cosign sign"):
			for _, want := range []string{`cosign sign --yes "$(cat dist/image/digest)"`, `cosign sign --yes "$(cat dist/chart/digest)"`} {
				if !strings.Contains(s.Run, want) {
					t.Errorf("the signing step lacks %s", want)
				}
			}
			order = append(order, "sign")
		case strings.Contains(s.Run, "sha256sum"):
			if !strings.Contains(s.Run, "dist/image/*.cdx.json") {
				t.Error("the release does not publish the image's SBOMs")
			}
			order = append(order, "checksums")
		}
	}
	if want := []string{"push image", "push chart", "install cosign", "sign", "checksums"}; !slices.Equal(order, want) {
		t.Errorf("release steps %v, want %v", order, want)
	}
}
