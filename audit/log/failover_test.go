package log

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/audit"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"go.etcd.io/bbolt"
)

// auditNode is one voter of a test cluster with its own SoftHSM token and its own
// audit component, wired as node will wire it.
type auditNode struct {
	c *cluster.Cluster
	s *Service
}

// openAuditNode bootstraps a cluster, or joins via's as a voter.
func openAuditNode(t *testing.T, ctx context.Context, via *cluster.Cluster) *auditNode {
	t.Helper()
	tok := softhsm.NewToken(t)
	s := newTestService(t, nil)
	vault := cluster.NewHSMVault(tok.HSM)
	cfg := cluster.Config{
		DataDir:            t.TempDir(),
		BindAddr:           "127.0.0.1:0",
		KeyVault:           vault,
		Bootstrap:          via == nil,
		Handlers:           append(s.Handlers(), testHandler{}),
		Hooks:              []cluster.Hook{s.Hook()},
		ReplicatedKeys:     []string{DefaultKeyName},
		Logger:             slog.New(slog.NewTextHandler(io.Discard, nil)),
		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
	}
	if via != nil {
		cfg.Join = &cluster.Join{Addr: via.Addr(), Token: clustertest.JoinToken(t, via, cfg, cluster.Voter)}
	}
	c, err := cluster.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = c.Shutdown(ctx)
	})
	s.Start(c, vault)
	return &auditNode{c: c, s: s}
}

func leaderOf(t *testing.T, nodes []*auditNode) *auditNode {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if st, err := n.c.Status(); err == nil && st.State == "Leader" {
				return n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader")
	return nil
}

// Killing the leader: the next one continues the same tree, with the same key,
// and keeps checkpointing; every checkpoint before and after is consistent.
func TestLeaderChangeContinuesTree(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-node cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := openAuditNode(t, ctx, nil)
	nodes := []*auditNode{first}
	submitMany(t, first.c, 0, 20)
	waitCheckpoint(t, first.s, first.c, 20, 3*time.Second)
	for range 2 {
		nodes = append(nodes, openAuditNode(t, ctx, first.c))
	}
	old := leaderOf(t, nodes)
	submitMany(t, old.c, 100, 60)
	var size uint64
	_ = old.c.View(func(tx *bbolt.Tx) error { size, _ = old.s.appender.Size(tx); return nil })
	before := waitCheckpoint(t, old.s, old.c, size, 2*time.Second)

	oldSrc, err := old.s.NewSource(old.c)
	if err != nil {
		t.Fatal(err)
	}
	if err := old.c.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	var rest []*auditNode
	for _, n := range nodes {
		if n != old {
			rest = append(rest, n)
		}
	}
	leader := leaderOf(t, rest)
	submitMany(t, leader.c, 1000, 60)
	_ = leader.c.View(func(tx *bbolt.Tx) error { size, _ = leader.s.appender.Size(tx); return nil })
	start := time.Now()
	after := waitCheckpoint(t, leader.s, leader.c, size, 3*time.Second)
	t.Logf("checkpoint of size %d before the change, %d after, %v after the new leader's last write", before.Size, after.Size, time.Since(start).Round(time.Millisecond))
	if after.Time.Before(before.Time) {
		t.Errorf("checkpoint times go back: %v then %v", before.Time, after.Time)
	}

	// The new leader's checkpoint verifies with the same key and is consistent with
	// the old leader's.
	src, err := leader.s.NewSource(leader.c)
	if err != nil {
		t.Fatal(err)
	}
	if audit.KeyFingerprint(src.PublicKey()) != audit.KeyFingerprint(oldSrc.PublicKey()) {
		t.Fatal("the audit key changed with the leader")
	}
	if err := after.Verify(src.PublicKey()); err != nil {
		t.Fatal(err)
	}
	var cons [][]byte
	var rootBefore []byte
	if err := leader.c.View(func(tx *bbolt.Tx) error {
		l, err := leader.s.logIn(tx)
		if err != nil {
			return err
		}
		if rootBefore, err = l.rootAt(tx, before.Size); err != nil {
			return err
		}
		cons, err = l.consistencyProof(tx, before.Size, after.Size)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(rootBefore, before.Root) {
		t.Fatalf("the new leader's tree at %d is not the old leader's", before.Size)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, before.Size, after.Size, cons, before.Root, after.Root); err != nil {
		t.Fatal(err)
	}
	// An export of the survivor holds every checkpoint, before and after, as one
	// history.
	dir := filepath.Join(t.TempDir(), "export")
	if _, err := audit.Export(ctx, dir, src, 0); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(os.DirFS(dir), src.PublicKey())
	if err != nil || !rep.OK() {
		t.Fatalf("%v %+v", err, rep)
	}
}
