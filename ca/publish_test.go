package ca

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// recordingPublisher is a Publisher that says what it was asked: its first
// responses are "first:" and the serial, and Await fails while fail is set.
type recordingPublisher struct {
	mu    sync.Mutex
	node  string
	asked [][]byte // FirstResponses, by serial
	// statuses: StatusResponses, by serial
	statuses [][]byte
	awaited  [][]byte
	fail     error
	noFirst  bool
}

func (p *recordingPublisher) FirstResponses(_ string, serial []byte) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.noFirst {
		return nil, errors.New("no responder certificate")
	}
	p.asked = append(p.asked, serial)
	return append([]byte("first:"), serial...), nil
}

// StatusResponses says who signed what: the node, the serial and the status
// with its reason and time, which the test compares with every node's state.
func (p *recordingPublisher) StatusResponses(_ string, serial []byte, st CertStatus) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.noFirst {
		return nil, errors.New("no responder certificate")
	}
	p.statuses = append(p.statuses, serial)
	return statusBytes(p.node, serial, st.Status, int(st.Reason), st.RevokedAt), nil
}

func statusBytes(node string, serial []byte, s Status, reason int, at time.Time) []byte {
	var ns int64
	if !at.IsZero() {
		ns = at.UnixNano()
	}
	return fmt.Appendf(nil, "status:%s:%x:%s:%d:%d", node, serial, s, reason, ns)
}

func (p *recordingPublisher) Await(_ context.Context, serial []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.awaited = append(p.awaited, serial)
	return p.fail
}

func (p *recordingPublisher) awaitedSerial(s []byte) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.awaited {
		if bytes.Equal(a, s) {
			return true
		}
	}
	return false
}

// TestPublisher: the leader's first responses travel in the intent's entry
// (ca.intents version 3) and every node's apply hook finds them for the
// serial; the node that answers waits on its publisher before it returns an
// issuance or a revocation, and a publisher that does not come to serve the
// status fails the call with ErrNotPublished (the record is committed all the
// same); without first responses the entry stays at the version its intents
// need (1 or 2), with them it is at version 3.
func TestPublisher(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]map[string][]byte{} // data dir → serial → bytes
	var versions []uint
	tc := newCAClusterWith(t, 3, perNodeHSM, func(cfg *cluster.Config) {
		dir := cfg.DataDir
		cfg.Hooks = append(cfg.Hooks, func(_ *bbolt.Tx, e cluster.Entry, result []byte) error {
			if e.Command.Type != commandIntents {
				return nil
			}
			_, serials, resps := intentResponses(e, result)
			mu.Lock()
			defer mu.Unlock()
			versions = append(versions, e.Command.Version)
			if seen[dir] == nil {
				seen[dir] = map[string][]byte{}
			}
			for i, s := range serials {
				seen[dir][string(s)] = resps[i]
			}
			return nil
		})
	})
	ctx := testenv.Context(t, 60*time.Second)
	tc.initCA(ctx, hsm.ECP256)
	pubs := map[*caNode]*recordingPublisher{}
	for _, n := range tc.nodes {
		pubs[n] = &recordingPublisher{node: n.c.ID()}
		n.a.cfg.Publisher = pubs[n]
	}
	leader, follower := tc.leader(), tc.follower()

	req, _ := derivedRequest(t)
	iss, err := follower.a.Issue(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	serial := iss.Serial.Bytes()
	if !pubs[follower].awaitedSerial(serial) {
		t.Error("the follower returned the certificate without waiting on its publisher")
	}
	if pubs[leader].awaitedSerial(serial) {
		t.Error("the leader waited on its publisher for a request it did not answer")
	}
	for _, n := range tc.nodes {
		if err := n.c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		got := seen[n.cfg.DataDir][string(serial)]
		mu.Unlock()
		if want := append([]byte("first:"), serial...); !bytes.Equal(got, want) {
			t.Errorf("%s: the apply hook found %q for the serial, want %q", n.c.ID(), got, want)
		}
	}

	mu.Lock()
	if !slices.Contains(versions, 3) {
		t.Errorf("intents entries at versions %v; with first responses, want 3", versions)
	}
	mu.Unlock()

	// A revocation waits on the answering node's publisher too.
	if err := follower.a.Revoke(ctx, iss.Serial, 1, ""); err != nil {
		t.Fatal(err)
	}
	if n := len(pubs[follower].awaited); n != 2 {
		t.Errorf("the follower waited %d times, want 2 (issue, revoke)", n)
	}

	// A publisher that never serves: the issuance is refused, yet recorded.
	notServed := fmt.Errorf("not yet: %w", context.DeadlineExceeded)
	pubs[leader].mu.Lock()
	pubs[leader].fail = notServed
	pubs[leader].mu.Unlock()
	req2, _ := derivedRequest(t)
	_, err = leader.a.Issue(ctx, req2)
	if !errors.Is(err, errNotPublished) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("issue with a publisher that does not serve: %v, want ErrNotPublished", err)
	}
	pubs[leader].mu.Lock()
	last := pubs[leader].awaited[len(pubs[leader].awaited)-1]
	pubs[leader].mu.Unlock()
	var rec Record
	if err := leader.c.View(func(tx *bbolt.Tx) error {
		var err error
		rec, err = Read(tx).Lookup(new(big.Int).SetBytes(last))
		return err
	}); err != nil || rec.Status != Good {
		t.Fatalf("the unacknowledged certificate: %+v, %v; want it recorded good", rec, err)
	}
	pubs[leader].mu.Lock()
	pubs[leader].fail = nil
	pubs[leader].mu.Unlock()

	// Without first responses the intents go at version 1 or 2. Every node
	// applies what came before first: a follower still applying the last
	// issuance's entry (version 3) would otherwise count against the next.
	for _, n := range tc.nodes {
		if err := n.c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
	}
	pubs[leader].mu.Lock()
	pubs[leader].noFirst = true
	pubs[leader].mu.Unlock()
	mu.Lock()
	versions = nil
	mu.Unlock()
	req3, _ := derivedRequest(t)
	if _, err := leader.a.Issue(ctx, req3); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, v := range versions {
		if v == 3 {
			t.Errorf("an intents entry without first responses at version %d", v)
		}
	}
	if len(versions) == 0 {
		t.Error("no intents entry applied")
	}
}
