package operator

import (
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// threeAdmins bootstraps admin a and adds officer o and admins b and c in the
// initial ceremony (no approval while the rule of operator.manage cannot be met).
func threeAdmins(t *testing.T, h *harness) (a, b, c, o *person) {
	a = h.bootstrap("a")
	o = h.add(a, "o", Officer, 0)
	b = h.add(a, "b", Admin, 0)
	c = h.add(a, "c", Admin, 0)
	if r, ok := h.svc.Rules()[actionOperatorManage]; ok && r.M == 2 {
		// Three admins: from now on adding an operator needs two approvals.
		_, err := h.svc.Add(testenv.Context(t, 20*time.Second), a.op, Change{Op: OpAdd, Name: "x", Role: Auditor, CSR: csrFor(t, newKey(t))})
		mustRefuse(t, "add without approval", err, errApprovalRequired)
	}
	return a, b, c, o
}

func wantSteps(t *testing.T, h *harness, id string, want []string, actors []string) {
	t.Helper()
	ds := h.waitDescribed(id, len(want))
	if got := types(ds); !slices.Equal(got, want) {
		t.Fatalf("audit of %s: %v, want %v", id, got, want)
	}
	for i, a := range actors {
		if ds[i].Actor != a {
			t.Fatalf("audit of %s: %s by %s, want %s", id, ds[i].Type, ds[i].Actor, a)
		}
	}
}

// TestDualControl: a policy change needing 2 of 3 admins does not run with one
// approval, with the proposer's own, with an officer's, with a bad signature, a
// second time by the same admin, after a rejection or after the expiry; it runs,
// once, with two valid approvals; every step is described for the audit log.
func TestDualControl(t *testing.T) {
	var runs atomic.Int32
	h := newHarness(t, Config{
		Rules: map[string]Rule{
			actionPolicyApply:    {M: 2, Role: Admin, TTL: time.Hour},
			actionCAKeyGenerate:  {M: 2, Role: Admin, TTL: time.Second},
			actionOperatorManage: {M: 2, Role: Admin, TTL: time.Hour},
		},
		Run: func(_ contextT, r Request) ([]byte, error) {
			runs.Add(1)
			return []byte("applied " + string(r.Body)), nil
		},
		// No timed sweep: the leader looks only when a decision is committed,
		// so a decision after the expiry meets the state machine's own check.
		Sweep: time.Hour,
	})
	a, b, c, o := threeAdmins(t, h)
	ctx := testenv.Context(t, 20*time.Second)

	_, err := h.svc.Propose(ctx, o.op, actionPolicyApply, []byte("policy v2"))
	mustRefuse(t, "officer proposes a policy", err, errForbidden)
	_, err = h.svc.Propose(ctx, a.op, actionCertHold, []byte("x"))
	mustRefuse(t, "propose what no rule covers", err, errForbidden)

	q, err := h.svc.Propose(ctx, a.op, actionPolicyApply, []byte("policy v2"))
	if err != nil {
		t.Fatal(err)
	}
	if q.State != statePending || q.Digest != Digest(actionPolicyApply, []byte("policy v2")) || q.Proposer != a.op.Fingerprint {
		t.Fatalf("proposed %+v", q)
	}
	_, err = h.decide(a, q, Approve)
	mustRefuse(t, "proposer approves", err, errSelfApproval)
	_, err = h.decide(o, q, Approve)
	mustRefuse(t, "officer approves", err, errWrongRole)
	sig, _ := SignApproval(c.key, q.ID, q.Digest, Reject)
	_, err = h.svc.Decide(ctx, q.ID, c.op, Approve, sig)
	mustRefuse(t, "signature over another decision", err, errBadSignature)
	sig, _ = SignApproval(b.key, q.ID, q.Digest, Approve)
	_, err = h.svc.Decide(ctx, q.ID, c.op, Approve, sig)
	mustRefuse(t, "another admin's signature", err, errBadSignature)

	q1, err := h.decide(b, q, Approve)
	if err != nil {
		t.Fatal(err)
	}
	if q1.State != statePending || len(q1.Approvals) != 1 {
		t.Fatalf("after one approval: %s with %d", q1.State, len(q1.Approvals))
	}
	_, err = h.decide(b, q, Approve)
	mustRefuse(t, "second approval by the same admin", err, errDuplicate)
	settled(t, h.svc)
	if n := runs.Load(); n != 0 || h.request(q.ID).State != statePending {
		t.Fatalf("ran %d times with one approval (%s)", n, h.request(q.ID).State)
	}

	if _, err := h.decide(c, q, Approve); err != nil {
		t.Fatal(err)
	}
	done := h.waitState(q.ID, stateExecuted)
	if string(done.Result) != "applied policy v2" || !slices.Equal(done.Approvals, []fingerprint{b.op.Fingerprint, c.op.Fingerprint}) {
		t.Fatalf("executed %+v", done)
	}
	settled(t, h.svc)
	if n := runs.Load(); n != 1 {
		t.Fatalf("ran %d times, want once", n)
	}
	_, err = h.decide(c, q, Approve)
	mustRefuse(t, "approval after execution", err, errNotPending)
	sys := "system"
	wantSteps(t, h, q.ID,
		[]string{typeRequestProposed, typeRequestApproval, typeRequestApproval, typeRequestApproved, typeRequestStarted, typeRequestExecuted},
		[]string{a.op.Actor(), b.op.Actor(), c.op.Actor(), sys, sys, sys})

	// Rejected: a rejection by an admin ends it; later approvals do not count.
	rq, err := h.svc.Propose(ctx, a.op, actionPolicyApply, []byte("policy v3"))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := h.decide(c, rq, Reject); err != nil || r.State != stateRejected || r.Rejecter != c.op.Fingerprint {
		t.Fatalf("reject: %v %+v", err, r)
	}
	_, err = h.decide(b, rq, Approve)
	mustRefuse(t, "approval after rejection", err, errNotPending)
	wantSteps(t, h, rq.ID, []string{typeRequestProposed, typeRequestRejected}, []string{a.op.Actor(), c.op.Actor()})

	// Expired: one approval in time, the second after the expiry. The second
	// decision is not refused: it ends the request as expired, decided by the
	// entry's time in the state machine.
	eq, err := h.svc.Propose(ctx, a.op, actionCAKeyGenerate, []byte("generate ec-p384"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.decide(b, eq, Approve); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(eq.Expires) + 50*time.Millisecond)
	late, err := h.decide(c, eq, Approve)
	mustRefuse(t, "approval after expiry", err, errRequestExpired)
	if late.State != stateExpired || len(late.Approvals) != 1 || late.Decided.Before(eq.Expires) {
		t.Fatalf("after expiry: %+v", late)
	}
	_, err = h.decide(c, eq, Approve)
	mustRefuse(t, "approval of an expired request", err, errNotPending)
	wantSteps(t, h, eq.ID, []string{typeRequestProposed, typeRequestApproval, typeRequestExpired},
		[]string{a.op.Actor(), b.op.Actor(), sys})

	if n := runs.Load(); n != 1 {
		t.Fatalf("ran %d times, want once", n)
	}
}

// TestSweepExpires: the leader ends pending requests past their expiry without
// anyone deciding them.
func TestSweepExpires(t *testing.T) {
	h := newHarness(t, Config{Rules: map[string]Rule{actionPolicyApply: {M: 2, Role: Admin, TTL: time.Second}}})
	a, _, _, _ := threeAdmins(t, h)
	q, err := h.svc.Propose(testenv.Context(t, 20*time.Second), a.op, actionPolicyApply, []byte("policy v2"))
	if err != nil {
		t.Fatal(err)
	}
	if h.request(q.ID).State != statePending {
		t.Fatal("not pending")
	}
	got := h.waitState(q.ID, stateExpired)
	if got.Decided.Before(q.Expires) {
		t.Fatalf("expired at %s, before its expiry %s", got.Decided, q.Expires)
	}
	wantSteps(t, h, q.ID, []string{typeRequestProposed, typeRequestExpired}, nil)
}

// TestOperatorChangeUnderApproval adds and removes operators through approved
// requests: the change and the request's end are one command.
func TestOperatorChangeUnderApproval(t *testing.T) {
	h := newHarness(t, Config{})
	a, b, c, o := threeAdmins(t, h)
	ctx := testenv.Context(t, 20*time.Second)

	// The new officer's key is in a PKCS#11 token: the package sees only the CSR.
	key := newKey(t)
	body, err := Change{Op: OpAdd, Name: "eve", Role: Officer, CSR: csrFor(t, key)}.Body()
	if err != nil {
		t.Fatal(err)
	}
	q, err := h.svc.Propose(ctx, a.op, actionOperatorManage, body)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.decide(b, q, Approve); err != nil {
		t.Fatal(err)
	}
	if _, err := h.decide(o, q, Approve); !errors.Is(err, errWrongRole) {
		t.Fatalf("officer approves an operator change: %v", err)
	}
	if _, err := h.decide(c, q, Approve); err != nil {
		t.Fatal(err)
	}
	done := h.waitState(q.ID, stateExecuted)
	eve := h.person(Operator{Certificate: done.Result}, key)
	op, err := h.verify(eve.chain(), time.Now())
	if err != nil || op.Role != Officer || op.Name != "eve" {
		t.Fatalf("new officer: %+v, %v", op, err)
	}
	wantSteps(t, h, q.ID,
		[]string{typeRequestProposed, typeRequestApproval, typeRequestApproval, typeRequestApproved, typeRequestStarted, typeAdded, typeRequestExecuted},
		[]string{a.op.Actor(), b.op.Actor(), c.op.Actor(), "system", "system", a.op.Actor(), "system"})

	// An approved change that cannot be carried out (the key is b's) fails,
	// once, with the reason recorded.
	body, _ = Change{Op: OpAdd, Name: "b again", Role: Officer, CSR: csrFor(t, b.key)}.Body()
	fq := h.approved(a, body, b, c)
	if f := h.waitState(fq.ID, stateFailed); !strings.Contains(f.Error, "key") {
		t.Fatalf("failed with %q", f.Error)
	}
	wantSteps(t, h, fq.ID, []string{typeRequestProposed, typeRequestApproval, typeRequestApproval, typeRequestApproved,
		typeRequestStarted, typeRequestFailed}, nil)

	// Removing admin b, approved by b and c, would leave two admins, too few
	// for the rule (two approvals besides the proposer's): operator changes
	// would go back to one admin, as in the initial ceremony. The change
	// fails, asked through a request or straight by a voter's node.
	body, _ = Change{Op: OpRemove, ID: b.op.ID}.Body()
	h.waitState(h.approved(a, body, b, c).ID, stateFailed)
	mustRefuse(t, "remove b, leaving two admins", h.submit(commandRemove, removeBody{ID: b.op.ID, Actor: a.op.Actor()}), errBelowRule)
	if _, err := h.verify(b.chain(), time.Now()); err != nil {
		t.Fatalf("b after the refused removal: %v", err)
	}

	// With a fourth admin first, b is removed.
	dKey := newKey(t)
	dBody, _ := Change{Op: OpAdd, Name: "d", Role: Admin, CSR: csrFor(t, dKey)}.Body()
	d := h.person(Operator{Certificate: h.waitState(h.approved(a, dBody, b, c).ID, stateExecuted).Result}, dKey)
	if d.op, err = h.verify(d.chain(), time.Now()); err != nil {
		t.Fatal(err)
	}
	h.waitState(h.approved(a, body, c, d).ID, stateExecuted)
	if _, err := h.verify(b.chain(), time.Now()); !errors.Is(err, errRemoved) {
		t.Fatalf("removed admin verifies: %v", err)
	}
	// Three admins left: b's approvals no longer exist to count, and the
	// rule is still in force.
	var need bool
	if err := h.node.View(func(tx *bbolt.Tx) error {
		var err error
		_, need, err = h.svc.Required(tx, a.op, actionOperatorManage, 1)
		return err
	}); err != nil || !need {
		t.Fatalf("required with three admins: %v %v", need, err)
	}
}

// TestRulesKeepTheCeremonyClosed: rules that look stricter (operator.manage
// held to three approvals with three admins) would leave each admin fewer
// possible approvers than the rule needs, and hand operator changes back to
// one admin as in the initial ceremony. They are refused; with a fourth
// admin they are set.
func TestRulesKeepTheCeremonyClosed(t *testing.T) {
	h := newHarness(t, Config{})
	a, b, c, _ := threeAdmins(t, h)
	ctx := testenv.Context(t, 60*time.Second)
	rules := h.svc.Rules()
	r := rules[actionOperatorManage]
	r.M = 3
	rules[actionOperatorManage] = r
	// As a voter's node would after b's and c's approvals.
	mustRefuse(t, "operator.manage held to 3 with 3 admins", h.svc.SetRules(ctx, b.op.Actor(), "", rules), errBelowRule)
	if err := h.svc.Remove(ctx, a.op, c.op.ID); !errors.Is(err, errApprovalRequired) {
		t.Fatalf("a removes c alone: %v, want %v", err, errApprovalRequired)
	}

	key := newKey(t)
	body, _ := Change{Op: OpAdd, Name: "d", Role: Admin, CSR: csrFor(t, key)}.Body()
	h.waitState(h.approved(a, body, b, c).ID, stateExecuted)
	if err := h.svc.SetRules(ctx, b.op.Actor(), "", rules); err != nil {
		t.Fatalf("operator.manage held to 3 with 4 admins: %v", err)
	}
}

// TestBootstrapOnce: the first admin is made once; a retry of the same CSR
// returns the same operator; the last admin cannot be removed.
func TestBootstrapOnce(t *testing.T) {
	h := newHarness(t, Config{})
	key := newKey(t)
	csr := csrFor(t, key)
	first, err := h.svc.Bootstrap(testenv.Context(t, 20*time.Second), "alice", csr, 0)
	if err != nil {
		t.Fatal(err)
	}
	again, err := h.svc.Bootstrap(testenv.Context(t, 20*time.Second), "alice", csr, 0)
	if err != nil || again.ID != first.ID || again.Fingerprint != first.Fingerprint {
		t.Fatalf("retry: %v, %s vs %s", err, again.ID, first.ID)
	}
	_, err = h.svc.Bootstrap(testenv.Context(t, 20*time.Second), "mallory", csrFor(t, newKey(t)), 0)
	mustRefuse(t, "second bootstrap", err, errBootstrapped)
	err = h.svc.Remove(testenv.Context(t, 20*time.Second), first, first.ID)
	mustRefuse(t, "remove the last admin", err, errLastAdmin)
	if err := h.node.View(func(tx *bbolt.Tx) error {
		ops, err := List(tx)
		if err == nil && (len(ops) != 1 || ops[0].Status != Active) {
			err = errors.New("want one active admin")
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	ds := h.described("")
	// The rules of dual control are recorded before the first operator exists.
	if got := types(ds); !slices.Equal(got, []string{typeRulesSet, typeCACreated, typeAdded}) || ds[0].Data["seed"] != 1 || ds[2].Data["bootstrap"] != 1 {
		t.Fatalf("audit %v %v", got, ds)
	}
}

// TestExecutionAcrossLeaderChange: a leader that committed the start of an
// approved request and died leaves it executing. The next leader runs an
// operator change again (it takes effect once, with the request's end) and
// marks any other action interrupted rather than run it twice. An approved
// request for which no leader has a runner waits, approved, and is not lost.
func TestExecutionAcrossLeaderChange(t *testing.T) {
	h := newHarness(t, Config{Rules: map[string]Rule{
		actionPolicyApply:    {M: 2, Role: Admin, TTL: time.Hour},
		actionOperatorManage: {M: 2, Role: Admin, TTL: time.Hour},
	}})
	a, b, c, _ := threeAdmins(t, h)

	pq, err := h.svc.Propose(testenv.Context(t, 20*time.Second), a.op, actionPolicyApply, []byte("policy v2"))
	if err != nil {
		t.Fatal(err)
	}
	waiting, err := h.svc.Propose(testenv.Context(t, 20*time.Second), a.op, actionPolicyApply, []byte("policy v3"))
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []Request{pq, waiting} {
		for _, p := range []*person{b, c} {
			if _, err := h.decide(p, q, Approve); err != nil {
				t.Fatal(err)
			}
		}
	}
	settled(t, h.svc) // sweeps of a leader with no runner for it
	if s := h.request(pq.ID).State; s != stateApproved {
		t.Fatalf("policy request without a runner: %s", s)
	}

	// The operator change is approved with the service stopped, so that it is
	// the dead leader's start below that takes it.
	h.svc.Close()
	key := newKey(t)
	body, _ := Change{Op: OpAdd, Name: "eve", Role: Auditor, CSR: csrFor(t, key)}.Body()
	d := Digest(actionOperatorManage, body)
	oq := Request{ID: "rq-00000000000000aa", Digest: d}
	if err := h.submit(commandPropose, proposeBody{ID: oq.ID, Action: actionOperatorManage, Body: body, Digest: d[:],
		Proposer: a.op.Fingerprint[:], M: 2, Role: string(Admin), TTL: int64(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*person{b, c} {
		sig, _ := SignApproval(p.key, oq.ID, d, Approve)
		if err := h.submit(commandDecide, decideBody{ID: oq.ID, Approver: p.op.Fingerprint[:], Decision: "approve", Signature: sig}); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range []string{pq.ID, oq.ID} {
		if err := h.submit(commandStart, startBody{ID: id, Run: "run-dead"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.submit(commandStart, startBody{ID: pq.ID, Run: "run-other"}); !errors.Is(err, cluster.ErrRefused) {
		t.Fatalf("second start: %v", err)
	}

	// The next leader, with a runner for policies.
	var runs atomic.Int32
	h.start(Config{Rules: h.svc.Rules(), Run: func(_ contextT, r Request) ([]byte, error) {
		runs.Add(1)
		return r.Body, nil
	}})
	got := h.waitState(pq.ID, stateInterrupted)
	if got.Error == "" {
		t.Fatal("interrupted without a reason")
	}
	added := h.waitState(oq.ID, stateExecuted)
	if _, err := h.verify(h.person(Operator{Certificate: added.Result}, key).chain(), time.Now()); err != nil {
		t.Fatalf("operator added after the leader change: %v", err)
	}
	if w := h.waitState(waiting.ID, stateExecuted); string(w.Result) != "policy v3" {
		t.Fatalf("waiting request: %+v", w)
	}
	settled(t, h.svc)
	if n := runs.Load(); n != 1 {
		t.Fatalf("runner ran %d times, want once (the waiting request only)", n)
	}
	wantSteps(t, h, pq.ID, []string{typeRequestProposed, typeRequestApproval, typeRequestApproval, typeRequestApproved,
		typeRequestStarted, typeRequestInterrupted}, nil)
	wantSteps(t, h, oq.ID, []string{typeRequestProposed, typeRequestApproval, typeRequestApproval, typeRequestApproved,
		typeRequestStarted, typeAdded, typeRequestExecuted}, nil)
}

// TestRenew: an operator replaces their certificate with their current one; the
// old one counts for nothing after, and the renewed operator is still the same
// person to dual control: no approving their own request, no second approval.
func TestRenew(t *testing.T) {
	h := newHarness(t, Config{Rules: map[string]Rule{actionPolicyApply: {M: 2, Role: Admin, TTL: time.Hour}}})
	a, b, c, _ := threeAdmins(t, h)
	ctx := testenv.Context(t, 20*time.Second)
	q, err := h.svc.Propose(ctx, a.op, actionPolicyApply, []byte("policy v2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.decide(b, q, Approve); err != nil {
		t.Fatal(err)
	}

	renew := func(p *person) *person {
		t.Helper()
		key := newKey(t)
		csr := csrFor(t, key)
		op, err := h.svc.Renew(ctx, p.op, csr, 0)
		if err != nil {
			t.Fatal(err)
		}
		if again, err := h.svc.Renew(ctx, p.op, csr, 0); err != nil || again.Fingerprint != op.Fingerprint {
			t.Fatalf("retry of a renewal: %v", err)
		}
		if op.ID != p.op.ID || op.Role != p.op.Role || op.Fingerprint == p.op.Fingerprint {
			t.Fatalf("renewed %+v from %+v", op, p.op)
		}
		return h.person(op, key)
	}
	a2, b2 := renew(a), renew(b)
	if _, err := h.verify(a.chain(), time.Now()); !errors.Is(err, errUnknownOperator) {
		t.Fatalf("old certificate: %v", err)
	}
	if op, err := h.verify(a2.chain(), time.Now()); err != nil || op.ID != a.op.ID {
		t.Fatalf("renewed certificate: %+v %v", op, err)
	}
	_, err = h.svc.Renew(ctx, a.op, csrFor(t, newKey(t)), 0)
	mustRefuse(t, "renew with the replaced certificate", err, errNotAllowed)

	_, err = h.decide(a2, q, Approve)
	mustRefuse(t, "proposer approves with a renewed certificate", err, errSelfApproval)
	_, err = h.decide(b2, q, Approve)
	mustRefuse(t, "second approval with a renewed certificate", err, errDuplicate)
	_, err = h.decide(b, q, Approve)
	mustRefuse(t, "approval with a replaced certificate", err, errNotActive)
	if got, err := h.decide(c, q, Approve); err != nil || got.State == statePending {
		t.Fatalf("second approver: %v %s", err, got.State)
	}
	h.waitState(q.ID, stateApproved) // no runner: it waits
	ds := h.described("")
	var renewed []description
	for _, d := range ds {
		if d.Type == typeRenewed {
			renewed = append(renewed, d)
		}
	}
	if len(renewed) != 2 || renewed[0].Actor != a.op.Actor() || renewed[1].Actor != b.op.Actor() {
		t.Fatalf("renewals audited as %+v", renewed)
	}
}
