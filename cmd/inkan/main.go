package main

import (
	"fmt"
	"os"
	"runtime/debug"

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
		Version:       version(),
	}
	// One line per command family; each lives in its own file.
	root.AddCommand(
		newHSMCmd(),
		newAuditCmd(),
		newServerCmd(),
		newJoinKeysCmd(),
		newAdminCmd(),
		newEnrollCmd(),
		newJPKISimCmd(),
	)
	return root
}

// version is what `inkan --version` prints: the module version and the VCS
// revision the binary was built from (so nodes of a rolling upgrade can be
// told apart), as the Go toolchain recorded them.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown"
	}
	v, rev, dirty, at := bi.Main.Version, "", "", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "+modified"
			}
		case "vcs.time":
			at = " " + s.Value
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		v += " (" + rev + dirty + at + ")"
	}
	return v + " " + bi.GoVersion
}
