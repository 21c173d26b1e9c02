package imagebuild

import (
	"encoding/json"
	"io"
	"log"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/harvester/netconf-migrator/hack/sbom"
)

// The image's SBOMs reach the registry as OCI referrers of the image index
// (and of each platform's image), whether the registry serves the
// Referrers API or only the fallback tag, and each names every module the
// binary links as go version -m lists it. The registry is
// go-containerregistry's own, in process.
func TestTheImageSBOMsAreReferrersOfTheIndex(t *testing.T) {
	bin := amd64Binary(t)
	o := options(t, bin)
	idx, images, err := Build(o)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := sbom.Of(bin, testVersion)
	if err != nil {
		t.Fatal(err)
	}
	// The arm64 slot holds a stand-in, which has no module graph: it
	// carries the amd64 binary's SBOM, which is what the structure needs.
	sboms := map[string][]byte{"linux/amd64": doc, "linux/arm64": doc}
	artifacts, err := SBOMArtifacts(idx, images, sboms, o.Created)
	if err != nil {
		t.Fatal(err)
	}
	again, err := SBOMArtifacts(idx, images, sboms, o.Created)
	if err != nil {
		t.Fatal(err)
	}
	for i := range artifacts {
		if artifacts[i].digest != again[i].digest {
			t.Errorf("artifact %d: %s, then %s from the same inputs", i, artifacts[i].digest, again[i].digest)
		}
	}
	modules := linked(t, bin)

	for _, api := range []bool{true, false} {
		srv := httptest.NewServer(registry.New(registry.WithReferrersSupport(api), registry.Logger(log.New(io.Discard, "", 0))))
		repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://") + "/harvester/netconf-migrator")
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.WriteIndex(repo.Tag(testVersion), idx); err != nil {
			t.Fatal(err)
		}
		for _, a := range artifacts {
			if err := a.Push(repo); err != nil {
				t.Fatalf("referrers API %v: %v", api, err)
			}
		}
		subjects := map[string]v1.Hash{}
		d, _ := idx.Digest()
		subjects["index"] = d
		for plat, img := range images {
			d, _ := img.Digest()
			subjects[plat] = d
		}
		for subject, digest := range subjects {
			refs, err := remote.Referrers(repo.Digest(digest.String()))
			if err != nil {
				t.Fatalf("referrers API %v: the referrers of the %s: %v", api, subject, err)
			}
			m, err := refs.IndexManifest()
			if err != nil {
				t.Fatal(err)
			}
			platforms := map[string]bool{}
			for _, desc := range m.Manifests {
				// The descriptor's artifactType is the manifest's, or,
				// from registries that read only the config's media type
				// (go-containerregistry's own), the empty config's: the
				// manifest itself says.
				if desc.ArtifactType != string(CycloneDXType) && desc.ArtifactType != string(emptyConfig) {
					continue
				}
				if checkSBOM(t, repo, desc.Digest, modules) {
					platforms[desc.Annotations[PlatformAnnot]] = true
				}
			}
			want := 1
			if subject == "index" {
				want = len(images)
			}
			if len(platforms) != want || (subject != "index" && !platforms[subject]) {
				t.Errorf("referrers API %v: the %s has SBOMs for %v, want %d", api, subject, platforms, want)
			}
		}
		srv.Close()
	}
}

// linked lists module@version for every module go version -m names.
func linked(t *testing.T, bin string) []string {
	t.Helper()
	out, err := exec.Command("go", "version", "-m", bin).Output()
	if err != nil {
		t.Fatal(err)
	}
	var mods []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) >= 3 && (f[0] == "dep" || f[0] == "=>") {
			mods = append(mods, f[1]+"@"+f[2])
		}
	}
	if len(mods) < 20 {
		t.Fatalf("go version -m lists %d modules", len(mods))
	}
	return mods
}

// checkSBOM fetches the artifact at digest and, when it is an SBOM
// artifact, checks its one blob is a CycloneDX document naming every
// module.
func checkSBOM(t *testing.T, repo name.Repository, digest v1.Hash, modules []string) bool {
	t.Helper()
	desc, err := remote.Get(repo.Digest(digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	var m v1.Manifest
	if err := json.Unmarshal(desc.Manifest, &m); err != nil {
		t.Fatal(err)
	}
	if m.ArtifactType != string(CycloneDXType) {
		return false
	}
	if m.Config.MediaType != emptyConfig || len(m.Layers) != 1 || m.Layers[0].MediaType != CycloneDXType || m.Subject == nil {
		t.Fatalf("artifact %s: %s", digest, desc.Manifest)
	}
	l, err := remote.Layer(repo.Digest(m.Layers[0].Digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var doc struct {
		BOMFormat  string
		Components []struct{ Name, Version string }
	}
	if err := json.NewDecoder(rc).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, c := range doc.Components {
		have[c.Name+"@"+c.Version] = true
	}
	for _, mod := range modules {
		if !have[mod] {
			t.Errorf("the SBOM %s lacks %s, which the binary links", digest, mod)
		}
	}
	if doc.BOMFormat != "CycloneDX" {
		t.Errorf("the SBOM %s is %q, not CycloneDX", digest, doc.BOMFormat)
	}
	return true
}
