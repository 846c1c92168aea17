package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/inkan-pki/inkan/admin"
)

// newAdminTSACmd is `inkan admin tsa`: the time-stamping authority's ceremonies.
func newAdminTSACmd(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "tsa",
		Short: "The time-stamping authority (RFC 3161): make its key, certify it, show it",
	}
	var initReq admin.TSAInitRequest
	initCmd := &cobra.Command{
		Use:   "init [--key-type ec-p256]",
		Short: "Make a new TSA key in the HSMs (under the rule of ca.key.generate)",
		Long: `init makes a new time-stamping key in the HSM of the node that runs it and sends it,
wrapped, to every other voter's approved transport key, as a CA key is made. It is an
action of ca.key.generate: with operators, it is proposed and runs once the rule's
approvers approve it. The key signs nothing until 'tsa cert' installs a certificate for it.`,
		Example: `  inkan admin --url https://10.0.0.1:7444 --cacert cluster-ca.pem --cert me.pem --key me.key tsa init
  inkan admin --config node.yaml tsa init --key-type ec-p384`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				k, err := ac.InitTSA(ctx, initReq)
				return k, func(w io.Writer) {
					fmt.Fprintf(w, "TSA key %s made (%s, public key %s).\nNext: inkan admin tsa cert --key %s\n", k.ID, k.Type, k.PublicKey, k.ID)
				}, err
			})
		},
	}
	initCmd.Flags().StringVar(&initReq.Key, "key-type", "ec-p256", "key type: ec-p256, ec-p384 or rsa-3072")

	var certReq admin.TSACertRequest
	certCmd := &cobra.Command{
		Use:   "cert [--key ID] [--cn NAME] [--lifetime 43800h]",
		Short: "Have the active CA certify a TSA key, and sign tokens under it from now on",
		Long: `cert has the active CA issue the TSA key's certificate (extended key usage timeStamping
alone, critical; keyUsage digitalSignature) through its pipeline, so OCSP and CRLs answer
for it, and installs it: every voter with a tsa section signs tokens with the key under
it from then on. It prints the certificate: relying parties verify tokens with it and
the CA certificate (openssl ts -verify -CAfile ca.pem -untrusted tsa.pem).`,
		Example: `  inkan admin --config node.yaml tsa cert > tsa.pem
  inkan admin --config node.yaml tsa cert --key tsa-20261207-1a2b3c4d --cn "Example TSA 1" --lifetime 26280h`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				c, err := ac.CertifyTSA(ctx, certReq)
				return c, func(w io.Writer) { fmt.Fprint(w, c.Certificate) }, err
			})
		},
	}
	fl := certCmd.Flags()
	fl.StringVar(&certReq.Key, "key", "", "the TSA key's ID (default: the newest)")
	fl.StringVar(&certReq.CommonName, "cn", "", "the certificate's common name (default: inkan TSA <key ID>)")
	fl.StringVar(&certReq.Lifetime, "lifetime", "", "the certificate's validity (default 43800h, at most 87600h and the CA's)")

	var pemOnly bool
	show := &cobra.Command{
		Use:   "show [--pem]",
		Short: "Show the TSA keys, certificates and the tokens each node issued",
		Example: `  inkan admin --config node.yaml tsa show
  inkan admin --config node.yaml tsa show --pem > tsa.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				st, err := ac.TSA(ctx)
				if err != nil {
					return nil, nil, err
				}
				if pemOnly {
					for _, c := range st.Certificates {
						if c.Current {
							return c, func(w io.Writer) { fmt.Fprint(w, c.Certificate) }, nil
						}
					}
					return nil, nil, fmt.Errorf("tsa show --pem: no TSA certificate is installed (inkan admin tsa cert)")
				}
				return st, func(w io.Writer) { printTSA(w, st) }, nil
			})
		},
	}
	show.Flags().BoolVar(&pemOnly, "pem", false, "print only the current TSA certificate (PEM)")
	cmd.AddCommand(initCmd, certCmd, show)
	return cmd
}

func printTSA(w io.Writer, st *admin.TSAStatus) {
	if st.Policy != "" {
		fmt.Fprintf(w, "this node: policy %s, accuracy %s\n", st.Policy, st.Accuracy)
	} else {
		fmt.Fprintln(w, "this node: no tsa section (issues no tokens)")
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nKEY\tTYPE\tPUBLIC KEY\tCREATED\tREQUEST")
	for _, k := range st.Keys {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", k.ID, k.Type, k.PublicKey, k.Created.Format("2006-01-02 15:04"), orDash(k.Request))
	}
	fmt.Fprintln(tw, "\nCERTIFICATE\tKEY\tSUBJECT\tNOT AFTER\tCURRENT")
	for _, c := range st.Certificates {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%v\n", c.Serial, c.Key, c.Subject, c.NotAfter.Format("2006-01-02"), c.Current)
	}
	nodes := make([]string, 0, len(st.Tokens))
	for n := range st.Tokens {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	fmt.Fprintln(tw, "\nNODE\tTOKENS")
	for _, n := range nodes {
		fmt.Fprintf(tw, "%s\t%d\n", n, st.Tokens[n])
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
