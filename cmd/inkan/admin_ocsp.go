package main

import (
	"context"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/spf13/cobra"

	"github.com/inkan-pki/inkan/admin"
)

// newAdminOCSPCmd is `inkan admin ocsp`: a node's pre-signed OCSP cache.
func newAdminOCSPCmd(f *adminFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ocsp",
		Short: "This node's pre-signed OCSP responses: how many, how old, what is left to sign",
	}
	var watch bool
	status := &cobra.Command{
		Use:   "status [--watch]",
		Short: "Show the node's OCSP cache and re-signing progress (--watch: until the backlog is signed)",
		Example: `  inkan admin --config node.yaml ocsp status
  inkan admin --config node.yaml ocsp status --watch`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !watch {
				return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
					st, err := ac.OCSPStatus(ctx)
					return st, func(w io.Writer) { printOCSPStatus(w, st) }, err
				})
			}
			progress := newProgress(cmd.ErrOrStderr(), "signed")
			start := -1.0
			for {
				var st *admin.OCSPStatus
				err := withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
					var err error
					st, err = ac.OCSPStatus(ctx)
					return st, func(io.Writer) {}, err
				})
				if err != nil {
					return err
				}
				if start < 0 {
					start = st.Backlog
				}
				done := int(start - st.Backlog)
				progress(max(done, 0), int(start))
				if st.Backlog == 0 {
					printOCSPStatus(cmd.OutOrStdout(), st)
					return nil
				}
				select {
				case <-cmdContext(cmd).Done():
					return cmdContext(cmd).Err()
				case <-time.After(time.Second):
				}
			}
		},
	}
	status.Flags().BoolVar(&watch, "watch", false, "poll every second until the refresh backlog is signed")
	cmd.AddCommand(status)
	return cmd
}

func printOCSPStatus(w io.Writer, st *admin.OCSPStatus) {
	fmt.Fprintf(w, "node %s: %.0f responses cached, oldest %s old, %.0f due for re-signing\n",
		st.Node, st.Cached, (time.Duration(st.OldestAge) * time.Second).Round(time.Second), st.Backlog)
	keys := make([]string, 0, len(st.Signed))
	for k := range st.Signed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  signed (%s) %.0f\n", k, st.Signed[k])
	}
	if st.SignErrors > 0 {
		fmt.Fprintf(w, "  sign errors %.0f\n", st.SignErrors)
	}
}
