package app

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/harvester/netconf-migrator/apis/netconf"
	"github.com/harvester/netconf-migrator/convert"
)

func newConvertCommand(g *globals) *cobra.Command {
	var (
		files      []string
		format     string
		profile    string
		reportPath string
		opts       convert.Options
	)
	cmd := &cobra.Command{
		Use:   "convert -f PATH [-f PATH...]",
		Short: "Normalize NetworkAttachmentDefinitions in manifest files",
		Long: `convert finds NetworkAttachmentDefinitions in YAML or JSON manifests (multi-document
streams and List kinds included) and rewrites nested and double-encoded spec.config
payloads into the flat CNI form. Other documents pass through unchanged.

Exit codes: 0 done (or, with --check, nothing to change); 1 with --check, a NAD would
change or is truncated/invalid; 2 usage errors and unreadable or unparsable files.`,
		Example: `  # Show what would change in a GitOps repository
  netconf-migrator convert -f manifests/ -o diff

  # Fail CI when any NAD is not clean
  netconf-migrator convert -f manifests/ --check --report nads.json

  # Fix the files
  netconf-migrator convert -f manifests/ --in-place`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(files) == 0 {
				return usageError("convert needs at least one -f PATH (a file, a directory or - for standard input)")
			}
			switch format {
			case convert.FormatYAML, convert.FormatJSON, convert.FormatDiff:
			default:
				return usageError("unknown output format %q (want yaml, json or diff)", format)
			}
			p, err := netconf.ParseProfile(profile)
			if err != nil {
				return usageError("%w", err)
			}
			opts.Format, opts.Profile = format, p
			paths, err := convert.ExpandPaths(files)
			if err != nil {
				return &ExitError{Code: ExitUsage, Err: err}
			}
			res, err := convert.Run(opts, paths, g.io.In, g.io.Out)
			if err != nil {
				var ie *convert.InputError
				if errors.As(err, &ie) || res == nil {
					return &ExitError{Code: ExitUsage, Err: err}
				}
				return &ExitError{Code: ExitAttention, Err: err}
			}
			res.Report.WriteSummary(g.io.Err)
			if reportPath != "" {
				if err := res.Report.WriteFile(reportPath); err != nil {
					return &ExitError{Code: ExitUsage, Err: err}
				}
			}
			if opts.Check && res.NeedsAttention() {
				return &ExitError{Code: ExitAttention}
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVarP(&files, "filename", "f", nil, "a manifest file, a directory (searched for *.yaml, *.yml, *.json) or - for standard input; repeatable")
	f.StringVarP(&format, "output", "o", convert.FormatYAML, "output: yaml, json, or diff (a unified diff of spec.config for every NAD that would change)")
	f.BoolVar(&opts.InPlace, "in-place", false, "rewrite the files that change instead of writing to standard output")
	f.BoolVar(&opts.Check, "check", false, "change nothing; exit 1 when any NAD would change or is truncated or invalid")
	f.StringVar(&reportPath, "report", "", "write a JSON report of every NAD that is not clean to this file")
	f.StringVar(&profile, "profile", string(netconf.ProfileHarvester), "validation profile: harvester or generic")
	return cmd
}
