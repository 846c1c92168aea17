package cluster

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestJoinTokenRefusals(t *testing.T) {
	nodes := newTestCluster(t, 1, nil)
	leader := nodes[0].c
	ctx := ctxT(t, 60*time.Second)
	tryJoin := func(tok string) error {
		n := &testNode{t: t, vault: newHSMVault(t)}
		n.cfg = fastConfig(t, n.vault)
		n.cfg.Join = &Join{Addr: leader.Addr(), Token: tok}
		c, err := Open(ctxT(t, 10*time.Second), n.cfg)
		if err == nil {
			n.c = c
			t.Cleanup(n.kill)
		}
		return err
	}
	tok, err := leader.CreateJoinToken(ctx, time.Minute, Voter)
	if err != nil {
		t.Fatal(err)
	}
	if err := tryJoin(tok); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := tryJoin(tok); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("second use: err = %v, want ErrTokenInvalid", err)
	}

	expiring, err := leader.CreateJoinToken(ctx, time.Millisecond, Voter)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := tryJoin(expiring); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("expired: err = %v, want ErrTokenInvalid", err)
	}

	fresh, err := leader.CreateJoinToken(ctx, time.Minute, Voter)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := parseJoinToken(fresh)
	if err != nil {
		t.Fatal(err)
	}
	forgedSecret := parsed
	forgedSecret.secret = append([]byte{parsed.secret[0] ^ 1}, parsed.secret[1:]...)
	if err := tryJoin(forgedSecret.String()); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("forged secret: err = %v, want ErrTokenInvalid", err)
	}
	forgedID := parsed
	forgedID.id = []byte("12345678")
	if err := tryJoin(forgedID.String()); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("unknown token ID: err = %v, want ErrTokenInvalid", err)
	}
	// A token naming another cluster's CA: the joiner refuses the server
	// before sending the secret.
	otherCA := parsed
	otherCA.fingerprint = make([]byte, 32)
	if err := tryJoin(otherCA.String()); err == nil || !strings.Contains(err.Error(), "not of the cluster") {
		t.Errorf("wrong CA fingerprint: err = %v", err)
	}
	for _, bad := range []string{"", "inkan-join.zz", fresh + "x", strings.Replace(fresh, "inkan-join", "other", 1)} {
		if err := tryJoin(bad); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("malformed %q: err = %v", bad, err)
		}
	}
	// The forged attempts did not use up the real token.
	if err := tryJoin(fresh); err != nil {
		t.Errorf("genuine token after forgeries: %v", err)
	}
}

func TestNonvoterCatchesUpFromSnapshot(t *testing.T) {
	small := func(c *Config) {
		c.SnapshotThreshold = 16
		c.TrailingLogs = 4
	}
	nodes := newTestCluster(t, 3, small)
	leader := waitLeader(t, nodes)
	ctx := ctxT(t, 60*time.Second)
	for i := 0; i < 100; i++ {
		if _, err := leader.c.Submit(ctx, putCmd(t, fmt.Sprintf("s%03d", i), false, nil)); err != nil {
			t.Fatal(err)
		}
	}
	// Whichever voter leads when the nonvoter joins must have compacted.
	for _, n := range nodes {
		if err := n.c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		if err := n.c.raft.Snapshot().Error(); err != nil {
			t.Fatal(err)
		}
		first, err := n.c.store.FirstIndex()
		if err != nil || first <= 1 {
			t.Fatalf("log not compacted: first index %d, %v", first, err)
		}
	}

	edge := addNode(t, nodes[1].c, Nonvoter, small)
	nodes = append(nodes, edge)
	if err := edge.c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if got := counts(t, edge.c); len(got) != 100 {
		t.Fatalf("nonvoter has %d of 100 records", len(got))
	}
	if idx := edge.c.raft.Stats()["last_snapshot_index"]; idx == "0" {
		t.Fatal("nonvoter caught up without a snapshot")
	}
	// It keeps following, and holds no replicated key.
	sub := edge.c.Subscribe(16, "test.put")
	if _, err := nodes[2].c.Submit(ctx, putCmd(t, "later", false, nil)); err != nil {
		t.Fatal(err)
	}
	select {
	case e := <-sub.C:
		if e.Resync || !strings.Contains(string(e.Result), "later") {
			t.Fatalf("event = %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("nonvoter saw no event")
	}
	if _, err := edge.vault.ReplicatedKey(ctx, CAKeyName, false); err == nil {
		t.Fatal("nonvoter received the cluster CA key")
	}
	st, err := edge.c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(st.Nonvoters, edge.c.ID()) || len(st.Voters) != 3 || st.Role != Nonvoter {
		t.Fatalf("status = %+v", st)
	}
	var m Member
	for _, x := range st.Members {
		if x.ID == edge.c.ID() {
			m = x
		}
	}
	if m.Role != Nonvoter || m.Addr != edge.c.Addr() || m.JoinedAt.IsZero() {
		t.Fatalf("member record = %+v", m)
	}
	// A nonvoter never counts toward quorum: with two voters down the
	// cluster cannot commit even though the nonvoter is up.
	leader = waitLeader(t, nodes)
	var down []*testNode
	for _, n := range nodes[:3] {
		if n != leader && len(down) < 2 {
			down = append(down, n)
		}
	}
	for _, n := range down {
		n.kill()
	}
	if _, err := leader.c.Submit(ctxT(t, time.Second), putCmd(t, "no-quorum", false, nil)); err == nil {
		t.Fatal("committed without a quorum of voters")
	}
}

func TestGroupCommit(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader := waitLeader(t, nodes)
	ctx := ctxT(t, 60*time.Second)
	const workers, each = 64, 8
	type outcome struct {
		id     string
		refuse bool
		res    []byte
		err    error
	}
	out := make(chan outcome, workers*each)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				id := fmt.Sprintf("w%02d-%d", w, i)
				refuse := (w+i)%5 == 0
				res, err := leader.c.Submit(ctx, putCmd(t, id, refuse, nil))
				out <- outcome{id, refuse, res, err}
			}
		}()
	}
	wg.Wait()
	close(out)
	entries := map[string]bool{}   // Raft indexes of entries holding accepted commands
	refusedIn := map[string]bool{} // and of entries holding refused ones
	for o := range out {
		switch {
		case o.refuse:
			if !errors.Is(o.err, ErrRefused) || !strings.Contains(o.err.Error(), o.id+"@") {
				t.Errorf("%s: err = %v, want its own refusal", o.id, o.err)
				continue
			}
			at, _, _ := strings.Cut(strings.SplitN(o.err.Error(), "@", 2)[1], ":")
			refusedIn[at] = true
		case o.err != nil:
			t.Errorf("%s: %v", o.id, o.err)
		default:
			prefix := "ok:" + o.id + "@"
			if !strings.HasPrefix(string(o.res), prefix) {
				t.Errorf("%s got result %q", o.id, o.res)
				continue
			}
			at, _, _ := strings.Cut(strings.TrimPrefix(string(o.res), prefix), ".")
			entries[at] = true
		}
	}
	accepted := 0
	got := counts(t, leader.c)
	for id, n := range got {
		if n != 1 {
			t.Errorf("%s applied %d times", id, n)
		}
		accepted++
	}
	total := workers * each
	if accepted == 0 || len(entries) >= accepted {
		t.Fatalf("%d accepted commands in %d entries: no batching", accepted, len(entries))
	}
	mixed := 0
	for at := range refusedIn {
		if entries[at] {
			mixed++
		}
	}
	if mixed == 0 {
		t.Fatal("no entry held both a refused and an accepted command")
	}
	t.Logf("%d commands (%d accepted) in at most %d entries; %d entries mixed refused and accepted commands",
		total, accepted, len(entries)+total-accepted, mixed)
}

func TestRemoveAndTransferLeadership(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	ctx := ctxT(t, 60*time.Second)
	leader := waitLeader(t, nodes)
	var followers []*testNode
	for _, n := range nodes {
		if n != leader {
			followers = append(followers, n)
		}
	}
	// Transfer, asked of a follower (again if a loaded machine made the
	// old leader win the next election).
	newLeader := leader
	for try := 0; newLeader == leader; try++ {
		if try == 5 {
			t.Fatal("leadership did not move")
		}
		if err := followers[0].c.TransferLeadership(ctx); err != nil {
			t.Fatal(err)
		}
		time.Sleep(100 * time.Millisecond)
		newLeader = waitLeader(t, nodes)
	}
	// The new leader (which got the CA key at its join) admits a node.
	edge := addNode(t, newLeader.c, Nonvoter, nil)
	nodes = append(nodes, edge)

	// Remove a voter that is not the leader, asked of another node.
	var victim, asker *testNode
	for _, n := range nodes[:3] {
		switch {
		case n == newLeader:
		case victim == nil:
			victim = n
		default:
			asker = n
		}
	}
	// An edge may not remove a voter or move leadership.
	if err := edge.c.RemoveNode(ctxT(t, 3*time.Second), victim.c.ID()); err == nil || !strings.Contains(err.Error(), "not allowed") {
		t.Fatalf("nonvoter removing a voter: err = %v", err)
	}
	if err := edge.c.TransferLeadership(ctxT(t, 3*time.Second)); err == nil {
		t.Fatal("nonvoter moved leadership")
	}
	// The victim forwards a write, so it holds a pooled RPC connection to
	// the leader when it is removed.
	if _, err := victim.c.Submit(ctx, putCmd(t, "before-removal", false, nil)); err != nil {
		t.Fatal(err)
	}
	if err := asker.c.RemoveNode(ctx, victim.c.ID()); err != nil {
		t.Fatal(err)
	}
	st, err := newLeader.c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if slices.Contains(st.Voters, victim.c.ID()) || len(st.Voters) != 2 {
		t.Fatalf("voters after removal: %v", st.Voters)
	}
	for _, m := range st.Members {
		if m.ID == victim.c.ID() {
			t.Fatalf("removed node still a member: %+v", m)
		}
	}
	// Its live connections are dropped (after a grace period that lets the
	// answer to a node's own removal out) and its certificate is refused.
	time.Sleep(removalGrace + 100*time.Millisecond)
	if resp, err := victim.c.rpc.call(ctxT(t, 2*time.Second), newLeader.c.Addr(), rpcRequest{Op: opReadIndex}); err == nil && resp.err() == nil {
		t.Fatal("removed node's connection still served")
	}
	if resp, err := victim.c.rpc.call(ctxT(t, 2*time.Second), newLeader.c.Addr(), rpcRequest{Op: opReadIndex}); err == nil && resp.err() == nil {
		t.Fatal("removed node could connect again")
	}
	if _, err := victim.c.Submit(ctxT(t, 2*time.Second), putCmd(t, "from-removed", false, nil)); err == nil {
		t.Fatal("removed node could still write")
	}
	if _, err := asker.c.Submit(ctx, putCmd(t, "after-removal", false, nil)); err != nil {
		t.Fatal(err)
	}
	// An edge decommissioned cleanly leaves on its own.
	edgeID := edge.c.ID()
	if err := edge.c.Leave(ctx); err != nil {
		t.Fatal(err)
	}
	edge.c = nil
	if err := asker.c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	st, err = asker.c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Nonvoters) != 0 || len(st.Members) != 2 {
		t.Fatalf("after the edge left: nonvoters %v, members %+v (edge %s)", st.Nonvoters, st.Members, edgeID)
	}
}
