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

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestOnLeaderAndCallLeader: leader duties start on the leader with a context that
// ends with its term, and start again on the next leader; a leader call made on
// any node runs on the leader, and one the leader turns away as not-leader is
// retried until a leader serves it.
func TestOnLeaderAndCallLeader(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	ctx := testenv.Context(t, 60*time.Second)
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
		HandleCall(c, "echo", func(ctx context.Context, req string) (string, error) {
			if refuse.Add(-1) >= 0 {
				return "", ErrNotLeader
			}
			switch req {
			case "fail":
				return "", fmt.Errorf("echo: %w", errToldToFail)
			case "fail plainly":
				return "", errors.New("told to fail plainly")
			case "who":
				who, ok := CallerOf(ctx)
				return fmt.Sprintf("%s %v %v", who.Node, who.Voter, ok), nil
			}
			return c.ID() + ":" + req, nil
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
		res, err := Call[string](ctx, n.c, "echo", "hi")
		if err != nil || res != leader.c.ID()+":hi" {
			t.Fatalf("call via %s = %q, %v", n.c.ID(), res, err)
		}
	}
	// The handler knows who called: the node the RPC authenticated, or
	// nobody for the leader's own call.
	var follower *testNode
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}
	if res, err := Call[string](ctx, follower.c, "echo", "who"); err != nil || res != follower.c.ID()+" true true" {
		t.Fatalf("who called, via follower %s: %q, %v", follower.c.ID(), res, err)
	}
	if res, err := Call[string](ctx, leader.c, "echo", "who"); err != nil || res != " false false" {
		t.Fatalf("who called, on the leader: %q, %v", res, err)
	}
	refuse.Store(2)
	if res, err := Call[string](ctx, follower.c, "echo", "again"); err != nil || !strings.HasSuffix(res, ":again") {
		t.Fatalf("call after two not-leader answers = %q, %v", res, err)
	}
	// The handler's error keeps its Refusal's code through the forward, and
	// its message; an error without a code matches no Refusal.
	for _, n := range []*testNode{follower, leader} {
		_, err := Call[string](ctx, n.c, "echo", "fail")
		if !errors.Is(err, errToldToFail) || errors.Is(err, errToldToRefuse) || errors.Is(err, ErrRefused) {
			t.Fatalf("failing call via %s: err = %v, want errToldToFail alone", n.c.ID(), err)
		}
		if want := "echo: " + errToldToFail.Error(); !strings.HasSuffix(err.Error(), want) {
			t.Fatalf("failing call via %s: message %q, want it to end with %q", n.c.ID(), err, want)
		}
		_, err = Call[string](ctx, n.c, "echo", "fail plainly")
		var ref *Refusal
		if err == nil || errors.As(err, &ref) || errors.Is(err, ErrNotLeader) {
			t.Fatalf("plainly failing call via %s: err = %v, want an error with no code", n.c.ID(), err)
		}
	}
	if _, err := Call[string](ctx, follower.c, "nothing", ""); !errors.Is(err, errNoCall) {
		t.Fatalf("a call no handler serves: err = %v, want errNoCall", err)
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
	// (A duty runs once per term: under load the leader may lose a term and
	// win the next, so the duty may start twice.)
	started := make(chan struct{})
	var once sync.Once
	next.c.OnLeader(func(context.Context) { once.Do(func() { close(started) }) })
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
	ctx := testenv.Context(t, 60*time.Second)
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
	if _, err := edge.vault.ReplicatedKey(ctx, "ca-later", false); !errors.Is(err, hsm.ErrKeyNotFound) {
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
	ctx := testenv.Context(t, 60*time.Second)
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

// TestLeaderWake: a waiter's channel closes at the next change and only then;
// a waiter that comes after it waits for the one after.
func TestLeaderWake(t *testing.T) {
	var w leaderWake
	first := w.changed()
	if w.changed() != first {
		t.Fatal("two waiters before a change got different channels")
	}
	select {
	case <-first:
		t.Fatal("closed before any change")
	default:
	}
	w.wake()
	<-first
	w.wake() // nobody waiting: nothing to close twice
	next := w.changed()
	select {
	case <-next:
		t.Fatal("a waiter after the change saw it")
	default:
	}
	w.wake()
	<-next
}
