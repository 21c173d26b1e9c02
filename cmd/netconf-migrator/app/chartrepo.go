package app

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/harvester/netconf-migrator/config/chart"
	"github.com/harvester/netconf-migrator/internal/chartrepo"
)

// newChartRepoCommand serves the chart this binary embeds as a Helm
// repository: an air-gapped Harvester's Addon installs from a repository
// URL, and no registry outside the cluster is reachable there, while the
// tool's image already is (examples/harvester-addon-airgap.yaml).
func newChartRepoCommand(g *globals) *cobra.Command {
	listen := ":8080"
	cmd := &cobra.Command{
		Use:   "chart-repo",
		Short: "Serve the chart this binary was built with as a Helm repository (air-gapped Harvester Addons)",
		Long: `chart-repo serves GET /index.yaml and GET /netconf-migrator-<version>.tgz: the chart
this binary was built with, as a Helm chart repository. Run it in the cluster behind a
Service and point a Harvester Addon's repo at it, as Harvester's own add-ons use its
cluster repository (examples/harvester-addon-airgap.yaml). Plain HTTP, inside the cluster;
the chart holds nothing secret. It stops on SIGTERM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := g.Logger()
			if err != nil {
				return usageError("%w", err)
			}
			repo, err := chartrepo.New(chart.Files, chart.Dir, time.Unix(0, 0))
			if err != nil {
				return fmt.Errorf("packaging the embedded chart: %w", err)
			}
			l, err := net.Listen("tcp", listen)
			if err != nil {
				return usageError("--listen %s: %w", listen, err)
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			srv := &http.Server{Handler: repo, ReadHeaderTimeout: 10 * time.Second}
			go func() {
				<-ctx.Done()
				shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(shutdown)
			}()
			log.Info("Serving the chart as a Helm repository", "address", l.Addr().String(), "chartVersion", repo.Version)
			if err := srv.Serve(l); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&listen, "listen", listen, "address to serve the repository on")
	return cmd
}
