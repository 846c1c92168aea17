package testenv

import (
	"context"
	"io"
	"log/slog"
	"os"
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
