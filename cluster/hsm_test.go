package cluster

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

func newHSMVault(t testing.TB) *hsmVault {
	cfg := softhsm.NewToken(t).Config()
	cfg.Logger = testenv.Logger()
	tok, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return NewHSMVault(tok).(*hsmVault)
}

// TestJoinOverSoftHSM runs the join and key transfer with every key in a
// SoftHSM token: the bootstrap node makes the cluster CA key, a joining
// voter receives it wrapped for its transport key, and after a leadership
// transfer that voter signs the next node's certificate with it.
func TestJoinOverSoftHSM(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	var nodes []*testNode
	t.Cleanup(func() {
		for _, n := range nodes {
			n.kill()
		}
	})
	newNode := func() *testNode {
		n := &testNode{t: t, vault: newHSMVault(t)}
		n.cfg = fastConfig(t, n.vault)
		n.cfg.ReplicatedKeys = []string{"ca-signing"}
		return n
	}
	first := newNode()
	first.cfg.Bootstrap = true
	if _, err := first.vault.ReplicatedKey(ctx, "ca-signing", true); err != nil {
		t.Fatal(err)
	}
	first.open(ctx)
	nodes = append(nodes, first)
	waitLeader(t, nodes)

	join := func(via *Cluster, role Role) *testNode {
		n := newNode()
		n.cfg.Join = &Join{Addr: via.Addr(), Token: grant(t, via, n.cfg, role, time.Minute)}
		n.open(ctx)
		nodes = append(nodes, n)
		return n
	}
	second := join(first.c, Voter)

	for _, name := range []string{CAKeyName, "ca-signing"} {
		a, err := first.vault.ReplicatedKey(ctx, name, false)
		if err != nil {
			t.Fatal(err)
		}
		b, err := second.vault.ReplicatedKey(ctx, name, false)
		if err != nil {
			t.Fatalf("joined voter lacks %s: %v", name, err)
		}
		if !publicKeysEqual(a.Public(), b.Public()) {
			t.Fatalf("%s differs between voters", name)
		}
	}
	// Nothing but the node's own keys, its standing transport key (which
	// only unwraps) and the keys it was sent is on a receiving token.
	const standingTransport = "inkan-transport-" + transportKeyName
	onlyKeys := func(n *testNode, want ...string) {
		t.Helper()
		keys, err := n.vault.(*hsmVault).tok.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if k.Class == "private" && !slices.Contains(want, k.Label) {
				t.Errorf("unexpected key on the token: %+v", k)
			}
		}
	}
	onlyKeys(second, nodeKeyLabel, standingTransport, CAKeyName, "ca-signing")

	// Hand leadership to the joined voter (again, if a loaded machine made
	// it bounce back).
	for try := 0; waitLeader(t, nodes) != second; try++ {
		if try == 5 {
			t.Fatal("leadership did not move to the joined voter")
		}
		if err := first.c.TransferLeadership(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	third := join(second.c, Nonvoter)
	if _, err := third.vault.ReplicatedKey(ctx, CAKeyName, false); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("nonvoter's token: CA key lookup err = %v, want not found", err)
	}
	// A replicated key made after the voters joined is shared with them.
	made, err := first.vault.ReplicatedKey(ctx, "ca-2027", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.c.ShareKey(ctx, "ca-2027"); err != nil {
		t.Fatal(err)
	}
	got, err := second.vault.ReplicatedKey(ctx, "ca-2027", false)
	if err != nil || !publicKeysEqual(got.Public(), made.Public()) {
		t.Fatalf("shared key on the other voter: %v", err)
	}
	if _, err := third.vault.ReplicatedKey(ctx, "ca-2027", false); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatal("a nonvoter received a shared key")
	}
	onlyKeys(second, nodeKeyLabel, standingTransport, CAKeyName, "ca-signing", "ca-2027")
	if err := second.c.ShareKey(ctx, "ca-2027"); err != nil { // every voter has it
		t.Fatal(err)
	}
	if _, err := second.vault.ReplicatedKey(ctx, "rogue", true); err != nil {
		t.Fatal(err)
	}
	if _, err := first.vault.ReplicatedKey(ctx, "rogue", true); err != nil {
		t.Fatal(err)
	}
	if err := first.c.ShareKey(ctx, "rogue"); !errors.Is(err, errDifferentKey) {
		t.Fatalf("sharing over a different key of the same name: err = %v", err)
	}

	if _, err := first.c.Submit(ctx, putCmd(t, "x", false, nil)); err != nil {
		t.Fatal(err)
	}
	if err := third.c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if got := counts(t, third.c); got["x"] != 1 {
		t.Fatalf("nonvoter state = %v", got)
	}
}
