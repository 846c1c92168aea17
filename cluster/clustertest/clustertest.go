package clustertest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// Node is a running node with its token.
type Node struct {
	*cluster.Cluster
	Token *softhsm.Token
	Dir   string
}

// Single starts a one-node cluster (bootstrapped) with the handlers and hooks given
// in cfg, on a fresh SoftHSM token and data directory, with short Raft timeouts; it
// waits until the node leads and shuts it down when the test ends. Fields of cfg
// left empty are filled in.
func Single(t testing.TB, cfg cluster.Config) *Node {
	t.Helper()
	return SingleOn(t, softhsm.NewToken(t), cfg)
}

// SingleOn is Single on the token tok, which may hold keys already: e.g. a new
// cluster restored (cfg.Restore) from another node's backup on that node's token,
// as a restore onto the same network HSM.
func SingleOn(t testing.TB, tok *softhsm.Token, cfg cluster.Config) *Node {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	if cfg.BindAddr == "" {
		cfg.BindAddr = "127.0.0.1:0"
	}
	if cfg.KeyVault == nil {
		cfg.KeyVault = cluster.NewHSMVault(tok.HSM)
	}
	cfg.Bootstrap = true
	fast(&cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := cluster.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Shutdown(ctx)
	})
	if err := c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	return &Node{Cluster: c, Token: tok, Dir: cfg.DataDir}
}

// fast sets test-sized Raft timeouts, and a logger that discards, where cfg
// leaves them empty.
func fast(cfg *cluster.Config) {
	if cfg.Logger == nil {
		cfg.Logger = discard()
	}
	set := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	set(&cfg.HeartbeatTimeout, 300*time.Millisecond)
	set(&cfg.ElectionTimeout, 300*time.Millisecond)
	set(&cfg.LeaderLeaseTimeout, 150*time.Millisecond)
	set(&cfg.CommitTimeout, 5*time.Millisecond)
}

// JoinToken grants a join to the node that cfg will open (its DataDir, NodeID
// and KeyVault: the keys are made there now, as `inkan join-keys` makes them),
// as operators do once they have approved its keys, and returns the token for
// cfg.Join. It fixes the node's ID in cfg.DataDir.
func JoinToken(t testing.TB, via *cluster.Cluster, cfg cluster.Config, role cluster.Role) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	keys, err := cluster.PrepareJoin(ctx, cfg.DataDir, cfg.NodeID, cfg.KeyVault)
	if err != nil {
		t.Fatal(err)
	}
	tok, id, hash, err := cluster.NewJoinToken(via.CAFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	if err := via.GrantJoin(ctx, cluster.JoinGrant{TokenID: id, SecretHash: hash, Role: role, Keys: keys, TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	return tok
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
