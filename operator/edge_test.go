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
// operator's identity by a renewal, remove an approver, weaken the rules,
// propose a request in another admin's name (the proposer is one of the M+1
// a rule asks for) or count against an officer's limit. The leader refuses
// those calls and commands from a nonvoter; an approval, signed by the
// approver's own key, goes through.
func TestEdgeCannotActForAnOperator(t *testing.T) {
	h := newHarness(t, Config{})
	a, b, _, o := threeAdmins(t, h)
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

	// A proposal in b's name, which a's approval would then complete as
	// the second of two admins, and counts against officer o's limit.
	body, err := Change{Op: OpAdd, Name: "sock puppet", Role: Admin, CSR: csrFor(t, mallory)}.Body()
	if err != nil {
		t.Fatal(err)
	}
	_, err = edge.Propose(ctx, b.op, actionOperatorManage, body)
	wantNonvoter("a proposal in b's name", err)
	_, err = edge.Propose(ctx, a.op, actionOperatorManage, body)
	wantNonvoter("a proposal in a's own name", err)
	rule := h.svc.Rules()[actionCertRevoke]
	wantNonvoter("o's revocations counted", edge.Take(ctx, o.op, actionCertRevoke, rule.Over, rule))

	// An approval through the edge is signed by the approver and counts.
	q, err := h.svc.Propose(ctx, a.op, actionOperatorManage, body)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := SignApproval(b.key, q.ID, q.Digest, Reject)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := edge.Decide(ctx, q.ID, b.op, Reject, sig); err != nil {
		t.Fatalf("b's refusal through the edge: %v", err)
	}
	h.waitState(q.ID, stateRejected)

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
