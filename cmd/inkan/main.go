package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "inkan:", err)
		os.Exit(1)
	}
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "inkan",
		Short:         "A hardware-backed CA for derived digital IDs anchored on the My Number Card",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	// One line per command family; each lives in its own file.
	root.AddCommand(
		newHSMCmd(),
		newAuditCmd(),
		newServerCmd(),
		newAdminCmd(),
		newEnrollCmd(),
		newJPKISimCmd(),
	)
	return root
}
