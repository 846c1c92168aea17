package operator

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestEdgeCannotLowerAProposalsRule: an officer who runs an OCSP edge (a
// nonvoter, which may submit proposals) cannot have the edge propose a request
// held to a rule weaker than the one in force — one approval by an officer,
// say, for adding an admin — and then approve it alone: the state machine
// holds a proposal to the rules it records.
func TestEdgeCannotLowerAProposalsRule(t *testing.T) {
	h := newHarness(t, Config{})
	a, _, _, o := threeAdmins(t, h)
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

	// The officer's sock puppet, an admin, proposed in admin a's name (the
	// proposer is the node's word) and held to one officer's approval.
	mallory := newKey(t)
	body, err := Change{Op: OpAdd, Name: "mallory", Role: Admin, CSR: csrFor(t, mallory)}.Body()
	if err != nil {
		t.Fatal(err)
	}
	weaker := []struct {
		name string
		m    int
		role Role
		ttl  time.Duration
	}{
		{"one officer", 1, Officer, time.Hour},
		{"one admin", 1, Admin, time.Hour},
		{"an officer's role", 2, Officer, time.Hour},
		{"a longer TTL", 2, Admin, 30 * 24 * time.Hour},
	}
	for _, w := range weaker {
		id, err := newID("rq-")
		if err != nil {
			t.Fatal(err)
		}
		d := Digest(actionOperatorManage, body)
		err = edge.submit(ctx, commandPropose, proposeBody{ID: id, Action: actionOperatorManage, Body: body, Digest: d[:],
			Proposer: a.op.Fingerprint[:], M: w.m, Role: string(w.role), TTL: int64(w.ttl)}, nil)
		if !errors.Is(err, errInvalid) {
			t.Errorf("a proposal held to %s: %v, want %v", w.name, err, errInvalid)
		}
	}

	// Had it been recorded, o's approval would have made mallory an admin.
	id, err := newID("rq-")
	if err != nil {
		t.Fatal(err)
	}
	d := Digest(actionOperatorManage, body)
	if err := edge.submit(ctx, commandPropose, proposeBody{ID: id, Action: actionOperatorManage, Body: body, Digest: d[:],
		Proposer: a.op.Fingerprint[:], M: 1, Role: string(Officer), TTL: int64(time.Hour)}, nil); err == nil {
		if _, err := h.decide(o, h.request(id), Approve); err != nil {
			t.Fatalf("o approves: %v", err)
		}
		q := h.waitState(id, stateExecuted)
		t.Errorf("request %s held to one officer's approval was %s: an officer made an admin alone", id, q.State)
	}
	err = h.node.Cluster.View(func(tx *bbolt.Tx) error {
		ops, err := List(tx)
		if err != nil {
			return err
		}
		for _, op := range ops {
			if op.Name == "mallory" {
				t.Errorf("mallory is an operator: %+v", op)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
