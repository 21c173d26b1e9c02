// Package imagebuild assembles netconf-migrator's container image from
// binaries already built, with go-containerregistry: no Docker engine, no
// base image to download. Each platform's image is one layer holding the
// static binary and an /etc/passwd naming the numeric non-root user it
// runs as; the platforms form an OCI image index. Every timestamp comes
// from Options.Created and every archive is written in a fixed order, so
// the same binaries and options give the same digests.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// What the image runs and as whom.
const (
	Entrypoint = "/netconf-migrator"
	// UID and GID are numeric, so a Pod's runAsNonRoot can check them
	// without an /etc/passwd lookup.
	UID = 65532
	GID = 65532
)

// Options say what goes into the image.
type Options struct {
	// Binaries maps a platform ("linux/amd64", "linux/arm64") to the path
	// of the static binary built for it.
	Binaries map[string]string
	// Repository is the image's name without a tag,
	// e.g. ghcr.io/harvester/netconf-migrator.
	Repository string
	// Version (git describe) tags the image; Revision is the commit.
	Version, Revision string
	// Created is every timestamp in the image: the commit's time makes a
	// build reproducible.
	Created time.Time
	// Source is the repository URL, for the source label.
	Source string
}

// Ref is the image's reference: Repository:Version.
func (o Options) Ref() (name.Tag, error) {
	tag, err := name.NewTag(o.Repository + ":" + o.Version)
	if err != nil {
		return name.Tag{}, fmt.Errorf("image reference %s:%s: %w", o.Repository, o.Version, err)
	}
	return tag, nil
}

func (o Options) labels() map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "netconf-migrator",
		"org.opencontainers.image.description": "Keeps CNI NetConf payloads in NetworkAttachmentDefinitions in the flat form: admission webhook, migration job, offline conversion",
		"org.opencontainers.image.version":     o.Version,
		"org.opencontainers.image.revision":    o.Revision,
		"org.opencontainers.image.created":     o.Created.UTC().Format(time.RFC3339),
		"org.opencontainers.image.source":      o.Source,
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
}

// Build returns the image index with one image per platform.
func Build(o Options) (v1.ImageIndex, map[string]v1.Image, error) {
	if len(o.Binaries) == 0 {
		return nil, nil, fmt.Errorf("no binaries to put in the image")
	}
	platforms := make([]string, 0, len(o.Binaries))
	for p := range o.Binaries {
		platforms = append(platforms, p)
	}
	sort.Strings(platforms)
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	idx = mutate.Annotations(idx, o.labels()).(v1.ImageIndex)
	images := map[string]v1.Image{}
	for _, p := range platforms {
		plat, err := v1.ParsePlatform(p)
		if err != nil {
			return nil, nil, fmt.Errorf("platform %q: %w", p, err)
		}
		if plat.Architecture == "arm64" && plat.Variant == "" {
			plat.Variant = "v8"
		}
		img, err := platformImage(o, *plat, o.Binaries[p])
		if err != nil {
			return nil, nil, fmt.Errorf("image for %s: %w", p, err)
		}
		images[p] = img
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: plat}})
	}
	return idx, images, nil
}

func platformImage(o Options, plat v1.Platform, binary string) (v1.Image, error) {
	bin, err := os.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	layerTar, err := rootfs(o.Created, bin)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(layerTar)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created: v1.Time{Time: o.Created}, CreatedBy: "netconf-migrator imagebuild: " + Entrypoint + " and /etc/passwd", Comment: "static binary, no base image",
	}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = plat.OS, plat.Architecture, plat.Variant
	cf.Created = v1.Time{Time: o.Created}
	cf.Config = v1.Config{
		Entrypoint: []string{Entrypoint},
		User:       fmt.Sprintf("%d:%d", UID, GID),
		WorkingDir: "/",
		Labels:     o.labels(),
	}
	return mutate.ConfigFile(img, cf)
}

// rootfs is the layer: the binary and the user it runs as, with fixed
// owners, modes and times.
func rootfs(created time.Time, bin []byte) ([]byte, error) {
	passwd := fmt.Sprintf("root:x:0:0:root:/:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", UID, GID)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", GID)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range []struct {
		name string
		mode int64
		dir  bool
		data []byte
	}{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, dir: true},
		{name: strings.TrimPrefix(Entrypoint, "/"), mode: 0o755, data: bin},
		{name: "tmp/", mode: 0o1777, dir: true},
	} {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: created, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		if e.dir {
			h.Typeflag, h.Size = tar.TypeDir, 0
		}
		if e.name == "home/nonroot/" {
			h.Uid, h.Gid = UID, GID
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteLayout writes idx as an OCI image layout in dir, its one entry
// named ref so that `ctr images import` (and Harvester's air-gap image
// import) know what to call it.
func WriteLayout(dir string, idx v1.ImageIndex, ref name.Tag) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return fmt.Errorf("writing the OCI layout %s: %w", dir, err)
	}
	return p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref.TagStr(),
		"io.containerd.image.name":          ref.Name(),
	}))
}

// WriteArchive tars an OCI layout directory into path, entries sorted and
// stamped with created, for `ctr images import` and Harvester's air-gap
// image import.
func WriteArchive(path, dir string, created time.Time) error {
	var files []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	sort.Strings(files)
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, p := range files {
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		h := &tar.Header{Name: filepath.ToSlash(rel), ModTime: created, Mode: 0o644, Format: tar.FormatPAX, Typeflag: tar.TypeReg, Size: fi.Size()}
		if fi.IsDir() {
			h.Name, h.Mode, h.Typeflag, h.Size = h.Name+"/", 0o755, tar.TypeDir, 0
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.IsDir() {
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if _, err := tw.Write(data); err != nil {
				return err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return f.Close()
}

// WriteDockerArchive writes one platform's image as a `docker load`
// tarball tagged ref.
func WriteDockerArchive(path string, img v1.Image, ref name.Tag) error {
	return tarball.WriteToFile(path, ref, img)
}
