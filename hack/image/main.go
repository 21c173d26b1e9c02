// Command image assembles netconf-migrator's OCI image index from binaries
// `make image` built, and writes it as an OCI layout, an OCI archive (for
// `ctr images import` and Harvester's air-gap image import), one
// `docker load` archive per platform, the CycloneDX SBOM of each
// platform's binary, the index's digest (for the release to sign), and,
// with -push, all of it to a registry, the SBOMs as OCI referrers of the
// index and of each platform's image.
//
//	go -C hack run ./image -bin linux/amd64=$PWD/bin/linux-amd64/netconf-migrator -bin linux/arm64=... \
//	    -version v0.1.0 -revision abc123 -created 1764000000 -out $PWD/dist/image
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/harvester/netconf-migrator/hack/imagebuild"
	"github.com/harvester/netconf-migrator/hack/sbom"
)

type binFlags map[string]string

func (b binFlags) String() string { return fmt.Sprint(map[string]string(b)) }
func (b binFlags) Set(v string) error {
	plat, path, ok := strings.Cut(v, "=")
	if !ok {
		return fmt.Errorf("%q is not PLATFORM=PATH", v)
	}
	b[plat] = path
	return nil
}

func main() {
	bins := binFlags{}
	o := imagebuild.Options{}
	var created int64
	var out string
	var push bool
	flag.Var(bins, "bin", "PLATFORM=PATH of a static binary (repeat per platform)")
	flag.StringVar(&o.Repository, "repository", "ghcr.io/harvester/netconf-migrator", "image name without a tag")
	flag.StringVar(&o.Version, "version", "", "image tag and version label (git describe)")
	flag.StringVar(&o.Revision, "revision", "", "commit")
	flag.StringVar(&o.Source, "source", "https://github.com/harvester/netconf-migrator", "source label")
	flag.Int64Var(&created, "created", 0, "creation time in Unix seconds (the commit's, for a reproducible build)")
	flag.StringVar(&out, "out", "dist/image", "output directory")
	flag.BoolVar(&push, "push", false, "also push the index to the repository (credentials from the Docker config)")
	flag.Parse()
	o.Binaries = bins
	o.Created = time.Unix(created, 0).UTC()
	if err := run(o, out, push); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(o imagebuild.Options, out string, push bool) error {
	ref, err := o.Ref()
	if err != nil {
		return err
	}
	idx, images, err := imagebuild.Build(o)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	layoutDir := filepath.Join(out, "oci-layout")
	if err := imagebuild.WriteLayout(layoutDir, idx, ref); err != nil {
		return err
	}
	if err := imagebuild.WriteArchive(filepath.Join(out, "netconf-migrator.oci.tar"), layoutDir, o.Created); err != nil {
		return err
	}
	for plat, img := range images {
		path := filepath.Join(out, "netconf-migrator-"+strings.ReplaceAll(plat, "/", "-")+".docker.tar")
		if err := imagebuild.WriteDockerArchive(path, img, ref); err != nil {
			return err
		}
	}
	sboms := map[string][]byte{}
	for plat, path := range o.Binaries {
		doc, err := sbom.Of(path, o.Version)
		if err != nil {
			return fmt.Errorf("the SBOM of the %s image: %w", plat, err)
		}
		sboms[plat] = doc
		if err := os.WriteFile(filepath.Join(out, "netconf-migrator-"+strings.ReplaceAll(plat, "/", "-")+".cdx.json"), doc, 0o644); err != nil {
			return err
		}
	}
	artifacts, err := imagebuild.SBOMArtifacts(idx, images, sboms, o.Created)
	if err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	// The tag the archives carry, for an install from them (air gaps:
	// --set image.tag=$(cat dist/image/tag)): the chart must name the
	// image by the same tag, which git describe does not give.
	if err := os.WriteFile(filepath.Join(out, "tag"), []byte(ref.TagStr()+"\n"), 0o644); err != nil {
		return err
	}
	// What the release signs: the index by digest, never a tag.
	if err := os.WriteFile(filepath.Join(out, "digest"), []byte(ref.Context().Digest(d.String()).String()+"\n"), 0o644); err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", ref, d)
	if push {
		auth := remote.WithAuthFromKeychain(authn.DefaultKeychain)
		if err := remote.WriteIndex(ref, idx, auth); err != nil {
			return fmt.Errorf("pushing %s: %w", ref, err)
		}
		for _, a := range artifacts {
			if err := a.Push(ref.Context(), auth); err != nil {
				return err
			}
		}
	}
	return nil
}
