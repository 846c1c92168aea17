package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/inkan-pki/inkan/node"
)

// newServerCmd is `inkan server`: one appliance node, run in the foreground.
func newServerCmd() *cobra.Command {
	var configPath string
	var leave bool
	cmd := &cobra.Command{
		Use:     "server --config node.yaml",
		Example: `  inkan server --config /etc/inkan/node.yaml`,
		Short:   "Run an appliance node from its configuration file",
		Long: `server runs one node from its YAML configuration (deploy/examples/node.yaml explains
every option): it opens the HSM token, starts a new cluster or joins one, and serves the
API (HTTPS), OCSP/CRLs (HTTP), /healthz, /readyz and /metrics (HTTP) and the admin
socket <data_dir>/admin.sock (inkan admin).

SIGTERM or SIGINT drains the node: the listeners stop accepting and finish their
requests, the services and the cluster stop (each step within drain_timeout), and the
process exits 0; a second signal exits at once. With --leave the node also leaves the
cluster on the way out (a clean decommission; inkan admin cluster leave does the same
on a running node). If the cluster stops on its own — this replica could not apply a
committed entry — the node stops and the process exits 1 with the reason.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// What the node's parts log without the node's logger goes
			// to stderr at INFO too.
			cliLogLevel.Set(slog.LevelInfo)
			if configPath == "" {
				return fmt.Errorf("give --config")
			}
			cfg, err := node.LoadConfig(configPath)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmdContext(cmd), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			n, err := node.Start(ctx, cfg)
			if err != nil {
				return err
			}
			printServing(cmd.OutOrStdout(), n)
			select {
			case <-ctx.Done():
				stop() // from now on a second signal ends the process at once
				if leave {
					err = n.Leave(context.Background())
				} else {
					err = n.Stop(context.Background())
				}
			case <-n.Done():
				err = n.Err()
			}
			if err != nil {
				return fmt.Errorf("node stopped: %w", err)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "the node's configuration file (YAML)")
	cmd.Flags().BoolVar(&leave, "leave", false, "on SIGTERM/SIGINT, also leave the cluster (decommission the node)")
	return cmd
}

func printServing(w io.Writer, n *node.Node) {
	a := n.Addrs()
	fmt.Fprintf(w, "inkan node %s serving\n", n.Cluster().ID())
	fmt.Fprintf(w, "  cluster  %s (Raft and RPC, mutual TLS)\n", a.Cluster)
	fmt.Fprintf(w, "  api      https://%s/\n", a.API)
	fmt.Fprintf(w, "  ocsp     http://%s/\n", a.OCSP)
	fmt.Fprintf(w, "  metrics  http://%s/metrics  /healthz  /readyz\n", a.Metrics)
	fmt.Fprintf(w, "  admin    %s  (inkan admin --socket %s cluster status)\n", a.Admin, a.Admin)
}
