// Command image assembles netconf-migrator's OCI image index from binaries
// `make image` built, and writes it as an OCI layout, an OCI archive (for
// `ctr images import` and Harvester's air-gap image import), one
// `docker load` archive per platform, and, with -push, to a registry.
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
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", ref, d)
	if push {
		if err := remote.WriteIndex(ref, idx, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("pushing %s: %w", ref, err)
		}
	}
	return nil
}
