package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestOnLeaderAndCallLeader: leader duties start on the leader with a context that
// ends with its term, and start again on the next leader; a leader call made on
// any node runs on the leader, and one the leader turns away as not-leader is
// retried until a leader serves it.
func TestOnLeaderAndCallLeader(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	ctx := ctxT(t, 60*time.Second)
	type term struct {
		node string
		ctx  context.Context
	}
	var mu sync.Mutex
	var terms []term
	var refuse atomic.Int32
	for _, n := range nodes {
		c := n.c
		c.OnLeader(func(ctx context.Context) {
			mu.Lock()
			terms = append(terms, term{c.ID(), ctx})
			mu.Unlock()
		})
		c.HandleLeaderCall("echo", func(ctx context.Context, req []byte) ([]byte, error) {
			if refuse.Add(-1) >= 0 {
				return nil, ErrNotLeader
			}
			if string(req) == "fail" {
				return nil, errors.New("told to fail")
			}
			return []byte(c.ID() + ":" + string(req)), nil
		})
	}
	leader := waitLeader(t, nodes)
	current := func() term {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			var live []term
			for _, tm := range terms {
				if tm.ctx.Err() == nil {
					live = append(live, tm)
				}
			}
			mu.Unlock()
			if len(live) == 1 {
				return live[0]
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("not exactly one live leader term: %v", terms)
		return term{}
	}
	if got := current(); got.node != leader.c.ID() {
		t.Fatalf("duties run on %s, leader is %s", got.node, leader.c.ID())
	}
	first := current()

	for _, n := range nodes {
		res, err := n.c.CallLeader(ctx, "echo", []byte("hi"))
		if err != nil || string(res) != leader.c.ID()+":hi" {
			t.Fatalf("call via %s = %q, %v", n.c.ID(), res, err)
		}
	}
	refuse.Store(2)
	var follower *testNode
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}
	if res, err := follower.c.CallLeader(ctx, "echo", []byte("again")); err != nil || !strings.HasSuffix(string(res), ":again") {
		t.Fatalf("call after two not-leader answers = %q, %v", res, err)
	}
	if _, err := follower.c.CallLeader(ctx, "echo", []byte("fail")); err == nil || !strings.Contains(err.Error(), "told to fail") {
		t.Fatalf("failing call: err = %v", err)
	}
	if _, err := follower.c.CallLeader(ctx, "nothing", nil); err == nil {
		t.Fatal("a call no handler serves succeeded")
	}

	if err := leader.c.TransferLeadership(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-first.ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the old leader's term did not end")
	}
	next := waitLeader(t, nodes)
	if got := current(); got.node != next.c.ID() || got.node == first.node {
		t.Fatalf("after transfer duties run on %s, leader is %s", got.node, next.c.ID())
	}
	// Registering while leading starts the duty at once.
	started := make(chan struct{})
	next.c.OnLeader(func(context.Context) { close(started) })
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("a duty registered on the leader did not start")
	}
}

// TestSharedKeyReachesLaterVoter: a key shared with ShareKey is recorded, so a
// voter joining afterwards receives it at join, while a nonvoter does not.
func TestSharedKeyReachesLaterVoter(t *testing.T) {
	nodes := newTestCluster(t, 1, nil)
	ctx := ctxT(t, 60*time.Second)
	first := nodes[0]
	made, err := first.vault.ReplicatedKey(ctx, "ca-later", true)
	if err != nil {
		t.Fatal(err)
	}
	if err := first.c.ShareKey(ctx, "ca-later"); err != nil {
		t.Fatal(err)
	}
	voter := addNode(t, first.c, Voter, nil)
	edge := addNode(t, first.c, Nonvoter, nil)
	t.Cleanup(func() { voter.kill(); edge.kill() })
	got, err := voter.vault.ReplicatedKey(ctx, "ca-later", false)
	if err != nil || !publicKeysEqual(got.Public(), made.Public()) {
		t.Fatalf("later voter: %v", err)
	}
	if _, err := edge.vault.ReplicatedKey(ctx, "ca-later", false); err == nil {
		t.Fatal("a nonvoter received a replicated key")
	}
	names, err := voter.c.replicatedKeys()
	if err != nil || fmt.Sprint(names) != fmt.Sprint([]string{CAKeyName, "ca-later"}) {
		t.Fatalf("replicated keys = %v, %v", names, err)
	}
}

// TestTransferPastADownVoter: Raft's own pick after an election is the first
// voter in the configuration, which may be down; TransferLeadership then asks the
// others, so leadership still moves.
func TestTransferPastADownVoter(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	ctx := ctxT(t, 60*time.Second)
	first := nodes[0] // first in the configuration: the bootstrap node
	for waitLeader(t, nodes) == first {
		if err := first.c.TransferLeadership(ctx); err != nil {
			t.Fatal(err)
		}
	}
	first.kill()
	leader := waitLeader(t, nodes)
	if err := leader.c.TransferLeadership(ctx); err != nil {
		t.Fatalf("transfer with the first voter down: %v", err)
	}
	if next := waitLeader(t, nodes); next == leader || next == first {
		t.Fatalf("leadership still on %s", next.c.ID())
	}
}
