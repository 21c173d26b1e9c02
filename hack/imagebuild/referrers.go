package imagebuild

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types of an SBOM artifact (OCI image spec 1.1: an artifact is an
// image manifest whose artifactType says what it holds, with the empty
// config).
const (
	CycloneDXType types.MediaType = "application/vnd.cyclonedx+json"
	emptyConfig   types.MediaType = "application/vnd.oci.empty.v1+json"
	PlatformAnnot                 = "org.opencontainers.image.platform"
	titleAnnot                    = "org.opencontainers.image.title"
	createdAnnot                  = "org.opencontainers.image.created"
)

// Artifact is an OCI artifact manifest with one blob and a subject: what
// `oras discover`, `cosign tree`, Trivy and Grype find through the
// registry's Referrers API (or its fallback tag) from the subject's digest.
type Artifact struct {
	raw    []byte
	blobs  []v1.Layer
	digest v1.Hash
}

// RawManifest, MediaType and Digest make an Artifact something remote.Put
// writes.
func (a *Artifact) RawManifest() ([]byte, error)        { return a.raw, nil }
func (a *Artifact) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
func (a *Artifact) Digest() (v1.Hash, error)            { return a.digest, nil }

// SBOMArtifact wraps sbom (CycloneDX JSON) of the image for platform as an
// artifact whose subject is subject (the image index, or the platform's
// image), stamped with created.
func SBOMArtifact(subject v1.Descriptor, platform string, sbom []byte, created time.Time) (*Artifact, error) {
	cfg := static.NewLayer([]byte("{}"), emptyConfig)
	layer := static.NewLayer(sbom, CycloneDXType)
	cfgDesc, err := describe(cfg)
	if err != nil {
		return nil, err
	}
	cfgDesc.Data = []byte("{}")
	layerDesc, err := describe(layer)
	if err != nil {
		return nil, err
	}
	layerDesc.Annotations = map[string]string{titleAnnot: "netconf-migrator-" + platformFile(platform) + ".cdx.json"}
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  string(CycloneDXType),
		Config:        cfgDesc,
		Layers:        []v1.Descriptor{layerDesc},
		Subject:       &v1.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		Annotations:   map[string]string{PlatformAnnot: platform, createdAnnot: created.UTC().Format(time.RFC3339)},
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	d, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	return &Artifact{raw: raw, blobs: []v1.Layer{cfg, layer}, digest: d}, nil
}

// Push writes the artifact's blobs, then its manifest by digest, to repo.
// go-containerregistry registers it with the subject: the registry indexes
// it when it serves the Referrers API, else the fallback tag is updated.
func (a *Artifact) Push(repo name.Repository, options ...remote.Option) error {
	for _, b := range a.blobs {
		if err := remote.WriteLayer(repo, b, options...); err != nil {
			return fmt.Errorf("pushing a blob of the SBOM artifact %s: %w", a.digest, err)
		}
	}
	if err := remote.Put(repo.Digest(a.digest.String()), a, options...); err != nil {
		return fmt.Errorf("pushing the SBOM artifact %s: %w", a.digest, err)
	}
	return nil
}

// SBOMArtifacts are the SBOM artifacts of an image Build made: for each
// platform, one whose subject is the index (what a release names and signs)
// and one whose subject is the platform's image (what a scanner resolves
// when it pulls for its own platform).
func SBOMArtifacts(idx v1.ImageIndex, images map[string]v1.Image, sboms map[string][]byte, created time.Time) ([]*Artifact, error) {
	idxDesc, err := describe(idx)
	if err != nil {
		return nil, err
	}
	var out []*Artifact
	for _, plat := range sortedKeys(images) {
		doc, ok := sboms[plat]
		if !ok {
			return nil, fmt.Errorf("no SBOM for %s", plat)
		}
		imgDesc, err := describe(images[plat])
		if err != nil {
			return nil, err
		}
		for _, subject := range []v1.Descriptor{idxDesc, imgDesc} {
			a, err := SBOMArtifact(subject, plat, doc, created)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// describe is d's descriptor as go-containerregistry computes it (media
// type, digest, size), without the artifact type it adds for images: a
// subject and a blob carry only those three.
func describe(d partial.Describable) (v1.Descriptor, error) {
	desc, err := partial.Descriptor(d)
	if err != nil {
		return v1.Descriptor{}, err
	}
	return v1.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, nil
}

// platformFile is a platform as file names carry it: linux-amd64.
func platformFile(platform string) string { return strings.ReplaceAll(platform, "/", "-") }

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
