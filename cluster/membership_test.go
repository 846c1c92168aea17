package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

func TestJoinTokenRefusals(t *testing.T) {
	nodes := newTestCluster(t, 1, nil)
	leader := nodes[0].c
	ctx := testenv.Context(t, 60*time.Second)
	joiner := func() *testNode {
		n := &testNode{t: t, vault: newHSMVault(t)}
		n.cfg = fastConfig(t, n.vault)
		return n
	}
	tryJoin := func(n *testNode, tok string) error {
		cfg := n.cfg
		cfg.Join = &Join{Addr: leader.Addr(), Token: tok}
		c, err := Open(testenv.Context(t, 10*time.Second), cfg)
		if err == nil {
			n.c = c
			t.Cleanup(n.kill)
		}
		return err
	}
	a := joiner()
	tok := grant(t, leader, a.cfg, Voter, time.Minute)
	if err := tryJoin(a, tok); err != nil {
		t.Fatalf("first use: %v", err)
	}
	if err := tryJoin(joiner(), tok); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("second use: err = %v, want ErrTokenInvalid", err)
	}

	// An expired grant (made through Raft with a TTL below what GrantJoin
	// allows, rather than wait a minute).
	b := joiner()
	keys, err := PrepareJoin(ctx, b.cfg.DataDir, "", b.vault)
	if err != nil {
		t.Fatal(err)
	}
	expiring, id, hash, err := NewJoinToken(leader.CAFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := NewCommand(cmdTokenCreate, 2, tokenGrant{ID: id, Hash: hash, TTL: int64(time.Millisecond), Role: string(Voter),
		Node: keys.Node, NodeKey: keys.NodeKey[:], Transport: keys.TransportKey[:]})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leader.submit(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	time.Sleep(20 * time.Millisecond)
	if err := tryJoin(b, expiring); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("expired: err = %v, want ErrTokenInvalid", err)
	}
	c := joiner()
	fresh := grant(t, leader, c.cfg, Voter, time.Minute)
	parsed, err := parseJoinToken(fresh)
	if err != nil {
		t.Fatal(err)
	}
	forgedSecret := parsed
	forgedSecret.secret = append([]byte{parsed.secret[0] ^ 1}, parsed.secret[1:]...)
	if err := tryJoin(c, forgedSecret.String()); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("forged secret: err = %v, want ErrTokenInvalid", err)
	}
	forgedID := parsed
	forgedID.id = []byte("12345678")
	if err := tryJoin(c, forgedID.String()); !errors.Is(err, ErrTokenInvalid) {
		t.Errorf("unknown token ID: err = %v, want ErrTokenInvalid", err)
	}
	// A token naming another cluster's CA: the joiner refuses the server
	// before sending the secret.
	otherCA := parsed
	otherCA.fingerprint = make([]byte, 32)
	if err := tryJoin(c, otherCA.String()); !errors.Is(err, errOtherCluster) {
		t.Errorf("wrong CA fingerprint: err = %v", err)
	}
	for _, bad := range []string{"", "inkan-join.zz", fresh + "x", strings.Replace(fresh, "inkan-join", "other", 1)} {
		if err := tryJoin(c, bad); !errors.Is(err, ErrTokenInvalid) {
			t.Errorf("malformed %q: err = %v", bad, err)
		}
	}
	// The forged attempts did not use up the real token.
	if err := tryJoin(c, fresh); err != nil {
		t.Errorf("genuine token after forgeries: %v", err)
	}
}

// TestJoinGrantedToKeys: a join token admits only the node it was granted to —
// its ID, its node key, its transport key and its role — and a refused join
// consumes nothing; a token made before grants admits nobody; the replicated
// keys reach only the approved transport key, at the join and by ShareKey, and
// each transfer is recorded with the receiving node and its transport key.
func TestJoinGrantedToKeys(t *testing.T) {
	nodes := newTestCluster(t, 1, func(c *Config) { c.ReplicatedKeys = []string{"ca-signing"} })
	leader := nodes[0]
	ctx := testenv.Context(t, 60*time.Second)
	if _, err := leader.vault.ReplicatedKey(ctx, "ca-signing", true); err != nil {
		t.Fatal(err)
	}
	joiner := func(id string) *testNode {
		n := &testNode{t: t, vault: newHSMVault(t)}
		n.cfg = fastConfig(t, n.vault)
		n.cfg.NodeID = id
		n.cfg.ReplicatedKeys = []string{"ca-signing"}
		return n
	}
	tryJoin := func(n *testNode, tok string, role Role) error {
		cfg := n.cfg
		cfg.Join = &Join{Addr: leader.c.Addr(), Token: tok, Role: role}
		c, err := Open(testenv.Context(t, 10*time.Second), cfg)
		if err == nil {
			n.c = c
			nodes = append(nodes, n)
			t.Cleanup(n.kill)
		}
		return err
	}
	approved := joiner("approved")
	tok := grant(t, leader.c, approved.cfg, Voter, time.Minute)

	// Another HSM presenting the approved node's ID: its node key differs.
	impostor := joiner("approved")
	if err := tryJoin(impostor, tok, Voter); !errors.Is(err, ErrJoinBinding) {
		t.Fatalf("another HSM with the approved ID: %v, want ErrJoinBinding", err)
	}
	// The approved HSM under another node ID.
	renamed := &testNode{t: t, vault: approved.vault}
	renamed.cfg = fastConfig(t, approved.vault)
	renamed.cfg.NodeID = "renamed"
	if err := tryJoin(renamed, tok, Voter); !errors.Is(err, ErrJoinBinding) {
		t.Fatalf("the approved keys under another ID: %v, want ErrJoinBinding", err)
	}
	// A voter token on a node configured as a nonvoter (and the reverse below).
	if err := tryJoin(approved, tok, Nonvoter); !errors.Is(err, ErrJoinRole) {
		t.Fatalf("voter token, nonvoter configuration: %v, want ErrJoinRole", err)
	}
	if _, err := impostor.vault.ReplicatedKey(ctx, "ca-signing", false); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatal("a refused joiner received a key")
	}
	// None of that consumed the token: the approved node joins with it.
	if err := tryJoin(approved, tok, Voter); err != nil {
		t.Fatalf("the approved node: %v", err)
	}
	for _, name := range []string{CAKeyName, "ca-signing"} {
		if _, err := approved.vault.ReplicatedKey(ctx, name, false); err != nil {
			t.Fatalf("approved voter lacks %s: %v", name, err)
		}
	}
	// A nonvoter token on a node configured as a voter: refused, not consumed,
	// and even taken as a nonvoter it receives no key.
	edge := joiner("edge")
	etok := grant(t, leader.c, edge.cfg, Nonvoter, time.Minute)
	if err := tryJoin(edge, etok, Voter); !errors.Is(err, ErrJoinRole) {
		t.Fatalf("nonvoter token, voter configuration: %v, want ErrJoinRole", err)
	}
	if err := tryJoin(edge, etok, ""); err != nil {
		t.Fatalf("edge: %v", err)
	}
	if _, err := edge.vault.ReplicatedKey(ctx, CAKeyName, false); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatal("a nonvoter received the cluster CA key")
	}
	// Whoever runs the edge cannot grant a join (to an HSM of theirs, as a
	// voter) nor approve a transport key by submitting the command through
	// the edge's own node: the leader refuses membership and key commands
	// from a nonvoter. Its other commands still go through.
	rogue := joiner("rogue")
	rkeys, err := PrepareJoin(ctx, rogue.cfg.DataDir, rogue.cfg.NodeID, rogue.vault)
	if err != nil {
		t.Fatal(err)
	}
	rtok, rid, rhash, err := NewJoinToken(edge.c.CAFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	if err := edge.c.GrantJoin(ctx, JoinGrant{TokenID: rid, SecretHash: rhash, Role: Voter, Keys: rkeys, TTL: time.Hour}); !errors.Is(err, errNonvoter) {
		t.Fatalf("a join granted through a nonvoter: %v, want errNonvoter", err)
	}
	if err := edge.c.ApproveTransportKey(ctx, "approved", rkeys.TransportKey, ""); !errors.Is(err, errNonvoter) {
		t.Fatalf("a transport key approved through a nonvoter: %v, want errNonvoter", err)
	}
	// Nor any command whose handler does not open it to nonvoters; one
	// that does goes through.
	if _, err := edge.c.Submit(ctx, putCmd(t, "kept-for-voters", false, nil)); !errors.Is(err, errNonvoter) {
		t.Fatalf("a command kept for voters, from the edge: %v, want errNonvoter", err)
	}
	edgeCmd, err := NewCommand("test.edgeput", 1, putBody{ID: "from-the-edge"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := edge.c.Submit(ctx, edgeCmd); err != nil {
		t.Fatalf("a command open to nonvoters, from the edge: %v", err)
	}
	if err := tryJoin(rogue, rtok, Voter); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("the rogue with the edge's grant: %v, want ErrTokenInvalid", err)
	}
	if _, err := rogue.vault.ReplicatedKey(ctx, CAKeyName, false); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatal("the rogue received the cluster CA key")
	}
	// A token of the old form (no grant) admits nobody.
	legacy := joiner("legacy")
	if _, err := PrepareJoin(ctx, legacy.cfg.DataDir, legacy.cfg.NodeID, legacy.vault); err != nil {
		t.Fatal(err)
	}
	ltok, lid, lhash, err := NewJoinToken(leader.c.CAFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	cmd, err := NewCommand(cmdTokenCreate, 1, tokenCreate{ID: lid, Hash: lhash, Expires: time.Now().Add(time.Hour).UnixNano(), Role: string(Voter)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := leader.c.submit(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	if err := tryJoin(legacy, ltok, Voter); !errors.Is(err, errTokenUnbound) {
		t.Fatalf("a token of the old form: %v, want ErrTokenUnbound", err)
	}

	// A key made later reaches the voter, for its approved transport key.
	if _, err := leader.vault.ReplicatedKey(ctx, "ca-2027", true); err != nil {
		t.Fatal(err)
	}
	if err := leader.c.ShareKey(ctx, "ca-2027"); err != nil {
		t.Fatal(err)
	}
	if _, err := approved.vault.ReplicatedKey(ctx, "ca-2027", false); err != nil {
		t.Fatalf("voter lacks the shared key: %v", err)
	}
	// The state machine refuses a transfer to another transport key, and to
	// the nonvoter, whatever the sender asks.
	for name, kt := range map[string]keyTransfer{
		"another transport key": {Key: "ca-2027", Node: "approved", Transport: make([]byte, 32)},
		"a nonvoter":            {Key: "ca-2027", Node: "edge", Transport: make([]byte, 32)},
		"no such node":          {Key: "ca-2027", Node: "nobody", Transport: make([]byte, 32)},
	} {
		cmd, err := NewCommand(cmdKeyTransfer, 1, kt)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := leader.c.submit(ctx, cmd); !errors.Is(err, errTransportNotApproved) {
			t.Errorf("transfer to %s: %v, want ErrTransportNotApproved", name, err)
		}
	}
	// Every transfer is on record with the receiver and its transport key.
	st, err := leader.c.Status()
	if err != nil {
		t.Fatal(err)
	}
	nk, err := approved.vault.NodeKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	nkf, _ := fingerprintKey(nk.Public())
	tk, err := approved.vault.TransportKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tkf, _ := approved.vault.TransportKeyFingerprint(tk)
	var found bool
	for _, m := range st.Members {
		if m.ID == "approved" {
			found = m.TransportKey == tkf && m.NodeKey == nkf
		}
	}
	if !found {
		t.Fatalf("member record of the approved voter: %+v", st.Members)
	}
	// Approving another transport key for the voter (as for one that joined
	// before grants) stops transfers to the key it has until that one is
	// approved again.
	if err := leader.c.ApproveTransportKey(ctx, "approved", KeyFingerprint{1}, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.vault.ReplicatedKey(ctx, "ca-2028", true); err != nil {
		t.Fatal(err)
	}
	if err := leader.c.ShareKey(ctx, "ca-2028"); !errors.Is(err, errTransportNotApproved) {
		t.Fatalf("share with a voter whose key is not approved: %v", err)
	}
	if _, err := approved.vault.ReplicatedKey(ctx, "ca-2028", false); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatal("the key reached a transport key that is not approved")
	}
	if err := leader.c.ApproveTransportKey(ctx, "edge", tkf, ""); !errors.Is(err, errTransportNotApproved) {
		t.Fatalf("a transport key for a nonvoter: %v", err)
	}
	if err := leader.c.ApproveTransportKey(ctx, "approved", tkf, "rq-0123456789abcdef"); err != nil {
		t.Fatal(err)
	}
	if err := leader.c.ShareKey(ctx, "ca-2028"); err != nil {
		t.Fatal(err)
	}
	if _, err := approved.vault.ReplicatedKey(ctx, "ca-2028", false); err != nil {
		t.Fatalf("after approval: %v", err)
	}
}

func TestNonvoterCatchesUpFromSnapshot(t *testing.T) {
	small := func(c *Config) {
		c.SnapshotThreshold = 16
		c.TrailingLogs = 4
	}
	nodes := newTestCluster(t, 3, small)
	leader := waitLeader(t, nodes)
	ctx := testenv.Context(t, 60*time.Second)
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
	if _, err := edge.vault.ReplicatedKey(ctx, CAKeyName, false); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatal("nonvoter received the cluster CA key")
	}
	st, err := edge.c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(st.Nonvoters, edge.c.ID()) || len(st.Voters) != 3 || st.Role != Nonvoter {
		t.Fatalf("status = %+v", st)
	}
	var m member
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
	if _, err := leader.c.Submit(testenv.Context(t, time.Second), putCmd(t, "no-quorum", false, nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a write without a quorum of voters: err = %v, want a deadline", err)
	}
}

func TestGroupCommit(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader := waitLeader(t, nodes)
	ctx := testenv.Context(t, 60*time.Second)
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
			if !errors.Is(o.err, errToldToRefuse) || !strings.Contains(o.err.Error(), o.id+"@") {
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
	ctx := testenv.Context(t, 60*time.Second)
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
	if err := edge.c.RemoveNode(testenv.Context(t, 3*time.Second), victim.c.ID()); !errors.Is(err, errNonvoter) {
		t.Fatalf("nonvoter removing a voter: err = %v, want errNonvoter", err)
	}
	if err := edge.c.TransferLeadership(testenv.Context(t, 3*time.Second)); !errors.Is(err, errNonvoter) {
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
	if resp, err := victim.c.rpc.call(testenv.Context(t, 2*time.Second), newLeader.c.Addr(), rpcRequest{Op: opReadIndex}); err == nil && resp.err() == nil {
		t.Fatal("removed node's connection still served")
	}
	if resp, err := victim.c.rpc.call(testenv.Context(t, 2*time.Second), newLeader.c.Addr(), rpcRequest{Op: opReadIndex}); err == nil && resp.err() == nil {
		t.Fatal("removed node could connect again")
	}
	if _, err := victim.c.Submit(testenv.Context(t, 2*time.Second), putCmd(t, "from-removed", false, nil)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("removed node's write: err = %v, want a deadline (no node serves it)", err)
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
