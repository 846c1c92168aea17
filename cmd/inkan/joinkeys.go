package main

import (
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/inkan-pki/inkan/node"
)

// joinKeysJSON is what `inkan join-keys -o json` writes and `inkan admin cluster
// join-token --keys` reads.
type joinKeysJSON struct {
	Node         string `json:"node"`
	Role         string `json:"role,omitempty"`
	NodeKey      string `json:"node_key"`
	TransportKey string `json:"transport_key"`
}

// newJoinKeysCmd is `inkan join-keys`: the first step of a node's join ceremony.
func newJoinKeysCmd() *cobra.Command {
	var configPath, output string
	cmd := &cobra.Command{
		Use: "join-keys --config node.yaml [-o json]",
		Example: `  inkan join-keys --config /etc/inkan/node4.yaml
  inkan join-keys --config /etc/inkan/node4.yaml -o json > node4.keys`,
		Short: "Make a new node's keys in its HSM and print what the admins approve for its join",
		Long: `join-keys runs on a new node before its first start. It makes the node's TLS key and its
transport key in the node's HSM (once: running it again shows the same keys), fixes the
node's ID in its data dir, and prints the node ID and the two keys' fingerprints.

A join is granted to exactly these: an admin asks for a join token naming them
(inkan admin cluster join-token --keys FILE), other admins approve it after comparing
the fingerprints with what this command printed on the node, and the cluster then
admits this node only and wraps its keys (the CA key among them) for this transport
key alone; its private half never leaves this HSM.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if configPath == "" {
				return fmt.Errorf("give --config")
			}
			if output != "table" && output != "json" {
				return fmt.Errorf("--output %q: use table or json", output)
			}
			cfg, err := node.LoadConfig(configPath)
			if err != nil {
				return err
			}
			keys, err := node.PrepareJoin(cmdContext(cmd), cfg)
			if err != nil {
				return err
			}
			out := joinKeysJSON{Node: keys.Node, Role: cfg.Cluster.Role, NodeKey: keys.NodeKey.String(), TransportKey: keys.TransportKey.String()}
			if output == "json" {
				printJSON(cmd.OutOrStdout(), out)
				return nil
			}
			printJoinKeys(cmd.OutOrStdout(), out)
			return nil
		},
	}
	cmd.Flags().StringVar(&configPath, "config", "", "the new node's configuration file")
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func printJoinKeys(w io.Writer, k joinKeysJSON) {
	fmt.Fprintf(w, "node           %s\nrole           %s\nnode key       %s\ntransport key  %s\n\n", k.Node, k.Role, k.NodeKey, k.TransportKey)
	fmt.Fprintf(w, "An admin grants the join, and other admins approve it after comparing these fingerprints:\n"+
		"  inkan admin … cluster join-token --role %s --node %s --node-key %s --transport-key %s > %s.token\n",
		k.Role, k.Node, k.NodeKey, k.TransportKey, k.Node)
}
