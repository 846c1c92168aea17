package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/certserial"
)

// newAdminCACmd is `inkan admin ca`: the CA key ceremonies.
func newAdminCACmd(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ca",
		Short: "The issuing CA: make its key, install its certificate, list, retire",
	}
	var req admin.CAInitRequest
	var csrOut string
	initCmd := &cobra.Command{
		Use:   "init --cn NAME [--self-sign | --csr-out FILE]",
		Short: "Make a new issuing CA key in the HSM: a self-signed root, or a CSR for an offline root",
		Long: `init makes a new CA key in the leader's HSM (and, with per-node HSMs, on every voter by
wrapped transfer). With --self-sign the CA certificate is a self-signed root, active at
once: for a lab or a demo. Without it, init writes a CSR for the offline root to sign;
install what the root signs with 'inkan admin ca import'. While a CA certificate is
active, new certificates are issued under it; the one active before keeps its OCSP and
CRLs.`,
		Example: `  inkan admin --config node.yaml ca init --cn "inkan demo CA" --self-sign
  inkan admin --config node.yaml ca init --cn "Example Derived ID CA G1" --org "Example KK" --country JP --csr-out ca.csr`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !req.SelfSign && csrOut == "" {
				return fmt.Errorf("give --self-sign, or --csr-out FILE for the offline root's CSR")
			}
			if req.SelfSign && csrOut != "" {
				return fmt.Errorf("--self-sign makes no CSR: drop --csr-out")
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				out, err := ac.InitCA(ctx, req)
				if err != nil {
					return nil, nil, err
				}
				if csrOut != "" {
					if err := os.WriteFile(csrOut, []byte(out.CSR), 0o644); err != nil {
						return nil, nil, fmt.Errorf("--csr-out: %w", err)
					}
				}
				return out, func(w io.Writer) {
					if out.Certificate != "" {
						fmt.Fprintf(w, "CA %s made and active (self-signed root):\n%s", out.ID, out.Certificate)
						return
					}
					fmt.Fprintf(w, "CA %s made, pending its certificate; CSR written to %s.\n"+
						"Have the offline root sign it, then: inkan admin ca import %s --certificate ca.pem --chain root.pem\n", out.ID, csrOut, out.ID)
				}, nil
			})
		},
	}
	fl := initCmd.Flags()
	fl.StringVar(&req.Subject.CommonName, "cn", "", "the CA certificate's subject common name")
	fl.StringVar(&req.Subject.Organization, "org", "", "the subject's organization")
	fl.StringVar(&req.Subject.Country, "country", "", "the subject's country (two letters)")
	fl.StringVar(&req.Key, "key-type", "ec-p256", "key type: ec-p256, ec-p384 or rsa-3072")
	fl.BoolVar(&req.SelfSign, "self-sign", false, "make a self-signed root, active at once (lab, demo)")
	fl.StringVar(&req.Validity, "validity", "", "validity of a self-signed root (default 87600h)")
	fl.StringVar(&csrOut, "csr-out", "", "write the CSR for the offline root here")

	var certFile, chainFile string
	importCmd := &cobra.Command{
		Use:   "import ID --certificate FILE --chain FILE",
		Short: "Install the CA certificate the offline root signed, and make it active",
		Long: `import installs the certificate for a CA made by 'ca init' without --self-sign. The node
checks that it is a CA certificate for that CA's key and that it verifies up to the
root, the last certificate of --chain (issuer first). The CA active before is retired:
it issues no more, and its certificates keep their OCSP and CRLs.`,
		Example: `  inkan admin --config node.yaml ca import 7f3a… --certificate ca.pem --chain root.pem`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cert, err := os.ReadFile(certFile)
			if err != nil {
				return fmt.Errorf("--certificate: %w", err)
			}
			chain, err := os.ReadFile(chainFile)
			if err != nil {
				return fmt.Errorf("--chain: %w", err)
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				is, err := ac.ImportCA(ctx, args[0], admin.CAImportRequest{Certificate: string(cert), Chain: string(chain)})
				return is, func(w io.Writer) { fmt.Fprintf(w, "CA %s installed and active: %s\n", is.ID, is.Subject) }, err
			})
		},
	}
	importCmd.Flags().StringVar(&certFile, "certificate", "", "the CA certificate (PEM)")
	importCmd.Flags().StringVar(&chainFile, "chain", "", "the certificates above it, issuer first, ending with the root (PEM)")
	_ = importCmd.MarkFlagRequired("certificate")
	_ = importCmd.MarkFlagRequired("chain")

	list := &cobra.Command{
		Use:     "list",
		Example: `  inkan admin --config node.yaml ca list`,
		Short:   "List the cluster's CA certificates",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				is, err := ac.Issuers(ctx)
				return is, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tSTATUS\tSUBJECT\tNOT AFTER\tCRL SHARDS")
					for _, i := range is {
						na := "-"
						if !i.NotAfter.IsZero() {
							na = i.NotAfter.Format("2006-01-02")
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\n", i.ID, i.Status, i.Subject, na, i.CRLShards)
					}
					tw.Flush()
				}, err
			})
		},
	}
	certCmd := &cobra.Command{
		Use:   "cert [ID]",
		Short: "Print a CA certificate in PEM (the active one if no ID is given): the trust anchor relying parties need",
		Example: `  inkan admin --config node.yaml ca cert > ca.pem
  openssl verify -CAfile ca.pem subscriber.pem`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				is, err := ac.Issuers(ctx)
				if err != nil {
					return nil, nil, err
				}
				for _, i := range is {
					if (len(args) == 1 && i.ID == args[0]) || (len(args) == 0 && i.Status == "active") {
						if i.Certificate == "" {
							return nil, nil, fmt.Errorf("CA %s has no certificate yet (import it with 'inkan admin ca import')", i.ID)
						}
						return i, func(w io.Writer) { fmt.Fprint(w, i.Certificate) }, nil
					}
				}
				if len(args) == 1 {
					return nil, nil, fmt.Errorf("no CA %q (see 'inkan admin ca list')", args[0])
				}
				return nil, nil, fmt.Errorf("no active CA (make one with 'inkan admin ca init')")
			})
		},
	}
	var yes bool
	retire := &cobra.Command{
		Use:     "retire ID",
		Example: `  inkan admin --config node.yaml ca retire ca-20261125-5dedf293 --yes`,
		Short:   "Stop issuance under a CA certificate (its certificates keep OCSP and CRLs)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := confirm(cmd, yes, fmt.Sprintf("Retire CA %s? It will issue no more certificates.", args[0])); err != nil {
				return err
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				err := ac.RetireCA(ctx, args[0])
				return map[string]string{"retired": args[0]}, func(w io.Writer) { fmt.Fprintf(w, "CA %s retired\n", args[0]) }, err
			})
		},
	}
	retire.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	cmd.AddCommand(initCmd, importCmd, list, certCmd, retire)
	return cmd
}

// newAdminCertCmd is `inkan admin cert`: looking up and changing certificates.
func newAdminCertCmd(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "cert",
		Short: "Certificates: list, show, revoke, hold, release",
	}
	show := &cobra.Command{
		Use:     "show SERIAL",
		Short:   "Show what the cluster records of a certificate (the serial as enroll or openssl prints it)",
		Example: `  inkan admin --config node.yaml cert show 5c:1e:…`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			serial, err := serialArg("SERIAL", args[0])
			if err != nil {
				return err
			}
			return certCall(cmd, f, func(ctx context.Context, ac *admin.Client) (*admin.CertInfo, error) { return ac.Cert(ctx, serial) })
		},
	}
	var lf struct{ status, profile, kind, issuedAfter, issuedBefore, expiring, after string }
	var limit int
	list := &cobra.Command{
		Use:   "list [--status S] [--profile P] [--issued-after T] [--issued-before T] [--expiring-before T] [--limit N]",
		Short: "List certificates, filtered",
		Long: `list shows the cluster's certificates in serial order per CA. Times are RFC 3339
(2026-01-02T15:04:05Z); --expiring-before also takes a duration from now (720h).
--limit bounds the list (100; at most 10000); --after SERIAL continues after the last
one shown.`,
		Example: `  inkan admin cert list --status held
  inkan admin cert list --profile signing --expiring-before 720h --output json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			set := func(k, v string) {
				if v != "" {
					q.Set(k, v)
				}
			}
			if d, err := time.ParseDuration(lf.expiring); err == nil {
				lf.expiring = time.Now().Add(d).UTC().Format(time.RFC3339)
			}
			set("status", lf.status)
			set("profile", lf.profile)
			set("kind", lf.kind)
			set("issued_after", lf.issuedAfter)
			set("issued_before", lf.issuedBefore)
			set("expiring_before", lf.expiring)
			if lf.after != "" {
				after, err := serialArg("--after", lf.after)
				if err != nil {
					return err
				}
				set("after", after)
			}
			if limit != 0 {
				q.Set("limit", strconv.Itoa(limit))
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				cs, err := ac.Certs(ctx, q)
				return cs, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "SERIAL\tPROFILE\tSTATUS\tISSUED\tNOT AFTER")
					for _, c := range cs {
						st := c.Status
						if c.Reason != "" {
							st += " (" + c.Reason + ")"
						}
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Serial, c.Profile, st, c.IssuedAt.Local().Format("2006-01-02 15:04"), c.NotAfter.Local().Format("2006-01-02"))
					}
					tw.Flush()
				}, err
			})
		},
	}
	lfl := list.Flags()
	lfl.StringVar(&lf.status, "status", "", "good, revoked, held or pending")
	lfl.StringVar(&lf.profile, "profile", "", "the profile's name")
	lfl.StringVar(&lf.kind, "kind", "", "derived or ocsp-responder")
	lfl.StringVar(&lf.issuedAfter, "issued-after", "", "issued after this time")
	lfl.StringVar(&lf.issuedBefore, "issued-before", "", "issued before this time")
	lfl.StringVar(&lf.expiring, "expiring-before", "", "not after this time (or this long from now)")
	lfl.StringVar(&lf.after, "after", "", "continue after this serial")
	lfl.IntVar(&limit, "limit", 0, "at most this many (default 100)")

	var reason, fromFile string
	var yes bool
	revoke := &cobra.Command{
		Use:   "revoke SERIAL... --reason REASON",
		Short: "Revoke certificates (for good: OCSP and CRLs say so within seconds)",
		Long: `revoke revokes certificates with an RFC 5280 reason: unspecified, keyCompromise,
cACompromise, affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn
or aACompromise. It cannot be undone (a hold can: see 'cert hold'). It returns once
the node that took the request answers revoked over OCSP; every other node answers so
as it applies the change (within 100 ms of it), and each certificate's CRL shard lists
it within five seconds. Several serials (or --from-file, one per line) are revoked in one request,
with progress shown; more than 10 at once need two more officers' approval.`,
		Example: `  inkan admin --config node.yaml cert revoke 5c1e… --reason keyCompromise
  inkan admin --config node.yaml cert revoke --from-file compromised.txt --reason keyCompromise --yes`,
		RunE: func(cmd *cobra.Command, args []string) error {
			if reason == "" {
				return fmt.Errorf("--reason: required (e.g. keyCompromise, superseded, cessationOfOperation)")
			}
			var serials []string
			for _, a := range args {
				s, err := serialArg("SERIAL", a)
				if err != nil {
					return err
				}
				serials = append(serials, s)
			}
			if fromFile != "" {
				b, err := os.ReadFile(fromFile)
				if err != nil {
					return fmt.Errorf("--from-file: %w", err)
				}
				for i, a := range strings.Fields(string(b)) {
					s, err := serialArg(fmt.Sprintf("--from-file %s: entry %d", fromFile, i+1), a)
					if err != nil {
						return err
					}
					serials = append(serials, s)
				}
			}
			switch len(serials) {
			case 0:
				return fmt.Errorf("give the serials (or --from-file)")
			case 1:
				if err := confirm(cmd, yes, fmt.Sprintf("Revoke certificate %s (%s)? This cannot be undone.", serials[0], reason)); err != nil {
					return err
				}
				return certCall(cmd, f, func(ctx context.Context, ac *admin.Client) (*admin.CertInfo, error) {
					return ac.Revoke(ctx, serials[0], reason)
				})
			}
			if err := confirm(cmd, yes, fmt.Sprintf("Revoke %d certificates (%s)? This cannot be undone.", len(serials), reason)); err != nil {
				return err
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				progress := newProgress(cmd.ErrOrStderr(), "revoked")
				out, err := ac.BulkRevoke(ctx, admin.BulkRevokeRequest{Serials: serials, Reason: reason}, func(p admin.BulkProgress) {
					progress(p.Done, p.Total)
				})
				if err != nil {
					return nil, nil, err
				}
				progress(out.Done, out.Total)
				return out, func(w io.Writer) {
					fmt.Fprintf(w, "revoked %d of %d\n", out.Revoked, out.Total)
					for _, fl := range out.Failed {
						fmt.Fprintf(w, "  not revoked: %s: %s\n", fl.Serial, fl.Error)
					}
					if out.Error != "" {
						fmt.Fprintf(w, "stopped after %d: %s\n", out.Done, out.Error)
					}
				}, nil
			})
		},
	}
	revoke.Flags().StringVar(&reason, "reason", "", "the RFC 5280 reason")
	revoke.Flags().StringVar(&fromFile, "from-file", "", "read serials from this file (one per line, as enroll or openssl prints them)")
	revoke.Flags().BoolVarP(&yes, "yes", "y", false, "do not ask for confirmation")
	hold := &cobra.Command{
		Use:     "hold SERIAL",
		Example: `  inkan admin --config node.yaml cert hold 5c1e…`,
		Short:   "Put a certificate on hold (revoked with certificateHold until released)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			serial, err := serialArg("SERIAL", args[0])
			if err != nil {
				return err
			}
			return certCall(cmd, f, func(ctx context.Context, ac *admin.Client) (*admin.CertInfo, error) { return ac.Hold(ctx, serial) })
		},
	}
	release := &cobra.Command{
		Use:     "release SERIAL",
		Example: `  inkan admin --config node.yaml cert release 5c1e…`,
		Short:   "Take a certificate off hold",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			serial, err := serialArg("SERIAL", args[0])
			if err != nil {
				return err
			}
			return certCall(cmd, f, func(ctx context.Context, ac *admin.Client) (*admin.CertInfo, error) {
				return ac.Release(ctx, serial)
			})
		},
	}
	cmd.AddCommand(list, show, revoke, hold, release)
	return cmd
}

// serialArg reads a serial in any form docs/operations.md lists ("Serial
// numbers") and gives the one inkan prints, so prompts and requests show it;
// name is the argument's, for the refusal.
func serialArg(name, s string) (string, error) {
	n, err := certserial.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%s %w", name, err)
	}
	return certserial.Format(n), nil
}

func certCall(cmd *cobra.Command, f *adminFlags, call func(context.Context, *admin.Client) (*admin.CertInfo, error)) error {
	return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
		ci, err := call(ctx, ac)
		return ci, func(w io.Writer) {
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "serial\t%s\n", ci.Serial)
			fmt.Fprintf(tw, "issuer\t%s\n", ci.Issuer)
			fmt.Fprintf(tw, "kind\t%s\n", ci.Kind)
			if ci.Profile != "" {
				fmt.Fprintf(tw, "profile\t%s (policy version %d)\n", ci.Profile, ci.PolicyVersion)
			}
			status := ci.Status
			if ci.Reason != "" {
				status += fmt.Sprintf(" (%s, %s)", ci.Reason, ci.RevokedAt.Local().Format("2006-01-02 15:04:05"))
			}
			fmt.Fprintf(tw, "status\t%s\n", status)
			fmt.Fprintf(tw, "not after\t%s\n", ci.NotAfter.Local().Format("2006-01-02 15:04:05"))
			tw.Flush()
		}, err
	})
}

// confirm asks on the terminal unless yes; without a terminal it refuses, so a
// script must say --yes.
func confirm(cmd *cobra.Command, yes bool, question string) error {
	if yes {
		return nil
	}
	if fi, err := os.Stdin.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return fmt.Errorf("not a terminal: confirm with --yes")
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "%s [y/N] ", question)
	line, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(line)); a != "y" && a != "yes" {
		return fmt.Errorf("not confirmed")
	}
	return nil
}

// newProgress reports a long operation's progress: one line rewritten in place
// on a terminal, plain lines otherwise.
func newProgress(w io.Writer, what string) func(done, total int) {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return func(done, total int) {
		if tty {
			fmt.Fprintf(w, "\r%s %d/%d", what, done, total)
			if done == total {
				fmt.Fprintln(w)
			}
			return
		}
		fmt.Fprintf(w, "%s %d/%d\n", what, done, total)
	}
}
