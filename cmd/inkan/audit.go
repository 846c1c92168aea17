package main

import (
	"errors"

	"github.com/inkan-pki/inkan/audit"
	"github.com/spf13/cobra"
)

// newAuditCmd is `inkan audit`: the auditor's offline tools. (`export` arrives with
// the node and its audit API.)
func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify an exported audit log offline and prove what is in it",
	}
	cmd.AddCommand(newAuditVerifyCmd(), newAuditProveCmd())
	return cmd
}

func newAuditVerifyCmd() *cobra.Command {
	var key, against string
	cmd := &cobra.Command{
		Use:   "verify DIR [DIR2]",
		Short: "Check every leaf, checkpoint signature and root of an export; with two exports, check they do not fork",
		Long: `verify recomputes every leaf hash and the Merkle tree of the export in DIR, checks
every checkpoint's signature and that its root is the tree's root at its size, and
prints one line per problem with the leaf index (a checkpoint's problems carry its
size). With a second export (DIR2 or --against) it also checks that the two are one
history. It exits non-zero if anything is wrong. Pin the audit key with --key: without
it the export's own audit.pub.pem is used, and its fingerprint is printed to compare.`,
		Args: cobra.RangeArgs(1, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			dirs := args
			if against != "" {
				dirs = append(dirs, against)
			}
			if len(dirs) > 2 {
				return errors.New("audit verify: give DIR2 or --against, not both")
			}
			return audit.VerifyDirs(cmd.OutOrStdout(), key, dirs...)
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the audit public key (PEM) to trust, instead of the export's own")
	cmd.Flags().StringVar(&against, "against", "", "another export of the same log (e.g. an earlier one) to check for a fork")
	return cmd
}

func newAuditProveCmd() *cobra.Command {
	var key, serial string
	cmd := &cobra.Command{
		Use:   "prove --serial S DIR",
		Short: "Show a certificate's issuance and revocation leaves and prove them under the newest checkpoint",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return audit.ProveDir(cmd.OutOrStdout(), key, args[0], serial)
		},
	}
	cmd.Flags().StringVar(&serial, "serial", "", "the certificate's serial in hex (colons and 0x allowed)")
	cmd.Flags().StringVar(&key, "key", "", "the audit public key (PEM) to trust, instead of the export's own")
	_ = cmd.MarkFlagRequired("serial")
	return cmd
}
