package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/inkan-pki/inkan/admin"
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
		newAdminInitCmd(f), newAdminOperatorCmd(f), newAdminApprovalsCmd(f), newAdminRulesCmd(f), newAdminBackupCmd(f), newAdminRestoreCmd(f), newAdminOCSPCmd(f),
		newAdminTSACmd(f))
	return cmd
}

func newAdminClusterCmd(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cluster",
		Short: "The cluster's members: status, join tokens, removal, leadership",
	}
	var jf joinFlags
	joinToken := &cobra.Command{
		Use: "join-token --role voter|nonvoter (--keys FILE | --node ID --node-key FP --transport-key FP) [--ttl 1h]",
		Example: `  # on the new node, before its first start:
  inkan join-keys --config /etc/inkan/node4.yaml -o json > node4.keys
  # an admin, having compared the fingerprints with the new node's operator:
  inkan admin --url https://10.0.0.1:7444 --cacert cluster-ca.pem --cert me.pem --key me.key \
    cluster join-token --role voter --keys node4.keys > node4.token`,
		Short: "Grant a join to one new node's keys, and print its one-time token",
		Long: `join-token asks the cluster to grant a join to the node whose keys 'inkan join-keys'
printed on it: its node ID, the fingerprint of its TLS key and that of its transport
key, for one role. The token is made here and printed once on standard output; the
cluster and the approvers see only the SHA-256 of its secret. It admits that node
only — another HSM, another node ID or another role is refused — and a voter
receives the cluster's keys wrapped for the approved transport key alone.

Granting a join is under dual control (cluster.membership; for a voter also
ca.key.transfer): with operators, the grant is proposed and the token works once
enough of them have approved it (inkan admin approvals approve ID). Put the token in
a file of mode 0600 named by the new node's cluster.join.token_file.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runJoinToken(cmd, f, jf)
		},
	}
	jf.flags(joinToken, true)

	var ef joinFlags
	addNonvoter := &cobra.Command{
		Use:     "add-nonvoter (--keys FILE | --node ID --node-key FP --transport-key FP) [--ttl 1h]",
		Example: `  inkan admin --config /etc/inkan/node.yaml cluster add-nonvoter --keys edge1.keys > edge1.token`,
		Short:   "Grant a join to a non-voting node (an OCSP/CRL edge): join-token --role nonvoter",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ef.role = "nonvoter"
			return runJoinToken(cmd, f, ef)
		},
	}
	ef.flags(addNonvoter, false)

	var transportFP string
	approveTransport := &cobra.Command{
		Use: "approve-transport-key NODE-ID --transport-key FP",
		Example: `  # on node2 (a voter that joined before joins were granted to keys):
  inkan admin --config /etc/inkan/node2.yaml cluster status -o json | grep '"transport_key"'
  inkan admin --url https://10.0.0.1:7444 --cacert cluster-ca.pem --cert me.pem --key me.key \
    cluster approve-transport-key node2 --transport-key sha256:…`,
		Short: "Approve the transport key of a voter that joined before joins were granted to keys",
		Long: `approve-transport-key records FP as the transport key of a voter that joined before this
version, so that replicated keys made from now on (a new CA key) can be sent to it:
they are only ever wrapped for a voter's approved transport key. The node's own
'cluster status' shows its transport key. It is under dual control like a voter's join.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			fp, err := admin.ParseKeyFingerprint(transportFP)
			if err != nil {
				return fmt.Errorf("--transport-key %q: %w", transportFP, err)
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				err := ac.ApproveTransportKey(ctx, args[0], fp)
				return map[string]string{"node": args[0], "transport_key": fp.String()}, func(w io.Writer) {
					fmt.Fprintf(w, "transport key %s approved for %s\n", fp, args[0])
				}, err
			})
		},
	}
	approveTransport.Flags().StringVar(&transportFP, "transport-key", "", "the voter's transport key fingerprint (sha256:…)")

	status := &cobra.Command{
		Use: "status",
		Example: `  inkan admin --config /etc/inkan/node.yaml cluster status
  inkan admin --url https://10.0.0.1:7444 --cacert cluster-ca.pem --cert me.pem --key me.key cluster status -o json`,
		Short: "Show this node's view of the cluster: its state, the leader, the members",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
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
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
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
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
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
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				err := ac.Leave(ctx)
				return map[string]bool{"left": true}, func(w io.Writer) { fmt.Fprintln(w, "the node left the cluster and is stopping") }, err
			})
		},
	}
	cmd.AddCommand(status, joinToken, addNonvoter, approveTransport, remove, transfer, leave)
	return cmd
}

// joinFlags are a join grant's: the role, the node's keys and the lifetime.
type joinFlags struct {
	role, keysFile, node, nodeKey, transportKey string
	ttl                                         time.Duration
}

func (jf *joinFlags) flags(cmd *cobra.Command, withRole bool) {
	if withRole {
		cmd.Flags().StringVar(&jf.role, "role", "", "voter or nonvoter")
	}
	cmd.Flags().StringVar(&jf.keysFile, "keys", "", "the new node's keys as `inkan join-keys -o json` wrote them")
	cmd.Flags().StringVar(&jf.node, "node", "", "the new node's ID (instead of --keys)")
	cmd.Flags().StringVar(&jf.nodeKey, "node-key", "", "its node key fingerprint, sha256:… (instead of --keys)")
	cmd.Flags().StringVar(&jf.transportKey, "transport-key", "", "its transport key fingerprint, sha256:… (instead of --keys)")
	cmd.Flags().DurationVar(&jf.ttl, "ttl", time.Hour, "how long the token may be used once granted (1m..168h)")
}

// keys reads the new node's keys from --keys or the three flags, naming the
// flag at fault.
func (jf *joinFlags) keys() (admin.JoinKeys, error) {
	var jk joinKeysJSON
	switch {
	case jf.keysFile != "" && (jf.node != "" || jf.nodeKey != "" || jf.transportKey != ""):
		return admin.JoinKeys{}, errors.New("give --keys, or --node, --node-key and --transport-key, not both")
	case jf.keysFile != "":
		b, err := os.ReadFile(jf.keysFile)
		if err != nil {
			return admin.JoinKeys{}, fmt.Errorf("--keys: %w", err)
		}
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&jk); err != nil {
			return admin.JoinKeys{}, fmt.Errorf("--keys %s: not what `inkan join-keys -o json` writes: %w", jf.keysFile, err)
		}
	default:
		jk = joinKeysJSON{Node: jf.node, NodeKey: jf.nodeKey, TransportKey: jf.transportKey}
	}
	var errs []error
	out := admin.JoinKeys{Node: jk.Node}
	if jk.Node == "" {
		errs = append(errs, errors.New("--node: required (the new node's ID)"))
	}
	var err error
	if out.NodeKey, err = admin.ParseKeyFingerprint(jk.NodeKey); err != nil {
		errs = append(errs, fmt.Errorf("--node-key %q: %w", jk.NodeKey, err))
	}
	if out.TransportKey, err = admin.ParseKeyFingerprint(jk.TransportKey); err != nil {
		errs = append(errs, fmt.Errorf("--transport-key %q: %w", jk.TransportKey, err))
	}
	if jk.Role != "" && jf.role != "" && jk.Role != jf.role {
		errs = append(errs, fmt.Errorf("--role %s: the node's configuration (in --keys) says %s", jf.role, jk.Role))
	}
	return out, errors.Join(errs...)
}

// joinGrantOutput is what join-token prints with -o json.
type joinGrantOutput struct {
	Token   string                 `json:"token"`
	Grant   *admin.JoinGrant       `json:"grant,omitempty"`
	Pending *admin.ApprovalRequest `json:"pending,omitempty"` // under dual control: the token works once approved
}

func runJoinToken(cmd *cobra.Command, f *adminFlags, jf joinFlags) error {
	if jf.role != "voter" && jf.role != "nonvoter" {
		return fmt.Errorf("--role: give voter or nonvoter")
	}
	keys, err := jf.keys()
	if err != nil {
		return err
	}
	var out joinGrantOutput
	err = withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
		tok, g, err := ac.GrantJoin(ctx, jf.role, keys, jf.ttl)
		out.Token = tok
		var proposed *admin.ProposedError
		switch {
		case errors.As(err, &proposed):
			out.Pending = &proposed.Request
			err = nil
		case err == nil:
			out.Grant = g
		}
		return out, func(w io.Writer) {
			// The token alone on stdout, for files; the rest on stderr.
			fmt.Fprintln(w, out.Token)
			stderr := cmd.ErrOrStderr()
			if out.Pending != nil {
				fmt.Fprintf(stderr, "join of %s (%s) proposed as %s: the token admits it once %d %s operators approve\n"+
					"(inkan admin approvals approve %s) before %s.\n",
					keys.Node, jf.role, out.Pending.ID, out.Pending.Approvals, out.Pending.Role, out.Pending.ID,
					out.Pending.Expires.Local().Format(time.RFC3339))
			} else {
				fmt.Fprintf(stderr, "join granted to %s (%s), node key %s, transport key %s, for %s.\n",
					keys.Node, jf.role, keys.NodeKey, keys.TransportKey, jf.ttl)
			}
			fmt.Fprintln(stderr, "The token is shown only this once: write it to a file of mode 0600 and name it in the new node's cluster.join.token_file.")
		}, err
	})
	return err
}

// withAdmin dials the node's admin socket, runs call and prints its result as a
// table or JSON. A problem is printed as problem+json with --output json.
func withAdmin(cmd *cobra.Command, f *adminFlags, call func(context.Context, *admin.Client) (any, func(io.Writer), error)) error {
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
	var p *admin.Problem
	var proposed *admin.ProposedError
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

func printStatus(w io.Writer, st *admin.Status) {
	fmt.Fprintf(w, "node     %s (%s, %s)\n", st.Node, st.Role, st.State)
	if st.LeaderID != "" {
		fmt.Fprintf(w, "leader   %s at %s\n", st.LeaderID, st.LeaderAddr)
	} else {
		fmt.Fprintln(w, "leader   none known")
	}
	fmt.Fprintf(w, "applied  %d (commit index %d)\n", st.AppliedIndex, st.CommitIndex)
	fmt.Fprintf(w, "rules    version %d (inkan admin rules show)\n", st.RulesVersion)
	if st.TransportKey != "" {
		fmt.Fprintf(w, "transport key  %s\n", st.TransportKey)
	}
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
		if m.Role == "voter" && m.TransportKey == "" {
			mark += " (no approved transport key: inkan admin cluster approve-transport-key)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", m.ID, m.Addr, m.Role, m.Raft, joined, mark)
	}
	tw.Flush()
}
