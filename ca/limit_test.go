package ca

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// certCount is how many serials n's state holds, once it has applied everything
// committed.
func certCount(t *testing.T, ctx context.Context, n *caNode) int {
	t.Helper()
	if err := n.c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	var k int
	_ = n.c.View(func(tx *bbolt.Tx) error { k = tx.Bucket(bucketCerts).Stats().KeyN; return nil })
	return k
}

// TestPersonLimit: the per-person cap holds on the leader and through a follower,
// a refused request writes nothing, revoked certificates do not count, and
// concurrent requests on every node cannot pass it together.
func TestPersonLimit(t *testing.T) {
	ctx := testenv.Context(t, 90*time.Second)
	tc := newCACluster(t, 3, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	leader, follower := tc.leader(), tc.follower()

	req, _ := derivedRequest(t)
	req.Decision.MaxPerPerson = 2
	var first *Issued
	for i := range 2 {
		iss, err := leader.a.Issue(ctx, req)
		if err != nil {
			t.Fatalf("issuance %d under the cap: %v", i+1, err)
		}
		first = iss
	}
	before := certCount(t, ctx, leader)
	for _, via := range []*caNode{leader, follower} {
		if _, err := via.a.Issue(ctx, req); !errors.Is(err, ErrPersonLimit) {
			t.Fatalf("third issuance via %s: err = %v, want ErrPersonLimit", via.c.ID(), err)
		}
	}
	for _, n := range tc.running() {
		if got := certCount(t, ctx, n); got != before {
			t.Errorf("node %s: %d serials after refusals, want %d", n.c.ID(), got, before)
		}
	}
	// Another person is not limited by this one's certificates; no cap, no limit.
	other, _ := derivedRequest(t)
	other.Decision.MaxPerPerson = 1
	if _, err := follower.a.Issue(ctx, other); err != nil {
		t.Fatalf("another person: %v", err)
	}
	uncapped := req
	uncapped.Decision.MaxPerPerson = 0
	if _, err := leader.a.Issue(ctx, uncapped); err != nil {
		t.Fatalf("no cap: %v", err)
	}
	// Now 3 count; after two revocations, 1 does, and one more fits under 2.
	if _, err := leader.a.Issue(ctx, req); !errors.Is(err, ErrPersonLimit) {
		t.Fatalf("over the cap: err = %v", err)
	}
	if err := leader.a.Revoke(ctx, first.Serial, crlreason.Unspecified, actorSystem); err != nil {
		t.Fatal(err)
	}
	if _, err := leader.a.Issue(ctx, req); !errors.Is(err, ErrPersonLimit) {
		t.Fatalf("2 of 2 after one revocation: err = %v", err)
	}
	var n int
	_ = leader.c.View(func(tx *bbolt.Tx) error {
		var err error
		n, err = Read(tx).CountByPerson(req.Person, time.Now())
		return err
	})
	if n != 2 {
		t.Fatalf("CountByPerson = %d, want 2", n)
	}

	bad := req
	bad.Person = nil
	if _, err := leader.a.Issue(ctx, bad); !errors.Is(err, ErrTemplate) {
		t.Errorf("a cap without a person: err = %v, want ErrTemplate", err)
	}

	// Three at once, from every node: exactly two pass.
	for round, vias := range [][]*caNode{tc.running(), {leader, leader, leader}} {
		req, _ := derivedRequest(t)
		req.Decision.MaxPerPerson = 2
		var wg sync.WaitGroup
		errs := make([]error, len(vias))
		for i, via := range vias {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[i] = via.a.Issue(ctx, req)
			}()
		}
		wg.Wait()
		ok, limited := 0, 0
		for _, err := range errs {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ErrPersonLimit):
				limited++
			default:
				t.Errorf("round %d: %v", round, err)
			}
		}
		if ok != 2 || limited != 1 {
			t.Errorf("round %d: %d issued, %d refused, want 2 and 1", round, ok, limited)
		}
	}
}

// TestPersonLimitInOneBatch applies intents as the cluster applies one batch (in
// one transaction, one after the other): a later intent counts the earlier ones,
// expired certificates do not count, and version-1 intents (no cap) still apply.
func TestPersonLimitInOneBatch(t *testing.T) {
	db := testState(t)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	person := sum256([]byte("person"))
	entry := func(t *testing.T, at time.Time, serial byte, notAfter time.Time, max int) cluster.Entry {
		cmd, err := intentCommand(intentBody{Serial: []byte{serial}, Issuer: "ca-1", TBSHash: sum256([]byte{serial}),
			Person: person, NotAfter: notAfter.UnixNano(), Actor: actorEnrollment, MaxPerPerson: max})
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]uint{false: 1, true: 2}[max > 0]; cmd.Version != want {
			t.Fatalf("intent with cap %d: version %d, want %d", max, cmd.Version, want)
		}
		return cluster.Entry{Time: at, Command: cmd}
	}
	hour := time.Hour
	steps := []struct {
		name    string
		at      time.Time
		serial  byte
		expires time.Duration // after at
		max     int
		refused bool
	}{
		{"first, soon expired", now, 1, hour, 2, false},
		{"second", now, 2, 100 * hour, 2, false},
		{"third, over the cap", now, 3, 100 * hour, 2, true},
		{"no cap (version 1)", now, 4, 100 * hour, 0, false},
		{"once the first expired, 2 count", now.Add(2 * hour), 5, 100 * hour, 2, true},
		{"a cap of 3 takes it", now.Add(2 * hour), 6, 100 * hour, 3, false},
	}
	err := db.Update(func(tx *bbolt.Tx) error {
		for _, s := range steps {
			_, err := applyIntent(tx, entry(t, s.at, s.serial, s.at.Add(s.expires), s.max))
			if s.refused != (err != nil) || err != nil && !(errors.Is(err, ErrPersonLimit) && errors.Is(err, cluster.ErrRefused)) {
				t.Errorf("%s: err = %v, refused want %t", s.name, err, s.refused)
			}
			if s.refused && tx.Bucket(bucketCerts).Get([]byte{s.serial}) != nil {
				// The cluster rolls a refused command's writes back; the check
				// comes before any write, so there is nothing to roll back.
				t.Errorf("%s: refused intent wrote its record", s.name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
