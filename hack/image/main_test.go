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
				With            map[string]string
			}
		}
	}
	if err := yaml.Unmarshal(raw, &wf); err != nil {
		t.Fatal(err)
	}
	if wf.Permissions["id-token"] != "write" || wf.Permissions["attestations"] != "write" {
		t.Errorf("permissions %v: keyless signing needs id-token: write, provenance attestations: write", wf.Permissions)
	}
	var order []string
	for _, s := range wf.Jobs["release"].Steps {
		// A shell line mixing || and && runs what precedence says, not
		// what it reads as (apt || curl && chmod ran chmod after apt).
		for _, line := range strings.Split(s.Run, "\n") {
			if strings.Contains(line, "||") && strings.Contains(line, "&&") {
				t.Errorf("step %q mixes || and && on one line: %s", s.Name, strings.TrimSpace(line))
			}
		}
		switch {
		case strings.Contains(s.Run, "cosign sign-blob"):
			if !strings.Contains(s.Run, "for f in dist/release/*") || !strings.Contains(s.Run, `--new-bundle-format --bundle "$f.sigstore.json"`) {
				t.Errorf("the blob signing step does not sign every file of the release with a bundle beside it:\n%s", s.Run)
			}
			order = append(order, "sign files")
		case strings.HasPrefix(s.Uses, "actions/attest-build-provenance@"):
			switch {
			case strings.Contains(s.With["subject-path"], "dist/release/*"):
				order = append(order, "provenance of files")
			case s.With["subject-name"] == "ghcr.io/harvester/netconf-migrator" && s.With["push-to-registry"] == "true":
				order = append(order, "provenance of the image")
			case s.With["subject-name"] == "ghcr.io/harvester/charts/netconf-migrator" && s.With["push-to-registry"] == "true":
				order = append(order, "provenance of the chart")
			default:
				t.Errorf("a provenance step of nothing the release publishes: %v", s.With)
			}
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
	if want := []string{"push image", "push chart", "install cosign", "sign", "checksums", "sign files",
		"provenance of files", "provenance of the image", "provenance of the chart"}; !slices.Equal(order, want) {
		t.Errorf("release steps %v, want %v", order, want)
	}

	// The README says how to verify each kind of artifact, with the
	// identity the workflow signs as.
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"cosign verify ghcr.io/harvester/netconf-migrator@sha256:",
		"cosign verify ghcr.io/harvester/charts/netconf-migrator@sha256:",
		// An archive by the name make release-cli gives it.
		"cosign verify-blob kubectl-netconf_migrator_v", "--bundle kubectl-netconf_migrator_v", ".sigstore.json",
		"sha256sum -c SHA256SUMS",
		"gh attestation verify ",
		`/\.github/workflows/release\.yaml@refs/tags/v`,
		"https://token.actions.githubusercontent.com",
	} {
		if !strings.Contains(string(readme), want) {
			t.Errorf("the README's verification lacks %q", want)
		}
	}
}
