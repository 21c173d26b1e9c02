// Package sbom makes the CycloneDX bill of materials of a Go binary, for the
// released CLI archives and the image's platforms alike.
package sbom

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"os"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/CycloneDX/cyclonedx-gomod/pkg/generate/bin"
	"github.com/rs/zerolog"
)

// Of is the CycloneDX bill of materials of the binary at path, made by
// cyclonedx-gomod from the module graph the Go toolchain stamped into it
// (every module it links, with its version and checksum, and the standard
// library), version naming the main module. Its serial number is derived
// from the binary, so the same binary gives the same SBOM.
func Of(path, version string) ([]byte, error) {
	g, err := bin.NewGenerator(path, bin.WithVersionOverride(version), bin.WithIncludeStdlib(true), bin.WithLogger(zerolog.Nop()))
	if err != nil {
		return nil, err
	}
	bom, err := g.Generate()
	if err != nil {
		return nil, fmt.Errorf("the SBOM of %s: %w", path, err)
	}
	exe, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(exe)
	bom.SerialNumber = fmt.Sprintf("urn:uuid:%x-%x-%x-%x-%x", sum[0:4], sum[4:6], sum[6:8], sum[8:10], sum[10:16])
	var out bytes.Buffer
	enc := cdx.NewBOMEncoder(&out, cdx.BOMFileFormatJSON)
	enc.SetPretty(true)
	if err := enc.Encode(bom); err != nil {
		return nil, err
	}
	return out.Bytes(), nil
}
