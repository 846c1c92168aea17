package operator

import (
	"errors"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestProposalHeldToTheRulesInForce: a proposal comes with its rule on the
// submitting node's word, so a node whose admin API skipped the rules (or an
// older one, mid-upgrade) could have a request held to a weaker rule than the
// one in force — one approval by an officer, say, for adding an admin — that a
// single approver then completes. The state machine holds a proposal to the
// rules it records.
func TestProposalHeldToTheRulesInForce(t *testing.T) {
	h := newHarness(t, Config{})
	a, _, _, o := threeAdmins(t, h)

	// An officer's sock puppet as an admin, proposed by a and held to
	// one officer's approval.
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
		err = h.submit(commandPropose, proposeBody{ID: id, Action: actionOperatorManage, Body: body, Digest: d[:],
			Proposer: a.op.Fingerprint[:], M: w.m, Role: string(w.role), TTL: int64(w.ttl)})
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
	if err := h.submit(commandPropose, proposeBody{ID: id, Action: actionOperatorManage, Body: body, Digest: d[:],
		Proposer: a.op.Fingerprint[:], M: 1, Role: string(Officer), TTL: int64(time.Hour)}); err == nil {
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

// TestVersion1AppliedAsBefore: commands the release before wrote (version 1)
// are applied as they were then, without the checks of version 2, so that a
// node replaying its log after an upgrade reaches the state the others
// reached: a weak proposal is recorded, and a removal that leaves two admins
// under M=2 is carried out.
func TestVersion1AppliedAsBefore(t *testing.T) {
	h := newHarness(t, Config{})
	a, b, _, _ := threeAdmins(t, h)
	submitV1 := func(typ string, body any) error {
		t.Helper()
		cmd, err := cluster.NewCommand(typ, 1, body)
		if err != nil {
			t.Fatal(err)
		}
		_, err = h.node.Submit(testenv.Context(t, 20*time.Second), cmd)
		return err
	}
	body, err := Change{Op: OpRemove, ID: b.op.ID}.Body()
	if err != nil {
		t.Fatal(err)
	}
	id, err := newID("rq-")
	if err != nil {
		t.Fatal(err)
	}
	d := Digest(actionOperatorManage, body)
	if err := submitV1(commandPropose, proposeBody{ID: id, Action: actionOperatorManage, Body: body, Digest: d[:],
		Proposer: a.op.Fingerprint[:], M: 1, Role: string(Admin), TTL: int64(time.Hour)}); err != nil {
		t.Fatalf("a version 1 proposal held to one approval: %v", err)
	}
	if err := submitV1(commandRemove, removeBody{ID: b.op.ID, Actor: a.op.Actor()}); err != nil {
		t.Fatalf("a version 1 removal leaving two admins: %v", err)
	}
	if _, err := h.verify(b.chain(), time.Now()); !errors.Is(err, errRemoved) {
		t.Fatalf("b after the version 1 removal: %v", err)
	}
}
