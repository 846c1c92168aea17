package operator

import (
	"context"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestEdgeCannotActForAnOperator: whoever runs an OCSP edge (a nonvoter,
// holding no key) cannot, by having the edge's node ask the leader in an
// admin's name (the leader cannot check the operator behind the node's word),
// get an operator certificate for a key of theirs, take over another
// operator's identity by a renewal, remove an approver or weaken the rules.
// The leader refuses those calls and commands from a nonvoter; requests (a
// proposal, which still needs others' signed approvals) go through.
func TestEdgeCannotActForAnOperator(t *testing.T) {
	h := newHarness(t, Config{})
	a, b, _, _ := threeAdmins(t, h)
	ctx := testenv.Context(t, 60*time.Second)

	tok := softhsm.NewToken(t)
	vault := cluster.NewHSMVault(tok.HSM)
	cfg := cluster.Config{Handlers: Handlers(), DataDir: t.TempDir(), BindAddr: "127.0.0.1:0", KeyVault: vault,
		Logger: testenv.Logger(), ElectionTimeout: 300 * time.Millisecond, HeartbeatTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 150 * time.Millisecond}
	cfg.Join = &cluster.Join{Addr: h.node.Cluster.Addr(), Token: clustertest.JoinToken(t, h.node.Cluster, cfg, cluster.Nonvoter)}
	ec, err := cluster.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = ec.Shutdown(ctx)
	})
	edge, err := New(Config{Cluster: ec, Vault: vault, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(edge.Close)

	const nonvoter = "cluster.nonvoter"
	wantNonvoter := func(what string, err error) {
		t.Helper()
		if code := cluster.RefusalCode(err); code != nonvoter {
			t.Fatalf("%s through the edge: %v (code %q), want code %s", what, err, code, nonvoter)
		}
	}
	// The edge's node asks the leader directly, as a node whose admin API
	// skipped the rules would.
	mallory := newKey(t)
	_, err = edge.callSign(ctx, signRequest{Kind: kindAdd, Actor: a.op.Actor()},
		Change{Op: OpAdd, Name: "sock puppet", Role: Admin, CSR: csrFor(t, mallory)})
	wantNonvoter("an admin added in a's name", err)
	_, err = edge.callSign(ctx, signRequest{Kind: kindRenew, Actor: b.op.Actor(), Operator: b.op.ID},
		Change{Op: OpAdd, Name: b.op.Name, Role: Admin, CSR: csrFor(t, mallory)})
	wantNonvoter("b's certificate renewed for another key", err)
	wantNonvoter("b removed in a's name", edge.submit(ctx, commandRemove, removeBody{ID: b.op.ID, Actor: a.op.Actor()}, nil))
	wantNonvoter("the rules emptied", edge.SetRules(ctx, a.op.Actor(), "", map[string]Rule{}))

	// A proposal through the edge is a request like any other.
	body, err := Change{Op: OpRemove, ID: b.op.ID}.Body()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := edge.Propose(ctx, a.op, actionOperatorManage, body); err != nil {
		t.Fatalf("a proposal through the edge: %v", err)
	}

	// Nothing changed: b is active with the same certificate, nobody holds
	// mallory's key, and the rules are the defaults.
	err = h.node.Cluster.View(func(tx *bbolt.Tx) error {
		ops, err := List(tx)
		if err != nil {
			return err
		}
		if len(ops) != 4 {
			t.Errorf("%d operators, want a, b, c and o", len(ops))
		}
		op, err := Lookup(tx, b.op.ID)
		if err != nil || op.Status != Active || op.Fingerprint != b.op.Fingerprint {
			t.Errorf("b after the edge's tries: %+v %v", op, err)
		}
		rules, err := h.svc.RulesIn(tx)
		if err != nil || len(rules) != len(defaultRules()) {
			t.Errorf("rules after the edge's tries: %v %v", rules, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
