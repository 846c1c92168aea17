package cluster

import (
	"context"
	"encoding/binary"
	"fmt"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/internal/testenv"
)

// putHandler is the test command "test.put": it counts how often each ID
// was applied (so a test sees a command applied twice) and can be told to
// refuse — after writing, to prove that a refusal undoes its writes.
type putHandler struct{}

type putBody struct {
	ID     string
	Val    []byte
	Refuse bool
}

var bucketTest = []byte("test")

// errToldToRefuse is test.put's refusal: a Refusal, so its code crosses Raft.
var errToldToRefuse = NewRefusal("test.told-to-refuse", "told to refuse")

// errToldToFail is the echo leader call's failure: a Refusal, so its code
// crosses the RPC.
var errToldToFail = NewRefusal("test.told-to-fail", "told to fail")

// edgePut is test.put under another name, opened to nonvoters
// (NonvotersMay): a command an edge may submit. test.put itself, like every
// command whose handler does not say so, only a voter may.
type edgePut struct{ putHandler }

func (edgePut) Type() string       { return "test.edgeput" }
func (edgePut) Buckets() [][]byte  { return nil } // test.put's
func (edgePut) NonvotersMay() bool { return true }

func (putHandler) Type() string      { return "test.put" }
func (putHandler) Versions() []uint  { return []uint{1} }
func (putHandler) Buckets() [][]byte { return [][]byte{bucketTest} }
func (putHandler) Apply(tx *bbolt.Tx, e Entry) ([]byte, error) {
	var b putBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, Refuse(err)
	}
	bk := tx.Bucket(bucketTest)
	n := uint32(0)
	if v := bk.Get([]byte(b.ID)); v != nil {
		n = binary.BigEndian.Uint32(v)
	}
	if err := bk.Put([]byte(b.ID), binary.BigEndian.AppendUint32(nil, n+1)); err != nil {
		return nil, err
	}
	if b.Refuse {
		return nil, Refuse(fmt.Errorf("%s@%d: %w", b.ID, e.Index, errToldToRefuse))
	}
	return []byte(fmt.Sprintf("ok:%s@%d.%d", b.ID, e.Index, e.Seq)), nil
}

func putCmd(t testing.TB, id string, refuse bool, val []byte) Command {
	t.Helper()
	c, err := NewCommand("test.put", 1, putBody{ID: id, Val: val, Refuse: refuse})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// counts returns how often each test.put ID was applied on c.
func counts(t testing.TB, c *Cluster) map[string]uint32 {
	t.Helper()
	m := map[string]uint32{}
	err := c.View(func(tx *bbolt.Tx) error {
		return tx.Bucket(bucketTest).ForEach(func(k, v []byte) error {
			m[string(k)] = binary.BigEndian.Uint32(v)
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// testNode is one node of a test cluster, restartable from its data dir.
type testNode struct {
	t     testing.TB
	cfg   Config
	vault KeyVault
	c     *Cluster
}

// fastConfig has the short Raft timings tests use.
func fastConfig(t testing.TB, vault KeyVault) Config {
	return Config{
		DataDir:            t.TempDir(),
		BindAddr:           "127.0.0.1:0",
		KeyVault:           vault,
		Handlers:           []Handler{putHandler{}, edgePut{}},
		Logger:             testenv.Logger(),
		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		RequestTimeout:     10 * time.Second,
	}
}

func (n *testNode) open(ctx context.Context) {
	n.t.Helper()
	c, err := Open(ctx, n.cfg)
	if err != nil {
		n.t.Fatalf("open %s: %v", n.cfg.DataDir, err)
	}
	n.c = c
	// Later opens restart from the data dir on the same address.
	n.cfg.BindAddr, n.cfg.AdvertiseAddr = c.Addr(), c.Addr()
	n.cfg.Bootstrap, n.cfg.Join, n.cfg.Restore = false, nil, nil
}

// kill stops the node abruptly: connections cut first, no leave.
func (n *testNode) kill() {
	if n.c == nil {
		return
	}
	n.c.net.setCut(true)
	_ = n.c.Shutdown(context.Background())
	n.c = nil
}

// newTestCluster bootstraps one voter and joins voters-1 more (and
// nonvoters) with tokens.
func newTestCluster(t testing.TB, voters int, tweak func(*Config)) []*testNode {
	t.Helper()
	ctx := testenv.Context(t, 60*time.Second)
	var nodes []*testNode
	t.Cleanup(func() {
		for _, n := range nodes {
			n.kill()
		}
	})
	first := &testNode{t: t, vault: newHSMVault(t)}
	first.cfg = fastConfig(t, first.vault)
	first.cfg.Bootstrap = true
	if tweak != nil {
		tweak(&first.cfg)
	}
	first.open(ctx)
	nodes = append(nodes, first)
	waitLeader(t, nodes)
	for i := 1; i < voters; i++ {
		nodes = append(nodes, addNode(t, nodes[0].c, Voter, tweak))
	}
	return nodes
}

func addNode(t testing.TB, via *Cluster, role Role, tweak func(*Config)) *testNode {
	t.Helper()
	ctx := testenv.Context(t, 60*time.Second)
	n := &testNode{t: t, vault: newHSMVault(t)}
	n.cfg = fastConfig(t, n.vault)
	n.cfg.Join = &Join{Addr: via.Addr(), Token: grant(t, via, n.cfg, role, time.Minute)}
	if tweak != nil {
		tweak(&n.cfg)
	}
	n.open(ctx)
	return n
}

// waitLeader waits until the running nodes agree on a leader and returns it.
func waitLeader(t testing.TB, nodes []*testNode) *testNode {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var leader *testNode
		agree := true
		for _, n := range nodes {
			if n.c == nil {
				continue
			}
			id, _ := n.c.Leader()
			if id == "" {
				agree = false
				break
			}
			for _, m := range nodes {
				if m.c != nil && m.c.ID() == id && m.c.raft.State().String() == "Leader" {
					leader = m
				}
			}
		}
		if agree && leader != nil {
			return leader
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader elected")
	return nil
}

func running(nodes []*testNode) []*testNode {
	var out []*testNode
	for _, n := range nodes {
		if n.c != nil {
			out = append(out, n)
		}
	}
	return out
}

// grant grants a join to the node cfg will open, as operators do once they
// have approved the keys it shows (PrepareJoin), and returns its token.
func grant(t testing.TB, via *Cluster, cfg Config, role Role, ttl time.Duration) string {
	t.Helper()
	ctx := testenv.Context(t, 30*time.Second)
	keys, err := PrepareJoin(ctx, cfg.DataDir, cfg.NodeID, cfg.KeyVault)
	if err != nil {
		t.Fatal(err)
	}
	tok, id, hash, err := NewJoinToken(via.CAFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	if err := via.GrantJoin(ctx, JoinGrant{TokenID: id, SecretHash: hash, Role: role, Keys: keys, TTL: ttl}); err != nil {
		t.Fatal(err)
	}
	return tok
}
