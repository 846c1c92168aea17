package main

import (
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func main() {
	// A one-shot command prints what it did itself: the INFO lines of the
	// packages it calls (a key generated on a token) are noise on a
	// terminal, and Go's default logger writes them in another format than
	// the node's. Warnings and errors still show, as key=value lines. The
	// server sets its own level (cliLogLevel).
	cliLogLevel.Set(slog.LevelWarn)
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: &cliLogLevel})))
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "inkan:", err)
		os.Exit(1)
	}
}

// cliLogLevel is the level of the default logger: WARN for a one-shot
// command, INFO for the server, where the node logs.
var cliLogLevel slog.LevelVar

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
