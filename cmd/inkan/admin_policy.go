package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/inkan-pki/inkan/admin"
)

// newAdminPolicyCmd is `inkan admin policy`: the profiles in replicated state.
func newAdminPolicyCmd(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "policy",
		Short: "The certificate profiles: list, show, diff, apply",
		Long: `The profiles (policies/*.yaml: what a derived certificate holds, who may get one, what
happens when the card's certificate is revoked) live in the cluster's replicated state
with versions; a new cluster starts with the shipped ones. Certificates record the
version they were issued under. docs/policies.md describes the format.`,
	}
	list := &cobra.Command{
		Use:     "list",
		Example: `  inkan admin --config node.yaml policy list`,
		Short:   "List the active profiles and their versions",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				ps, err := ac.Profiles(ctx)
				return ps, func(w io.Writer) {
					tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
					fmt.Fprintln(tw, "NAME\tVERSION\tKIND\tAPPLIED\tBY")
					for _, p := range ps {
						fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", p.Name, p.Version, p.Kind, p.At.Local().Format("2006-01-02 15:04"), p.Actor)
					}
					tw.Flush()
				}, err
			})
		},
	}
	show := &cobra.Command{
		Use:     "show NAME",
		Example: `  inkan admin --config node.yaml policy show signing > signing.yaml`,
		Short:   "Print the active version of a profile (its file)",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				p, err := ac.Profile(ctx, args[0])
				return p, func(w io.Writer) { fmt.Fprint(w, p.Data) }, err
			})
		},
	}
	diff := &cobra.Command{
		Use:     "diff FILE",
		Short:   "Check a profile file and show how it differs from the active version",
		Example: `  inkan admin --config node.yaml policy diff policies/authentication.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pf, err := readProfileFile(args[0])
			if err != nil {
				return err
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				d, err := ac.DiffPolicy(ctx, pf)
				return d, func(w io.Writer) { fmt.Fprint(w, d.Diff) }, err
			})
		},
	}
	var yes bool
	apply := &cobra.Command{
		Use:   "apply FILE",
		Short: "Make a profile file the active version of its profile",
		Long: `apply checks the file (naming the line and field of any problem), shows how it differs
from the active version, and after confirmation makes it active on every node. Its
version must be higher than the active one's.`,
		Example: `  inkan admin --config node.yaml policy apply signing.yaml`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pf, err := readProfileFile(args[0])
			if err != nil {
				return err
			}
			if !yes {
				if err := withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
					d, err := ac.DiffPolicy(ctx, pf)
					return d, func(w io.Writer) { fmt.Fprint(cmd.ErrOrStderr(), d.Diff) }, err
				}); err != nil {
					return err
				}
				if err := confirm(cmd, false, "Apply this profile on every node?"); err != nil {
					return err
				}
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				p, err := ac.ApplyPolicy(ctx, pf)
				return p, func(w io.Writer) { fmt.Fprintf(w, "profile %s version %d is active\n", p.Name, p.Version) }, err
			})
		},
	}
	apply.Flags().BoolVarP(&yes, "yes", "y", false, "do not show the difference and ask for confirmation")
	cmd.AddCommand(list, show, diff, apply)
	return cmd
}

func readProfileFile(path string) (admin.PolicyFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return admin.PolicyFile{}, err
	}
	return admin.PolicyFile{File: filepath.Base(path), Data: string(b)}, nil
}
