package operator

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// opNode is one voter of a test cluster with its own SoftHSM token and its own
// operator service, wired as node will wire it.
type opNode struct {
	c   *cluster.Cluster
	svc *Service
	m   *clustertest.Member
}

// opGroup starts one voter with the package's handlers and a Service on each
// member as it opens (clustertest.Voters); more join with g.Add. nodes holds
// the members' services by index.
func opGroup(t *testing.T, runner func(context.Context, Request) ([]byte, error)) (g *clustertest.Group, nodes *[]*opNode) {
	t.Helper()
	nodes = new([]*opNode)
	g = clustertest.Voters(t, 1, clustertest.Options{
		Config: cluster.Config{Handlers: Handlers(), ReplicatedKeys: []string{keyName}, Logger: testenv.Logger()},
		Tweak:  func(_ int, cfg *cluster.Config) { cfg.LeaderLeaseTimeout = 150 * time.Millisecond },
		Open: func(m *clustertest.Member) {
			svc, err := New(Config{
				Cluster: m.Cluster, Vault: m.Config.KeyVault, Sweep: 50 * time.Millisecond,
				Rules:  map[string]Rule{actionPolicyApply: {M: 2, Role: Admin, TTL: time.Hour}, actionOperatorManage: {M: 2, Role: Admin, TTL: time.Hour}},
				Run:    runner,
				Logger: testenv.Logger(),
			})
			if err != nil {
				t.Fatal(err)
			}
			*nodes = append(*nodes, &opNode{c: m.Cluster, svc: svc, m: m})
		},
		Close: func(m *clustertest.Member) { (*nodes)[m.Index].svc.Close() },
	})
	return g, nodes
}

func leaderOf(t *testing.T, nodes []*opNode) (leader *opNode, followers []*opNode) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		for i, n := range nodes {
			if st, err := n.c.Status(); err == nil && st.State == "Leader" {
				rest := append(append([]*opNode(nil), nodes[:i]...), nodes[i+1:]...)
				return n, rest
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader")
	return nil, nil
}

func waitOn(t *testing.T, n *opNode, id string, want State) Request {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var q Request
		err := n.c.View(func(tx *bbolt.Tx) error { var err error; q, err = LookupRequest(tx, id); return err })
		if err == nil && q.State == want {
			return q
		}
		if time.Now().After(deadline) {
			t.Fatalf("request %s: %s (%v), want %s", id, q.State, err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestThreeVoters: operators are added from a follower (the leader signs), a
// request proposed on one node and approved on others runs once in the whole
// cluster; a leader that dies while running one leaves it interrupted, not run
// again; and the next leader, holding the operator CA key it received at its
// join, signs operator certificates that every node accepts.
func TestThreeVoters(t *testing.T) {
	if testing.Short() {
		t.Skip("a 3-node cluster")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var runs atomic.Int32
	block := make(chan struct{}) // closed: runners return at once
	runner := func(ctx context.Context, r Request) ([]byte, error) {
		runs.Add(1)
		if string(r.Body) == "hang" {
			select {
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-block:
			}
		}
		return r.Body, nil
	}
	g, all := opGroup(t, runner)
	first := (*all)[0]
	aKey := newKey(t)
	aOp, err := first.svc.Bootstrap(ctx, "a", csrFor(t, aKey), 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		g.Add()
	}
	nodes := *all
	leader, followers := leaderOf(t, nodes)
	// The ceremony, from a follower: the leader signs.
	a := &person{key: aKey, op: aOp}
	add := func(via *opNode, name string, role Role) *person {
		t.Helper()
		key := newKey(t)
		op, err := via.svc.Add(ctx, a.op, Change{Op: OpAdd, Name: name, Role: role, CSR: csrFor(t, key)})
		if err != nil {
			t.Fatalf("add %s via a follower: %v", name, err)
		}
		return &person{key: key, op: op}
	}
	b := add(followers[0], "b", Admin)
	c := add(followers[1], "c", Admin)

	decide := func(via *opNode, who *person, q Request) {
		t.Helper()
		sig, err := SignApproval(who.key, q.ID, q.Digest, Approve)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := via.svc.Decide(ctx, q.ID, who.op, Approve, sig); err != nil {
			t.Fatal(err)
		}
	}
	// Proposed on one follower, approved on the other and on the leader: runs
	// once in the cluster.
	q, err := followers[0].svc.Propose(ctx, a.op, actionPolicyApply, []byte("policy v2"))
	if err != nil {
		t.Fatal(err)
	}
	decide(followers[1], b, q)
	decide(leader, c, q)
	for _, n := range nodes {
		waitOn(t, n, q.ID, stateExecuted)
	}
	settled(t, leader.svc)
	if n := runs.Load(); n != 1 {
		t.Fatalf("ran %d times in the cluster, want once", n)
	}

	// A request whose runner is still running when its leader dies.
	hang, err := followers[0].svc.Propose(ctx, a.op, actionPolicyApply, []byte("hang"))
	if err != nil {
		t.Fatal(err)
	}
	decide(followers[0], b, hang)
	decide(followers[1], c, hang)
	waitOn(t, followers[0], hang.ID, stateExecuting)
	for runs.Load() != 2 {
		time.Sleep(10 * time.Millisecond)
	}
	leader.m.Kill()
	close(block)
	next, rest := leaderOf(t, followers)
	got := waitOn(t, next, hang.ID, stateInterrupted)
	if got.Error == "" {
		t.Fatal("interrupted without a reason")
	}
	settled(t, next.svc)
	if n := runs.Load(); n != 2 {
		t.Fatalf("ran %d times, want 2 (the interrupted request never again)", n)
	}

	// The new leader signs with the operator CA key it received at its join: an
	// operator added by approval verifies on both remaining nodes.
	key := newKey(t)
	body, _ := Change{Op: OpAdd, Name: "eve", Role: Auditor, CSR: csrFor(t, key)}.Body()
	oq, err := rest[0].svc.Propose(ctx, a.op, actionOperatorManage, body)
	if err != nil {
		t.Fatal(err)
	}
	decide(rest[0], b, oq)
	decide(next, c, oq)
	done := waitOn(t, next, oq.ID, stateExecuted)
	eve := (&harness{t: t}).person(Operator{Certificate: done.Result}, key)
	for _, n := range []*opNode{next, rest[0]} {
		if err := n.c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		err := n.c.View(func(tx *bbolt.Tx) error {
			op, err := Verify(tx, eve.chain(), time.Now())
			if err == nil && op.Role != Auditor {
				err = errors.New("wrong role")
			}
			return err
		})
		if err != nil {
			t.Fatalf("new auditor on a remaining node: %v", err)
		}
	}
}
