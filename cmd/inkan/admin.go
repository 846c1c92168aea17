package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/inkan-pki/inkan/node"
)

// adminFlags are the flags every admin command shares.
type adminFlags struct {
	socket, dataDir, config string
	// The admin API over mutual TLS, as an operator: flags, else the
	// environment (INKAN_ADMIN_URL, …), else the profile file.
	url, cacert, cert, key string
	profile                string
	output                 string
	timeout                time.Duration
}

// newAdminCmd is `inkan admin`: the operator's commands against a running node,
// through its admin socket.
func newAdminCmd() *cobra.Command {
	f := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "admin",
		Short: "Administer a cluster: as an operator over mutual TLS, or through a node's admin socket",
		Long: `admin talks to a node's admin API in one of two ways.

As an operator, over mutual TLS to a node's admin.listen: --url https://host:port,
--cacert (the cluster CA: <data_dir>/cluster-ca.pem), --cert and --key (the operator's
certificate and key, PEM). These come from flags, else INKAN_ADMIN_URL, INKAN_ADMIN_CACERT,
INKAN_ADMIN_CERT and INKAN_ADMIN_KEY, else the profile file (--profile, default
~/.config/inkan/config.yaml, with the keys url, cacert, cert, key). The operator's role
(admin, officer, auditor) decides what they may do; operations under dual control are
proposed and run once other operators approve them ('admin approvals').

Through a node's admin socket, <data_dir>/admin.sock, which only the node's user can
open: name it with --socket, --data-dir or --config. Until the cluster has operators
('admin init') the socket may do everything; after, only what concerns that node.

Refusals print their problem type (urn:inkan:problem:admin:…) and why; with --output json
they are printed as problem+json on stdout.`,
		Example: `  inkan admin --config /etc/inkan/node.yaml cluster status
  inkan admin --url https://10.0.0.1:7444 --cacert cluster-ca.pem --cert me.pem --key me.key cert show 5c1e…`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&f.socket, "socket", "", "the node's admin socket")
	pf.StringVar(&f.dataDir, "data-dir", "", "the node's data dir (its admin.sock)")
	pf.StringVar(&f.config, "config", "", "the node's configuration file (its data_dir's admin.sock)")
	pf.StringVar(&f.url, "url", "", "the admin API over mutual TLS (https://host:port, a node's admin.listen)")
	pf.StringVar(&f.cacert, "cacert", "", "the cluster CA the node's certificate chains to (PEM)")
	pf.StringVar(&f.cert, "cert", "", "the operator's certificate (PEM)")
	pf.StringVar(&f.key, "key", "", "the operator's private key (PEM, mode 0600)")
	pf.StringVar(&f.profile, "profile", "", "connection settings file (default ~/.config/inkan/config.yaml)")
	pf.StringVarP(&f.output, "output", "o", "table", "output format: table or json")
	pf.DurationVar(&f.timeout, "timeout", 30*time.Second, "give up after this long (a write waits for a leader until then)")
	cmd.AddCommand(newAdminClusterCmd(f), newAdminCACmd(f), newAdminCertCmd(f), newAdminPolicyCmd(f),
		newAdminInitCmd(f), newAdminOperatorCmd(f), newAdminApprovalsCmd(f), newAdminBackupCmd(f), newAdminRestoreCmd(f), newAdminOCSPCmd(f))
	return cmd
}

func newAdminClusterCmd(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "The cluster's members: status, join tokens, removal, leadership",
	}
	var role string
	var ttl time.Duration
	joinToken := &cobra.Command{
		Use:     "join-token --role voter|nonvoter [--ttl 1h]",
		Example: `  inkan admin --config /etc/inkan/node.yaml cluster join-token --role voter --ttl 1h > node4.token`,
		Short:   "Make a one-time join token for a new node",
		Long: `join-token makes a one-time token for a new node to join the cluster with, and prints it
once (the cluster keeps only its hash). Put it in a file of mode 0600 named by the new
node's cluster.join.token_file. A voter counts toward quorum and receives the replicated
keys (the CA key); a nonvoter is an OCSP/CRL edge that receives none.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runJoinToken(cmd, f, role, ttl)
		},
	}
	joinToken.Flags().StringVar(&role, "role", "", "voter or nonvoter")
	joinToken.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token may be used (1m..168h)")

	var edgeTTL time.Duration
	addNonvoter := &cobra.Command{
		Use:     "add-nonvoter [--ttl 1h]",
		Example: `  inkan admin --config /etc/inkan/node.yaml cluster add-nonvoter > edge1.token`,
		Short:   "Make a join token for a non-voting node (an OCSP/CRL edge): join-token --role nonvoter",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runJoinToken(cmd, f, "nonvoter", edgeTTL)
		},
	}
	addNonvoter.Flags().DurationVar(&edgeTTL, "ttl", time.Hour, "how long the token may be used (1m..168h)")

	status := &cobra.Command{
		Use: "status",
		Example: `  inkan admin --config /etc/inkan/node.yaml cluster status
  inkan admin --url https://10.0.0.1:7444 --cacert cluster-ca.pem --cert me.pem --key me.key cluster status -o json`,
		Short: "Show this node's view of the cluster: its state, the leader, the members",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *node.AdminClient) (any, func(io.Writer), error) {
				st, err := ac.Status(ctx)
				return st, func(w io.Writer) { printStatus(w, st) }, err
			})
		},
	}
	remove := &cobra.Command{
		Use:     "remove NODE-ID",
		Example: `  inkan admin --config /etc/inkan/node.yaml cluster remove node3`,
		Short:   "Remove another node from the cluster, for ever (its ID can never rejoin)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *node.AdminClient) (any, func(io.Writer), error) {
				err := ac.RemoveNode(ctx, args[0])
				return map[string]string{"removed": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "removed node %s\n", args[0]) }, err
			})
		},
	}
	transfer := &cobra.Command{
		Use:     "transfer-leader",
		Example: `  inkan admin --config /etc/inkan/node.yaml cluster transfer-leader`,
		Short:   "Have the leader hand leadership to another voter",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *node.AdminClient) (any, func(io.Writer), error) {
				l, err := ac.TransferLeadership(ctx)
				return l, func(w io.Writer) {
					fmt.Fprintf(w, "leader is now %s at %s (was %s)\n", l.LeaderID, l.LeaderAddr, l.Previous)
				}, err
			})
		},
	}
	leave := &cobra.Command{
		Use:     "leave",
		Example: `  sudo -u inkan inkan admin --config /etc/inkan/node.yaml cluster leave`,
		Short:   "Decommission this node: drain it, remove it from the cluster, stop its process",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *node.AdminClient) (any, func(io.Writer), error) {
				err := ac.Leave(ctx)
				return map[string]bool{"left": true}, func(w io.Writer) { fmt.Fprintln(w, "the node left the cluster and is stopping") }, err
			})
		},
	}
	cmd.AddCommand(status, joinToken, addNonvoter, remove, transfer, leave)
	return cmd
}

func runJoinToken(cmd *cobra.Command, f *adminFlags, role string, ttl time.Duration) error {
	if role != "voter" && role != "nonvoter" {
		return fmt.Errorf("give --role voter or --role nonvoter")
	}
	return withAdmin(cmd, f, func(ctx context.Context, ac *node.AdminClient) (any, func(io.Writer), error) {
		jt, err := ac.CreateJoinToken(ctx, role, ttl)
		return jt, func(w io.Writer) {
			// The token alone on stdout, for $(…) and files; the rest on stderr.
			fmt.Fprintln(w, jt.Token)
			fmt.Fprintf(cmd.ErrOrStderr(), "join token for a %s, valid until %s; it is shown only this once.\n"+
				"Write it to a file of mode 0600 and name it in the new node's cluster.join.token_file.\n",
				jt.Role, jt.ExpiresAt.Local().Format(time.RFC3339))
		}, err
	})
}

// withAdmin dials the node's admin socket, runs call and prints its result as a
// table or JSON. A problem is printed as problem+json with --output json.
func withAdmin(cmd *cobra.Command, f *adminFlags, call func(context.Context, *node.AdminClient) (any, func(io.Writer), error)) error {
	if f.output != "table" && f.output != "json" {
		return fmt.Errorf("--output %q: use table or json", f.output)
	}
	ac, err := f.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmdContext(cmd), f.timeout)
	defer cancel()
	v, table, err := call(ctx, ac)
	out := cmd.OutOrStdout()
	var p *node.Problem
	var proposed *node.ProposedError
	switch {
	case errors.As(err, &proposed):
		if f.output == "json" {
			printJSON(out, proposed.Request)
		} else {
			fmt.Fprintf(out, "%s\ndigest %s: approvers run 'inkan admin approvals approve %s'\n", proposed, proposed.Request.Digest, proposed.Request.ID)
		}
		return nil
	case errors.As(err, &p):
		if f.output == "json" {
			printJSON(out, p)
		}
		return fmt.Errorf("admin: %s (%s)\n  %s", p.Title, p.Name(), p.Detail)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("admin: no answer within --timeout %s: %w", f.timeout, err)
	case err != nil:
		return err
	}
	if f.output == "json" {
		printJSON(out, v)
	} else {
		table(out)
	}
	return nil
}

func (f *adminFlags) socketPath() (string, error) {
	n := 0
	for _, s := range []string{f.socket, f.dataDir, f.config} {
		if s != "" {
			n++
		}
	}
	switch {
	case n > 1:
		return "", errors.New("give one of --socket, --data-dir, --config")
	case n == 0 && f.url != "":
		return "", errors.New("this command runs on a node, through its admin socket: give --socket, --data-dir or --config")
	case f.socket != "":
		return f.socket, nil
	case f.dataDir != "":
		return (&node.Config{DataDir: f.dataDir}).AdminSocket(), nil
	case f.config != "":
		cfg, err := node.LoadConfig(f.config)
		if err != nil {
			return "", err
		}
		return cfg.AdminSocket(), nil
	}
	return "", errors.New("name the node: give --socket PATH, --data-dir DIR or --config FILE")
}

func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func printStatus(w io.Writer, st *node.Status) {
	fmt.Fprintf(w, "node     %s (%s, %s)\n", st.Node, st.Role, st.State)
	if st.LeaderID != "" {
		fmt.Fprintf(w, "leader   %s at %s\n", st.LeaderID, st.LeaderAddr)
	} else {
		fmt.Fprintln(w, "leader   none known")
	}
	fmt.Fprintf(w, "applied  %d (commit index %d)\n", st.AppliedIndex, st.CommitIndex)
	if st.Ready {
		fmt.Fprintln(w, "ready    yes")
	} else {
		fmt.Fprintf(w, "ready    no: %s\n", st.NotReady)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tADDRESS\tROLE\tRAFT\tJOINED\tNOTE")
	for _, m := range st.Members {
		joined := "-"
		if !m.JoinedAt.IsZero() {
			joined = m.JoinedAt.Local().Format(time.DateTime)
		}
		mark := ""
		switch {
		case m.Leader && m.Self:
			mark = "leader, this node"
		case m.Leader:
			mark = "leader"
		case m.Self:
			mark = "this node"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Addr, m.Role, m.Raft, joined, mark)
	}
	tw.Flush()
}
