package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/inkan-pki/inkan/internal/testenv"
)

// logBuffer is an io.Writer safe for the goroutines of a node, read by the test.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuffer) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Len()
}

// timestamp is an RFC 3339 time, as slog and hclog print one.
var timestamp = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d`)

// TestRaftLoggerLevels: raft's levels are slog's, a line carries slog's one
// timestamp and raft's pairs, and the lines this package lowers are lowered for
// the reason given and no other.
func TestRaftLoggerLevels(t *testing.T) {
	var quiet atomic.Bool
	var buf logBuffer
	l := newHCLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug - 4})), &quiet)
	closed := fmt.Errorf("read tcp 127.0.0.1:1->127.0.0.1:2: %w", net.ErrClosed)
	for _, c := range []struct {
		name  string
		quiet bool
		log   func()
		level string
		has   string
	}{
		{"trace", false, func() { l.Trace("t", "k", 1) }, "DEBUG-4", "raft.k=1"},
		{"debug", false, func() { l.Debug("d") }, "DEBUG", ""},
		{"info", false, func() { l.Info("i") }, "INFO", ""},
		{"warn", false, func() { l.Warn("w", "peer", "n2") }, "WARN", "raft.peer=n2"},
		{"error", false, func() { l.Error("e", "error", fmt.Errorf("boom")) }, "ERROR", "raft.error=boom"},
		{"no level", false, func() { l.Log(hclog.NoLevel, "n") }, "INFO", ""},
		{"formatted", false, func() { l.Info("f", "v", hclog.Fmt("%d-%s", 7, "x")) }, "INFO", "raft.v=7-x"},
		{"a key with a space", false, func() { l.Warn("failed to heartbeat", "backoff time", time.Second) }, "WARN", "raft.backoff-time=1s"},
		{"odd pairs", false, func() { l.Info("o", "k") }, "INFO", "raft.EXTRA_VALUE_AT_END=k"},
		{"implied args", false, func() { l.With("snapshot", "s1").Named("snap").Warn("w", "k", 2) }, "WARN", "component=raft.snap raft.snapshot=s1 raft.k=2"},
		{"error while shutting down", true, func() { l.Error("failed to decode incoming command", "error", fmt.Errorf("boom")) }, "DEBUG", ""},
		{"warning while shutting down", true, func() { l.Warn("failed to contact", "server-id", "n2") }, "DEBUG", ""},
		{"closed connection at any time", false, func() { l.Error("failed to accept connection", "error", closed) }, "DEBUG", ""},
		{"raft shut down at any time", false, func() { l.Error("x", "error", raft.ErrRaftShutdown) }, "DEBUG", ""},
		{"first election since start", false, func() {
			l.Warn(firstElection, "last-leader-addr", raft.ServerAddress(""), "last-leader-id", raft.ServerID(""))
		}, "INFO", ""},
		{"election after a leader was lost", false, func() {
			l.Warn(firstElection, "last-leader-addr", raft.ServerAddress("127.0.0.1:1"), "last-leader-id", raft.ServerID("n1"))
		}, "WARN", "raft.last-leader-id=n1"},
		{"another warning without a leader", false, func() { l.Warn("Election timeout reached, restarting election", "last-leader-id", raft.ServerID("")) }, "WARN", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			quiet.Store(c.quiet)
			from := buf.Len()
			c.log()
			line := strings.TrimSuffix(buf.String()[from:], "\n")
			if strings.Count(line, "\n") != 0 || !strings.HasPrefix(line, "time=") {
				t.Fatalf("want one line, got %q", line)
			}
			if n := len(timestamp.FindAllString(line, -1)); n != 1 {
				t.Fatalf("%d timestamps in %q", n, line)
			}
			if !strings.Contains(line, " level="+c.level+" ") || !strings.Contains(line, ` msg="raft: `) && !strings.Contains(line, " msg=raft:") {
				t.Fatalf("line %q: want level %s and msg raft: …", line, c.level)
			}
			if strings.Contains(line, "[WARN]") || strings.Contains(line, "[ERROR]") {
				t.Fatalf("line %q holds hclog's own format", line)
			}
			if c.has != "" && !strings.Contains(line, c.has) {
				t.Fatalf("line %q does not hold %q", line, c.has)
			}
		})
	}
	quiet.Store(false)

	// The node's level decides what raft asks for.
	warnOnly := newHCLogger(slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), nil)
	if warnOnly.IsInfo() || !warnOnly.IsWarn() || warnOnly.GetLevel() != hclog.Warn {
		t.Errorf("a WARN logger: IsInfo %v IsWarn %v GetLevel %v", warnOnly.IsInfo(), warnOnly.IsWarn(), warnOnly.GetLevel())
	}
	from := buf.Len()
	warnOnly.Info("dropped")
	if buf.Len() != from {
		t.Errorf("an INFO line passed a WARN logger: %q", buf.String()[from:])
	}

	// raft's values (a *raft.Raft holds channels) print in JSON too.
	var jbuf logBuffer
	jl := newHCLogger(slog.New(slog.NewJSONHandler(&jbuf, nil)), nil)
	jl.Info("entering leader state", "leader", struct {
		C chan int
		S string
	}{nil, "n1"}, "term", uint64(3))
	var rec map[string]any
	if err := json.Unmarshal(jbuf.b.Bytes(), &rec); err != nil {
		t.Fatalf("JSON line %q: %v", jbuf.String(), err)
	}
	if g, _ := rec["raft"].(map[string]any); g == nil || g["term"] != float64(3) || rec["component"] != "raft" {
		t.Errorf("JSON line: %v", rec)
	}
}

// raftLines are the lines of component=raft at WARN or above.
func raftWarnings(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if strings.Contains(line, "component=raft") && (strings.Contains(line, "level=WARN") || strings.Contains(line, "level=ERROR")) {
			out = append(out, line)
		}
	}
	return out
}

// TestRaftLogsOfStartAndCleanShutdown: a single voter starts and restarts without
// a warning, and nodes of a cluster stopped cleanly log no raft warning or error
// of their own shutdown; every raft line has one timestamp.
func TestRaftLogsOfStartAndCleanShutdown(t *testing.T) {
	var bufs []*logBuffer
	tweak := func(c *Config) {
		b := &logBuffer{}
		bufs = append(bufs, b)
		c.Logger = slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	nodes := newTestCluster(t, 1, tweak)
	ctx := testenv.Context(t, 60*time.Second)
	if err := nodes[0].c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	nodes[0].open(ctx)
	waitLeader(t, nodes)
	if w := raftWarnings(bufs[0].String()); len(w) > 0 {
		t.Errorf("a single voter's start and restart warned:\n%s", strings.Join(w, "\n"))
	}
	if !strings.Contains(bufs[0].String(), `msg="raft: heartbeat timeout reached, starting election"`) {
		t.Errorf("no first election logged:\n%s", bufs[0].String())
	}

	nodes = append(nodes, addNode(t, nodes[0].c, Voter, tweak), addNode(t, nodes[0].c, Voter, tweak))
	leader := waitLeader(t, nodes)
	if _, err := leader.c.Submit(ctx, putCmd(t, "a", false, nil)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // replication and heartbeats in flight
	for i := len(nodes) - 1; i >= 0; i-- {
		from := bufs[i].Len()
		if err := nodes[i].c.Shutdown(ctx); err != nil {
			t.Fatal(err)
		}
		nodes[i].c = nil
		if w := raftWarnings(bufs[i].String()[from:]); len(w) > 0 {
			t.Errorf("node %d's clean shutdown warned:\n%s", i, strings.Join(w, "\n"))
		}
	}
	for i, b := range bufs {
		for _, line := range strings.Split(b.String(), "\n") {
			if strings.Contains(line, "component=raft") && len(timestamp.FindAllString(line, -1)) != 1 {
				t.Errorf("node %d: %q", i, line)
			}
		}
	}
}
