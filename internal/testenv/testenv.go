package testenv

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// Context is a context that ends after d, or when the test's cleanups run.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Logger is a logger for the code a test runs: it discards, unless the
// environment sets INKAN_TEST_LOG, when it writes every level to stderr.
func Logger() *slog.Logger {
	if os.Getenv("INKAN_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// Tool returns the path of the command name, looked up in PATH and then in
// dirs (Debian installs nginx in /usr/sbin, which a non-root PATH may lack).
// A test that needs a missing tool fails in CI, where deploy/install-deps.sh
// installs every tool the tests use, and is skipped elsewhere; both messages
// name the Debian package pkg that provides it.
func Tool(t testing.TB, name, pkg string, dirs ...string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range dirs {
		p := filepath.Join(d, name)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is required in CI (deploy/install-deps.sh installs %s)", name, pkg)
	}
	t.Skipf("%s not installed: deploy/install-deps.sh installs %s", name, pkg)
	return ""
}
