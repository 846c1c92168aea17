package operator

import (
	"errors"
	"slices"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestRulesInState: the first leader records the rules it starts with; from then
// on the state's rules are in force whatever a node's configuration says, a
// change is a new version, and a change that breaks a rule's shape, or pairs the
// join rules with different roles, is refused and changes nothing.
func TestRulesInState(t *testing.T) {
	h := newHarness(t, Config{Rules: map[string]Rule{actionPolicyApply: {M: 1, Role: Admin, TTL: time.Hour}}})
	a := h.bootstrap("a")
	var v uint64
	if err := h.node.View(func(tx *bbolt.Tx) error { var err error; v, err = RulesVersion(tx); return err }); err != nil || v != 1 {
		t.Fatalf("rules version after bootstrap: %d %v", v, err)
	}
	ctx := testenv.Context(t, 20*time.Second)
	want := map[string]Rule{
		actionPolicyApply: {M: 2, Role: Admin, TTL: time.Hour},
		actionCertRevoke:  {M: 1, Role: Officer, TTL: time.Hour, Over: 3}, // Within defaults to an hour
	}
	if err := h.svc.SetRules(ctx, a.op.Actor(), "", want); err != nil {
		t.Fatal(err)
	}
	got := h.svc.Rules()
	if len(got) != 2 || got[actionPolicyApply] != want[actionPolicyApply] || got[actionCertRevoke].Within != defaultWithin {
		t.Fatalf("rules in force: %+v", got)
	}
	// A node configured otherwise still holds to the state's rules.
	h.svc.Close()
	h.start(Config{Rules: map[string]Rule{}})
	if got := h.svc.Rules(); got[actionPolicyApply].M != 2 {
		t.Fatalf("a node configured with no rules: %+v", got)
	}
	for name, rules := range map[string]map[string]Rule{
		"M zero":                {actionPolicyApply: {M: 0, Role: Admin, TTL: time.Hour}},
		"auditor decides":       {actionPolicyApply: {M: 1, Role: Auditor, TTL: time.Hour}},
		"within without over":   {actionCertRevoke: {M: 1, Role: Officer, TTL: time.Hour, Within: time.Minute}},
		"join roles differ":     {actionClusterMembership: {M: 2, Role: Admin, TTL: time.Hour}, actionCAKeyTransfer: {M: 2, Role: Officer, TTL: time.Hour}},
		"window beyond 30 days": {actionCertRevoke: {M: 1, Role: Officer, TTL: time.Hour, Over: 3, Within: 31 * 24 * time.Hour}},
	} {
		if err := h.svc.SetRules(ctx, a.op.Actor(), "", rules); !errors.Is(err, errInvalid) {
			t.Errorf("%s: %v, want ErrInvalid", name, err)
		}
	}
	// The state machine refuses a malformed set too (a node that skipped the checks).
	err := h.submit(commandRules, rulesBody{Rules: toRecords(map[string]Rule{actionPolicyApply: {M: 0, Role: Admin, TTL: time.Hour}}), Actor: a.op.Actor()})
	mustRefuse(t, "malformed rules through Raft", err, errInvalid)
	err = h.submit(commandRules, rulesBody{Rules: toRecords(normalize(want)), Actor: actorSystem, Seed: true})
	mustRefuse(t, "a second seed", err, errRulesSet)
	if err := h.node.View(func(tx *bbolt.Tx) error { var err error; v, err = RulesVersion(tx); return err }); err != nil || v != 2 {
		t.Fatalf("rules version after refusals: %d %v", v, err)
	}
	ds := h.described("")
	var sets int
	for _, d := range ds {
		if d.Type == typeRulesSet {
			sets++
		}
	}
	if sets != 2 {
		t.Fatalf("%d rules.set leaves, want 2 (the seed and the change)", sets)
	}
}

// TestCountingRule: an officer's revocations are counted over the rule's window,
// so 10 then 5 needs approval for the second request (Required says so, and the
// state machine refuses the count if two requests race past the check); another
// officer has a count of their own; once the window has passed, it starts again.
func TestCountingRule(t *testing.T) {
	const window = 2 * time.Second
	h := newHarness(t, Config{Rules: map[string]Rule{
		actionCertRevoke: {M: 1, Role: Officer, TTL: time.Hour, Over: 10, Within: window},
	}})
	a := h.bootstrap("a")
	o := h.add(a, "o", Officer, 0)
	p := h.add(a, "p", Officer, 0)
	ctx := testenv.Context(t, 20*time.Second)
	required := func(by *person, n int) (Rule, bool) {
		t.Helper()
		var r Rule
		var need bool
		if err := h.node.View(func(tx *bbolt.Tx) error {
			var err error
			r, need, err = h.svc.Required(tx, by.op, actionCertRevoke, n)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		return r, need
	}
	r, need := required(o, 10)
	if need || r.Over != 10 {
		t.Fatalf("10 of 10: need %v, rule %+v", need, r)
	}
	start := time.Now()
	if err := h.svc.Take(ctx, o.op, actionCertRevoke, 10, r); err != nil {
		t.Fatal(err)
	}
	if _, need := required(o, 5); !need && time.Since(start) < window {
		t.Fatal("10 then 5 within the window: no approval needed")
	}
	// The state machine holds even if a node let it through.
	if err := h.svc.Take(ctx, o.op, actionCertRevoke, 5, r); time.Since(start) < window {
		mustRefuse(t, "10 then 5 through Raft", err, errOverThreshold)
	}
	if err := h.svc.Take(ctx, o.op, actionCertRevoke, 1, r); time.Since(start) < window {
		mustRefuse(t, "10 then 1 through Raft", err, errOverThreshold)
	}
	// Another officer counts alone.
	if _, need := required(p, 10); need {
		t.Fatal("another officer's first 10 need approval")
	}
	if err := h.svc.Take(ctx, p.op, actionCertRevoke, 10, r); err != nil {
		t.Fatal(err)
	}
	// After the window, the count starts again.
	time.Sleep(time.Until(start.Add(window + 100*time.Millisecond)))
	if _, need := required(o, 5); need {
		t.Fatal("5 after the window need approval")
	}
	if err := h.svc.Take(ctx, o.op, actionCertRevoke, 5, r); err != nil {
		t.Fatal(err)
	}
	// The event is published after the submitter has its answer: wait for it.
	counted := func(d description) bool {
		return d.Type == typeUsageCounted && d.Actor == o.op.Actor() && d.Data["count"] == 5
	}
	for deadline := time.Now().Add(5 * time.Second); !slices.ContainsFunc(h.described(""), counted); {
		if time.Now().After(deadline) {
			t.Fatal("the count is not in the audit log")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// A request of more than Over at once needs approval, and proposes under M.
	if _, need := required(p, 11); !need {
		t.Fatal("11 at once: no approval needed")
	}
}

// TestVoterJoinRules: a request that is two actions (a voter's join is a key
// transfer too) is held to both rules: the most approvals, the shortest TTL.
func TestVoterJoinRules(t *testing.T) {
	h := newHarness(t, Config{Rules: map[string]Rule{
		actionClusterMembership: {M: 1, Role: Admin, TTL: time.Hour},
		actionCAKeyTransfer:     {M: 2, Role: Admin, TTL: 10 * time.Minute},
		actionOperatorManage:    {M: 2, Role: Admin, TTL: time.Hour},
	}})
	a, _, _, _ := threeAdmins(t, h)
	var nv, v Rule
	var needNV, needV bool
	if err := h.node.View(func(tx *bbolt.Tx) error {
		var err error
		if nv, needNV, err = h.svc.Required(tx, a.op, actionClusterMembership, 1); err != nil {
			return err
		}
		v, needV, err = h.svc.Required(tx, a.op, actionClusterMembership, 1, actionCAKeyTransfer)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !needNV || nv.M != 1 || !needV || v.M != 2 || v.TTL != 10*time.Minute {
		t.Fatalf("nonvoter %v %+v, voter %v %+v", needNV, nv, needV, v)
	}
	q, err := h.svc.Propose(testenv.Context(t, 20*time.Second), a.op, actionClusterMembership, []byte("join voter"), actionCAKeyTransfer)
	if err != nil {
		t.Fatal(err)
	}
	if q.Rule.M != 2 || q.Rule.TTL != 10*time.Minute {
		t.Fatalf("proposed under %+v", q.Rule)
	}
}
