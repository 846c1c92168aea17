package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// raftLogger is hashicorp/raft's logger (an hclog.Logger) writing to the node's
// slog.Logger: one record per line, with slog's time only, raft's level as slog's
// level (Trace is slog's DEBUG-4), component=raft, and raft's key-value pairs in
// the group "raft" (raft.term=3). Two kinds of line are logged lower than raft logs them, on
// purpose:
//
//   - Once the cluster is shutting down (quiet, set by Cluster.stop before it
//     stops Raft), raft's WARN and ERROR lines go to DEBUG: its transport
//     complains of the connections the shutdown closes ("failed to decode
//     incoming command: use of closed network connection"), which is the
//     shutdown working, not a fault. A line about a closed connection or a
//     stopped Raft (net.ErrClosed, raft.ErrRaftShutdown, ErrTransportShutdown)
//     goes to DEBUG at any time, for the same reason.
//   - "heartbeat timeout reached, starting election" with no last leader is the
//     first election since this node started: every node that starts without
//     hearing from a leader first (a single voter always; a whole cluster
//     started together) holds one, after one heartbeat timeout. Nothing was lost,
//     so it is INFO; the same line after a leader was known stays WARN.
type raftLogger struct {
	log   *slog.Logger
	name  string
	args  []any
	quiet *atomic.Bool // may be nil: never quiet
}

// newHCLogger is raft's logger for log. quiet, if not nil, is set while the
// cluster shuts down.
func newHCLogger(log *slog.Logger, quiet *atomic.Bool) hclog.Logger {
	return &raftLogger{log: log, name: "raft", quiet: quiet}
}

var _ hclog.Logger = (*raftLogger)(nil)

// levels maps hclog's levels to slog's.
func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	}
	return slog.LevelInfo // Info, NoLevel
}

const firstElection = "heartbeat timeout reached, starting election"

func (l *raftLogger) Log(level hclog.Level, msg string, args ...any) {
	if level == hclog.Off {
		return
	}
	lvl := slogLevel(level)
	all := append(append([]any(nil), l.args...), args...)
	if lvl >= slog.LevelWarn {
		switch {
		case l.quiet != nil && l.quiet.Load(), aboutShutdown(all):
			lvl = slog.LevelDebug
		case msg == firstElection && argValue(all, "last-leader-id") == raft.ServerID(""):
			lvl = slog.LevelInfo
		}
	}
	ctx := context.Background()
	if !l.log.Enabled(ctx, lvl) {
		return
	}
	r := slog.NewRecord(time.Now(), lvl, "raft: "+msg, 0)
	r.AddAttrs(slog.String("component", l.name))
	if len(all) > 0 {
		// Raft's pairs go in a group of their own: its keys ("node", "error")
		// must not pass for the node's.
		attrs := make([]any, 0, len(all)/2+1)
		for i := 0; i < len(all); i += 2 {
			if i+1 == len(all) {
				attrs = append(attrs, slog.Any(hclog.MissingKey, plain(all[i])))
				break
			}
			key, ok := all[i].(string)
			if !ok {
				key = fmt.Sprint(all[i])
			}
			// A few of raft's keys hold a space ("backoff time"): a text
			// handler would quote the whole dotted key. Raft's own
			// separator is the hyphen.
			key = strings.ReplaceAll(key, " ", "-")
			attrs = append(attrs, slog.Any(key, plain(all[i+1])))
		}
		r.AddAttrs(slog.Group("raft", attrs...))
	}
	_ = l.log.Handler().Handle(ctx, r)
}

// aboutShutdown reports whether a line's error is one a shutdown causes.
func aboutShutdown(args []any) bool {
	for _, a := range args {
		if err, ok := a.(error); ok &&
			(errors.Is(err, net.ErrClosed) || errors.Is(err, raft.ErrRaftShutdown) || errors.Is(err, raft.ErrTransportShutdown)) {
			return true
		}
	}
	return false
}

// argValue is the value of key in hclog's key-value pairs (nil if absent).
func argValue(args []any, key string) any {
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok && k == key {
			return args[i+1]
		}
	}
	return nil
}

// plain turns raft's values into ones every slog handler prints well: errors and
// basic types stay; hclog's formatting types are applied; anything else (a
// *raft.Raft, a raft.Server) becomes its fmt form, as hclog printed it.
func plain(v any) any {
	switch v := v.(type) {
	case nil, string, bool, int, int32, int64, uint, uint32, uint64, float64, time.Duration, time.Time, error:
		return v
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		if f, ok := v[0].(string); ok {
			return fmt.Sprintf(f, v[1:]...)
		}
		return fmt.Sprint(v...)
	case hclog.Hex:
		return fmt.Sprintf("0x%x", int(v))
	case hclog.Octal:
		return fmt.Sprintf("0%o", int(v))
	case hclog.Binary:
		return fmt.Sprintf("0b%b", int(v))
	}
	return fmt.Sprint(v)
}

func (l *raftLogger) Trace(msg string, args ...any) { l.Log(hclog.Trace, msg, args...) }
func (l *raftLogger) Debug(msg string, args ...any) { l.Log(hclog.Debug, msg, args...) }
func (l *raftLogger) Info(msg string, args ...any)  { l.Log(hclog.Info, msg, args...) }
func (l *raftLogger) Warn(msg string, args ...any)  { l.Log(hclog.Warn, msg, args...) }
func (l *raftLogger) Error(msg string, args ...any) { l.Log(hclog.Error, msg, args...) }

func (l *raftLogger) enabled(level hclog.Level) bool {
	return l.log.Enabled(context.Background(), slogLevel(level))
}

func (l *raftLogger) IsTrace() bool { return l.enabled(hclog.Trace) }
func (l *raftLogger) IsDebug() bool { return l.enabled(hclog.Debug) }
func (l *raftLogger) IsInfo() bool  { return l.enabled(hclog.Info) }
func (l *raftLogger) IsWarn() bool  { return l.enabled(hclog.Warn) }
func (l *raftLogger) IsError() bool { return l.enabled(hclog.Error) }

func (l *raftLogger) ImpliedArgs() []any { return l.args }

func (l *raftLogger) With(args ...any) hclog.Logger {
	c := *l
	c.args = append(append([]any(nil), l.args...), args...)
	return &c
}

func (l *raftLogger) Name() string { return l.name }

func (l *raftLogger) Named(name string) hclog.Logger {
	c := *l
	c.name = l.name + "." + name
	return &c
}

func (l *raftLogger) ResetNamed(name string) hclog.Logger {
	c := *l
	c.name = name
	return &c
}

// SetLevel does nothing: the node's slog level decides.
func (l *raftLogger) SetLevel(hclog.Level) {}

// GetLevel is the most verbose level the node's slog logger lets through.
func (l *raftLogger) GetLevel() hclog.Level {
	for _, lv := range []hclog.Level{hclog.Trace, hclog.Debug, hclog.Info, hclog.Warn, hclog.Error} {
		if l.enabled(lv) {
			return lv
		}
	}
	return hclog.Off
}

// StandardLogger and StandardWriter serve code that wants a *log.Logger: its
// lines are logged at INFO (raft itself does not use them).
func (l *raftLogger) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return log.New(l.StandardWriter(nil), "", 0)
}

func (l *raftLogger) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return stdWriter{l}
}

type stdWriter struct{ l *raftLogger }

func (w stdWriter) Write(p []byte) (int, error) {
	msg := string(p)
	for len(msg) > 0 && (msg[len(msg)-1] == '\n' || msg[len(msg)-1] == '\r') {
		msg = msg[:len(msg)-1]
	}
	w.l.Log(hclog.Info, msg)
	return len(p), nil
}
