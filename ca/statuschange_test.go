package ca

import (
	"bytes"
	"errors"
	"math/big"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestStatusResponsesTravel: a status change asked on any node is signed by
// the leader (its Publisher's StatusResponses) before it is committed, at a
// time fixed in the command; the responses travel in the entry (version 2) and
// every node's apply hook finds the leader's bytes, which state exactly the
// status, reason and time that node's state then holds. A change the state
// refuses (ErrStatus, ErrHeldByOperator, ErrNotFound) is not signed and hands
// nothing to any hook; a leader that cannot sign sends the change at version
// 1, and it applies all the same.
func TestStatusResponsesTravel(t *testing.T) {
	type seenEntry struct {
		typ     string
		version uint
		resps   []byte
	}
	var mu sync.Mutex
	seen := map[string][]seenEntry{} // data dir → the status entries applied there
	tc := newCAClusterWith(t, 3, perNodeHSM, func(cfg *cluster.Config) {
		dir := cfg.DataDir
		cfg.Hooks = append(cfg.Hooks, func(_ *bbolt.Tx, e cluster.Entry, result []byte) error {
			switch e.Command.Type {
			case commandRevoke, commandHold, commandRelease:
			default:
				return nil
			}
			_, _, resps := statusEntryResponses(e, result)
			mu.Lock()
			seen[dir] = append(seen[dir], seenEntry{typ: e.Command.Type, version: e.Command.Version, resps: resps})
			mu.Unlock()
			return nil
		})
	})
	ctx := testenv.Context(t, 90*time.Second)
	tc.initCA(ctx, hsm.ECP256)
	pubs := map[*caNode]*recordingPublisher{}
	for _, n := range tc.nodes {
		pubs[n] = &recordingPublisher{node: n.c.ID()}
		n.a.cfg.Publisher = pubs[n]
	}
	leader, follower := tc.leader(), tc.follower()
	issue := func() *big.Int {
		t.Helper()
		req, _ := derivedRequest(t)
		iss, err := leader.a.Issue(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return iss.Serial
	}
	// settle has every node apply what was committed and returns how many
	// status entries each has seen.
	settle := func() map[string]int {
		t.Helper()
		out := map[string]int{}
		for _, n := range tc.nodes {
			if err := n.c.Barrier(ctx); err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			out[n.cfg.DataDir] = len(seen[n.cfg.DataDir])
			mu.Unlock()
		}
		return out
	}
	asked := func(n *caNode) int {
		pubs[n].mu.Lock()
		defer pubs[n].mu.Unlock()
		return len(pubs[n].statuses)
	}
	const operator = "sha256:0000000000000000000000000000000000000000000000000000000000000001"

	serial, other := issue(), issue()
	for _, c := range []struct {
		name   string
		via    *caNode
		do     func(a *Authority) error
		typ    string
		status Status
		reason crlreason.Reason
	}{
		{"hold through a follower", follower, func(a *Authority) error { return a.Hold(ctx, serial, operator) }, commandHold, Held, crlreason.CertificateHold},
		{"release on the leader", leader, func(a *Authority) error { return a.Release(ctx, serial, operator) }, commandRelease, Good, 0},
		{"revoke through a follower", follower, func(a *Authority) error { return a.Revoke(ctx, serial, 1, "") }, commandRevoke, Revoked, 1},
	} {
		before, leaderAsked, viaAsked := settle(), asked(leader), asked(c.via)
		if err := c.do(c.via.a); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		after := settle()
		if asked(leader) != leaderAsked+1 || c.via != leader && asked(c.via) != viaAsked {
			t.Errorf("%s: the leader signed %d times, %s %d times; want the leader once, the other never",
				c.name, asked(leader)-leaderAsked, c.via.c.ID(), asked(c.via)-viaAsked)
		}
		for _, n := range tc.nodes {
			dir := n.cfg.DataDir
			if after[dir] != before[dir]+1 {
				t.Fatalf("%s: %s applied %d status entries, want 1", c.name, n.c.ID(), after[dir]-before[dir])
			}
			var rec Record
			if err := n.c.View(func(tx *bbolt.Tx) error { var err error; rec, err = Read(tx).Lookup(serial); return err }); err != nil {
				t.Fatal(err)
			}
			if rec.Status != c.status || c.status != Good && rec.Reason != c.reason {
				t.Fatalf("%s: %s holds %s (reason %d), want %s (%d)", c.name, n.c.ID(), rec.Status, rec.Reason, c.status, c.reason)
			}
			mu.Lock()
			got := seen[dir][after[dir]-1]
			mu.Unlock()
			want := statusBytes(leader.c.ID(), serial.Bytes(), rec.Status, int(rec.Reason), rec.RevokedAt)
			if got.typ != c.typ || got.version != 2 || !bytes.Equal(got.resps, want) {
				t.Errorf("%s: %s's hook found %s v%d %q; want %s v2 %q (the leader's, for the state's status and time)",
					c.name, n.c.ID(), got.typ, got.version, got.resps, c.typ, want)
			}
		}
	}

	// Refused: nothing signed, nothing applied, nothing handed to a hook.
	if err := follower.a.Hold(ctx, other, operator); err != nil {
		t.Fatal(err)
	}
	unknown := new(big.Int).Lsh(big.NewInt(1), 70)
	for _, c := range []struct {
		name string
		do   func(a *Authority) error
		want error
	}{
		{"hold a revoked certificate", func(a *Authority) error { return a.Hold(ctx, serial, operator) }, ErrStatus},
		{"revoke a revoked certificate", func(a *Authority) error { return a.Revoke(ctx, serial, 1, "") }, ErrStatus},
		{"release a revoked certificate", func(a *Authority) error { return a.Release(ctx, serial, operator) }, ErrStatus},
		{"release an operator's hold as system", func(a *Authority) error { return a.Release(ctx, other, "") }, ErrHeldByOperator},
		{"hold an unknown serial", func(a *Authority) error { return a.Hold(ctx, unknown, operator) }, ErrNotFound},
	} {
		for _, via := range []*caNode{leader, follower} {
			before, leaderAsked := settle(), asked(leader)
			err := c.do(via.a)
			if !errors.Is(err, c.want) || !errors.Is(err, cluster.ErrRefused) {
				t.Errorf("%s through %s: %v, want %v (a refusal)", c.name, via.c.ID(), err, c.want)
			}
			after := settle()
			if asked(leader) != leaderAsked {
				t.Errorf("%s through %s: the leader signed responses for a change its state refuses", c.name, via.c.ID())
			}
			for dir, k := range after {
				if k != before[dir] {
					t.Errorf("%s through %s: a hook in %s saw %d status entries", c.name, via.c.ID(), dir, k-before[dir])
				}
			}
		}
	}

	// A leader that cannot sign: the change goes at version 1, with the
	// entry's time, and no responses.
	pubs[leader].mu.Lock()
	pubs[leader].noFirst = true
	pubs[leader].mu.Unlock()
	before := settle()
	if err := follower.a.Release(ctx, other, operator); err != nil {
		t.Fatal(err)
	}
	after := settle()
	for _, n := range tc.nodes {
		dir := n.cfg.DataDir
		mu.Lock()
		got := seen[dir][after[dir]-1]
		mu.Unlock()
		if after[dir] != before[dir]+1 || got.version != 1 || got.resps != nil {
			t.Errorf("%s: without responses: %d entries, the last v%d with %q; want one at v1 with none",
				n.c.ID(), after[dir]-before[dir], got.version, got.resps)
		}
	}
}

// TestStatusTime: the time a version 2 status command fixes is the state's,
// unless it is more than maxClockSkew from the entry's time; a version 1
// command takes the entry's time.
func TestStatusTime(t *testing.T) {
	entry := time.Date(2026, 12, 7, 15, 0, 0, 0, time.UTC)
	e := cluster.Entry{Time: entry}
	for _, c := range []struct {
		name string
		at   int64
		want int64
	}{
		{"none", 0, entry.UnixNano()},
		{"a second before", entry.Add(-time.Second).UnixNano(), entry.Add(-time.Second).UnixNano()},
		{"a second after", entry.Add(time.Second).UnixNano(), entry.Add(time.Second).UnixNano()},
		{"at the skew's edge", entry.Add(-maxClockSkew).UnixNano(), entry.Add(-maxClockSkew).UnixNano()},
		{"past the skew", entry.Add(-maxClockSkew - time.Nanosecond).UnixNano(), entry.UnixNano()},
		{"far ahead", entry.Add(time.Hour).UnixNano(), entry.UnixNano()},
	} {
		if got := statusTime(statusBodyV2{At: c.at}, e); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
	// Both versions decode; a version 2 body under version 1 does not.
	v2, _ := cluster.NewCommand(commandRevoke, 2, statusBodyV2{Serial: []byte{1}, Reason: 1, Actor: "system", At: 5, Responses: []byte("r")})
	v1, _ := cluster.NewCommand(commandRevoke, 1, statusBody{Serial: []byte{1}, Reason: 1, Actor: "system"})
	if b, err := decodeStatusCommand(v2); err != nil || b.At != 5 || string(b.Responses) != "r" {
		t.Errorf("v2: %+v, %v", b, err)
	}
	if b, err := decodeStatusCommand(v1); err != nil || b.At != 0 || b.Responses != nil || b.Reason != 1 {
		t.Errorf("v1: %+v, %v", b, err)
	}
	v2.Version = 1
	if _, err := decodeStatusCommand(v2); err == nil {
		t.Error("a version 2 body decoded as version 1")
	}
}
