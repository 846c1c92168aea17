package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"gopkg.in/yaml.v3"

	"github.com/inkan-pki/inkan/admin"
)

// adminProfile is the connection settings file (~/.config/inkan/config.yaml).
type adminProfile struct {
	URL    string `yaml:"url"`
	CACert string `yaml:"cacert"`
	Cert   string `yaml:"cert"`
	Key    string `yaml:"key"`
}

// settle fills the mutual-TLS settings not given as flags from the
// environment, then from the profile file.
func (f *adminFlags) settle() error {
	for _, e := range []struct {
		v   *string
		env string
	}{{&f.url, "INKAN_ADMIN_URL"}, {&f.cacert, "INKAN_ADMIN_CACERT"}, {&f.cert, "INKAN_ADMIN_CERT"}, {&f.key, "INKAN_ADMIN_KEY"}} {
		if *e.v == "" {
			*e.v = os.Getenv(e.env)
		}
	}
	path, explicit := f.profile, f.profile != ""
	if !explicit {
		dir, err := os.UserConfigDir()
		if err != nil {
			return nil
		}
		path = filepath.Join(dir, "inkan", "config.yaml")
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return nil
	}
	if err != nil {
		return fmt.Errorf("--profile: %w", err)
	}
	var p adminProfile
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("profile %s: %w", path, err)
	}
	for _, e := range []struct {
		v *string
		p string
	}{{&f.url, p.URL}, {&f.cacert, p.CACert}, {&f.cert, p.Cert}, {&f.key, p.Key}} {
		if *e.v == "" {
			*e.v = e.p
		}
	}
	return nil
}

// client is the admin client the flags name: the socket if one is named,
// else the admin API over mutual TLS.
func (f *adminFlags) client() (*admin.Client, error) {
	if f.socket != "" || f.dataDir != "" || f.config != "" {
		socket, err := f.socketPath()
		if err != nil {
			return nil, err
		}
		return admin.NewClient(socket), nil
	}
	if err := f.settle(); err != nil {
		return nil, err
	}
	if f.url == "" {
		return nil, errors.New("name the node: --socket, --data-dir or --config on the node, or --url with --cacert, --cert and --key as an operator")
	}
	if f.cacert == "" || f.cert == "" || f.key == "" {
		return nil, errors.New("--url needs --cacert (the cluster CA), --cert and --key (the operator's)")
	}
	pemCA, err := os.ReadFile(f.cacert)
	if err != nil {
		return nil, fmt.Errorf("--cacert: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemCA) {
		return nil, fmt.Errorf("--cacert %s: no certificate", f.cacert)
	}
	cert, err := tls.LoadX509KeyPair(f.cert, f.key)
	if err != nil {
		return nil, fmt.Errorf("--cert/--key: %w", err)
	}
	return admin.NewClientTLS(f.url, roots, cert), nil
}

// operatorKey loads the operator's key for signing approvals.
func (f *adminFlags) operatorKey() (crypto.Signer, error) {
	if err := f.settle(); err != nil {
		return nil, err
	}
	if f.key == "" {
		return nil, errors.New("--key: the operator's private key signs the decision")
	}
	return readKey(f.key)
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("%s: no PEM key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
	if err != nil {
		if ek, err2 := x509.ParseECPrivateKey(blk.Bytes); err2 == nil {
			return ek, nil
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%s: not a signing key", path)
	}
	return s, nil
}

// newOperatorKey makes an operator key (ECDSA P-256) in a new file of mode
// 0600 and returns it with a CSR naming name.
func newOperatorKey(keyPath, name string) ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(keyPath, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, err
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, k)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}), nil
}

// newAdminInitCmd is `inkan admin init`: the first admin.
func newAdminInitCmd(f *adminFlags) *cobra.Command {
	var name, keyOut, certOut string
	cmd := &cobra.Command{
		Use:   "init --name NAME --key-out FILE --cert-out FILE",
		Short: "Make the cluster's first admin (on the first node, through its admin socket)",
		Long: `init makes the operator CA (its key in the HSM) and the first admin: a new key in
--key-out (mode 0600; keep it safe, or move it to a token) and its certificate in
--cert-out. It works once, while the cluster has no operator; from then on the admin
socket serves only what concerns its node, and everything else needs an operator over
mutual TLS (admin.listen). The admin adds the others with 'inkan admin operator add'.`,
		Example: `  inkan admin --config /etc/inkan/node.yaml init --name "Sato (admin)" --key-out admin.key --cert-out admin.pem`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" || keyOut == "" || certOut == "" {
				return errors.New("give --name, --key-out and --cert-out")
			}
			if f.socket == "" && f.dataDir == "" && f.config == "" {
				return errors.New("init runs on the first node, through its admin socket: give --socket, --data-dir or --config")
			}
			csr, err := newOperatorKey(keyOut, name)
			if err != nil {
				return fmt.Errorf("--key-out: %w", err)
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				op, err := ac.InitOperators(ctx, admin.OperatorInit{Name: name, CSR: string(csr)})
				if err != nil {
					os.Remove(keyOut)
					return nil, nil, err
				}
				if err := os.WriteFile(certOut, []byte(op.Certificate), 0o644); err != nil {
					return nil, nil, fmt.Errorf("--cert-out: %w", err)
				}
				return op, func(w io.Writer) {
					fmt.Fprintf(w, "first admin %s (%s): certificate %s, key %s\n", op.ID, op.Fingerprint, certOut, keyOut)
					fmt.Fprintln(w, "From now on administer the cluster as an operator, over mutual TLS:")
					fmt.Fprintf(w, "  inkan admin --url https://<admin.listen> --cacert <data_dir>/cluster-ca.pem --cert %s --key %s cluster status\n", certOut, keyOut)
				}, nil
			})
		},
	}
	cmd.Flags().StringVar(&name, "name", "", "the admin's name (kept in the cluster's state only)")
	cmd.Flags().StringVar(&keyOut, "key-out", "", "where to write the new admin key (a new file, mode 0600)")
	cmd.Flags().StringVar(&certOut, "cert-out", "", "where to write the admin's certificate")
	return cmd
}

// newAdminOperatorCmd is `inkan admin operator`.
func newAdminOperatorCmd(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "operator",
		Short: "Operators: request (make your key and CSR), add, list, remove",
	}
	var name, keyOut, csrOut string
	request := &cobra.Command{
		Use:   "request --name NAME --key-out FILE --csr-out FILE",
		Short: "Make your operator key and a CSR to hand to an admin (offline: talks to no node)",
		Example: `  inkan admin operator request --name "Suzuki (officer)" --key-out me.key --csr-out me.csr
  # an admin: inkan admin operator add --csr me.csr --role officer --cert-out suzuki.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if name == "" || keyOut == "" || csrOut == "" {
				return errors.New("give --name, --key-out and --csr-out")
			}
			csr, err := newOperatorKey(keyOut, name)
			if err != nil {
				return fmt.Errorf("--key-out: %w", err)
			}
			if err := os.WriteFile(csrOut, csr, 0o644); err != nil {
				return fmt.Errorf("--csr-out: %w", err)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "key %s (keep it; mode 0600), CSR %s (hand it to an admin)\n", keyOut, csrOut)
			return nil
		},
	}
	request.Flags().StringVar(&name, "name", "", "your name (kept in the cluster's state only)")
	request.Flags().StringVar(&keyOut, "key-out", "", "where to write your new key (a new file, mode 0600)")
	request.Flags().StringVar(&csrOut, "csr-out", "", "where to write the CSR")

	var csrFile, role, certOut, validity, addName string
	add := &cobra.Command{
		Use:     "add --csr FILE --role admin|officer|auditor --name NAME --cert-out FILE",
		Short:   "Add an operator from their CSR (under dual control once the cluster has enough admins)",
		Example: `  inkan admin operator add --csr suzuki.csr --role officer --name "Suzuki" --cert-out suzuki.pem`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if csrFile == "" || role == "" || addName == "" || certOut == "" {
				return errors.New("give --csr, --role, --name and --cert-out")
			}
			csr, err := os.ReadFile(csrFile)
			if err != nil {
				return fmt.Errorf("--csr: %w", err)
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				op, err := ac.AddOperator(ctx, admin.OperatorAdd{Name: addName, Role: role, CSR: string(csr), Validity: validity})
				if err != nil {
					return nil, nil, err
				}
				if err := os.WriteFile(certOut, []byte(op.Certificate), 0o644); err != nil {
					return nil, nil, fmt.Errorf("--cert-out: %w", err)
				}
				return op, func(w io.Writer) {
					fmt.Fprintf(w, "operator %s (%s, %s): certificate %s\n", op.ID, op.Role, op.Fingerprint, certOut)
				}, nil
			})
		},
	}
	add.Flags().StringVar(&csrFile, "csr", "", "the operator's CSR (PEM), from 'operator request'")
	add.Flags().StringVar(&role, "role", "", "admin, officer or auditor")
	add.Flags().StringVar(&addName, "name", "", "the operator's name (kept in the cluster's state only)")
	add.Flags().StringVar(&certOut, "cert-out", "", "where to write their certificate")
	add.Flags().StringVar(&validity, "validity", "", "certificate validity (default 8760h)")

	list := &cobra.Command{
		Use:     "list",
		Example: `  inkan admin operator list -o json`,
		Short:   "List the operators",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				ops, err := ac.Operators(ctx)
				return ops, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tNAME\tROLE\tSTATUS\tNOT AFTER")
					for _, o := range ops {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", o.ID, o.Name, o.Role, o.Status, o.NotAfter.Format("2006-01-02"))
					}
					tw.Flush()
				}, err
			})
		},
	}
	var showOut string
	show := &cobra.Command{
		Use:     "show ID [--cert-out FILE]",
		Example: `  inkan admin operator show op-05de0a66d96c0f90 --cert-out suzuki.pem`,
		Short:   "Show an operator, and write their certificate (e.g. once an approved add has run)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				op, err := ac.Operator(ctx, args[0])
				if err == nil && showOut != "" {
					if err := os.WriteFile(showOut, []byte(op.Certificate), 0o644); err != nil {
						return nil, nil, fmt.Errorf("--cert-out: %w", err)
					}
				}
				return op, func(w io.Writer) {
					fmt.Fprintf(w, "%s  %s  %s  %s  until %s\n", op.ID, op.Name, op.Role, op.Status, op.NotAfter.Format("2006-01-02"))
				}, err
			})
		},
	}
	show.Flags().StringVar(&showOut, "cert-out", "", "write the operator's certificate here")
	var yes bool
	remove := &cobra.Command{
		Use:     "remove ID",
		Example: `  inkan admin operator remove op-05de0a66d96c0f90`,
		Short:   "Remove an operator (their certificate stops working at once)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirm(cmd, yes, fmt.Sprintf("Remove operator %s?", args[0])); err != nil {
				return err
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				err := ac.RemoveOperator(ctx, args[0])
				return map[string]string{"removed": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "operator %s removed\n", args[0]) }, err
			})
		},
	}
	remove.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.AddCommand(request, add, list, show, remove)
	return cmd
}

// newAdminApprovalsCmd is `inkan admin approvals`: dual control.
func newAdminApprovalsCmd(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "Requests under dual control: list, show, approve, reject",
		Long: `Operations named by the cluster's rules of dual control (CA key generation and import,
policy changes, adding or removing operators and voters, bulk revocations) are proposed
rather than run, and run on the leader once enough other operators with the rule's role
approve them. An approval is your signature (with --key) over the request's digest;
the proposer cannot approve their own request.`,
	}
	var all bool
	list := &cobra.Command{
		Use: "list [--all]",
		Example: `  inkan admin approvals list
  inkan admin approvals list --all -o json`,
		Short: "List the requests still open (--all: every one)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				qs, err := ac.Approvals(ctx, all)
				return qs, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tACTION\tSTATE\tAPPROVALS\tPROPOSER\tCALL\tEXPIRES")
					for _, q := range qs {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%d/%d %s\t%s\t%s\t%s\n", q.ID, q.Action, q.State, len(q.Approvers), q.Approvals, q.Role,
							q.Proposer, q.Call, q.Expires.Local().Format("2006-01-02 15:04"))
					}
					tw.Flush()
				}, err
			})
		},
	}
	list.Flags().BoolVar(&all, "all", false, "also the requests that have ended")
	show := &cobra.Command{
		Use:     "show ID",
		Example: `  inkan admin approvals show rq-e6d692dafb78b996`,
		Short:   "Show a request: what it would run, and who approved it",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				q, err := ac.Approval(ctx, args[0])
				if err == nil {
					err = q.Check()
				}
				return q, func(w io.Writer) { printApproval(w, q) }, err
			})
		},
	}
	decide := func(approve bool) *cobra.Command {
		verb := "reject"
		if approve {
			verb = "approve"
		}
		return &cobra.Command{
			Use:     verb + " ID",
			Short:   map[bool]string{true: "Approve a request (signed with your --key)", false: "Reject a request (signed with your --key); it will not run"}[approve],
			Example: "  inkan admin approvals show rq-e6d692dafb78b996    # read what it would run first\n  inkan admin approvals " + verb + " rq-e6d692dafb78b996",
			Args:    cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				key, err := f.operatorKey()
				if err != nil {
					return err
				}
				return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
					q, err := ac.Approval(ctx, args[0])
					if err != nil {
						return nil, nil, err
					}
					// Sign only what the request's own bytes say it does.
					sig, err := q.Sign(key, approve)
					if err != nil {
						return nil, nil, err
					}
					got, err := ac.Decide(ctx, q.ID, approve, sig)
					return got, func(w io.Writer) {
						fmt.Fprintf(w, "request %s: %s (%d of %d approvals)\n", got.ID, got.State, len(got.Approvers), got.Approvals)
					}, err
				})
			},
		}
	}
	cmd.AddCommand(list, show, decide(true), decide(false))
	return cmd
}

func printApproval(w io.Writer, q *admin.Approval) {
	fmt.Fprintf(w, "request   %s\naction    %s\nstate     %s (%d of %d %s approvals, expires %s)\nproposer  %s\n",
		q.ID, q.Action, q.State, len(q.Approvers), q.Approvals, q.Role, q.Expires.Local().Format(time.RFC3339), q.Proposer)
	if len(q.Approvers) > 0 {
		fmt.Fprintf(w, "approvers %s\n", strings.Join(q.Approvers, ", "))
	}
	fmt.Fprintf(w, "call      %s\nbody      %s\ndigest    %s\n", q.Call, q.Body, q.Digest)
	if q.Result != "" {
		fmt.Fprintf(w, "result    %s\n", q.Result)
	}
	if q.Error != "" {
		fmt.Fprintf(w, "error     %s\n", q.Error)
	}
}
