package cluster

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// hsmVault adapts an hsm.Token to KeyVault the way node/ will: keys are
// found by label, replicated keys move with hsm.WrapTransfer.
type hsmVault struct {
	tok  *hsm.Token
	xfer *hsm.WrapTransfer

	mu sync.Mutex
	tp *hsm.TransportKey
}

const nodeKeyLabel = "inkan-node-tls"

func newHSMVault(t testing.TB) *hsmVault {
	cfg := softhsm.NewToken(t).Config()
	cfg.Logger = quietLogger()
	tok, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return &hsmVault{tok: tok, xfer: hsm.NewWrapTransfer(tok)}
}

func (v *hsmVault) key(ctx context.Context, label string, spec *hsm.KeySpec) (crypto.Signer, error) {
	s, err := v.tok.Signer(ctx, hsm.URI{Object: label, Type: "private"})
	if errors.Is(err, hsm.ErrKeyNotFound) && spec != nil {
		return v.tok.GenerateKey(ctx, *spec)
	}
	return s, err
}

func (v *hsmVault) NodeKey(ctx context.Context) (crypto.Signer, error) {
	return v.key(ctx, nodeKeyLabel, &hsm.KeySpec{Type: hsm.ECP256, Label: nodeKeyLabel})
}

func (v *hsmVault) ReplicatedKey(ctx context.Context, name string, create bool) (crypto.Signer, error) {
	var spec *hsm.KeySpec
	if create {
		spec = &hsm.KeySpec{Type: hsm.ECP256, Label: name, Wrappable: true}
	}
	return v.key(ctx, name, spec)
}

func (v *hsmVault) TransportKey(ctx context.Context) ([]byte, error) {
	tp, err := v.xfer.NewTransportKey(ctx)
	if err != nil {
		return nil, err
	}
	v.mu.Lock()
	v.tp = tp
	v.mu.Unlock()
	return tp.MarshalBinary()
}

func (v *hsmVault) DropTransportKey(ctx context.Context) error {
	v.mu.Lock()
	tp := v.tp
	v.tp = nil
	v.mu.Unlock()
	if tp == nil {
		return nil
	}
	return v.xfer.DeleteTransportKey(ctx, tp)
}

func (v *hsmVault) ExportKey(ctx context.Context, name string, transportKey []byte) ([]byte, error) {
	var tp hsm.TransportKey
	if err := tp.UnmarshalBinary(transportKey); err != nil {
		return nil, err
	}
	wk, err := v.xfer.Export(ctx, hsm.URI{Object: name, Type: "private"}, &tp)
	if err != nil {
		return nil, err
	}
	return wk.MarshalBinary()
}

func (v *hsmVault) ImportKey(ctx context.Context, name string, blob []byte) error {
	var wk hsm.WrappedKey
	if err := wk.UnmarshalBinary(blob); err != nil {
		return err
	}
	if wk.Label != name {
		return fmt.Errorf("wrapped key is %q, expected %q", wk.Label, name)
	}
	_, err := v.xfer.Import(ctx, &wk, hsm.ImportOptions{Wrappable: true})
	return err
}

// TestJoinOverSoftHSM runs the join and key transfer with every key in a
// SoftHSM token: the bootstrap node makes the cluster CA key, a joining
// voter receives it wrapped for its transport key, and after a leadership
// transfer that voter signs the next node's certificate with it.
func TestJoinOverSoftHSM(t *testing.T) {
	ctx := ctxT(t, 90*time.Second)
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
		tok, err := via.CreateJoinToken(ctx, time.Minute, role)
		if err != nil {
			t.Fatal(err)
		}
		n := newNode()
		n.cfg.Join = &Join{Addr: via.Addr(), Token: tok}
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
	// No transport key is left behind on a receiving token.
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
	onlyKeys(second, nodeKeyLabel, CAKeyName, "ca-signing")

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
	if _, err := third.vault.ReplicatedKey(ctx, "ca-2027", false); err == nil {
		t.Fatal("a nonvoter received a shared key")
	}
	onlyKeys(second, nodeKeyLabel, CAKeyName, "ca-signing", "ca-2027")
	if err := second.c.ShareKey(ctx, "ca-2027"); err != nil { // every voter has it
		t.Fatal(err)
	}
	if _, err := second.vault.ReplicatedKey(ctx, "rogue", true); err != nil {
		t.Fatal(err)
	}
	if _, err := first.vault.ReplicatedKey(ctx, "rogue", true); err != nil {
		t.Fatal(err)
	}
	if err := first.c.ShareKey(ctx, "rogue"); err == nil || !strings.Contains(err.Error(), "different key") {
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
