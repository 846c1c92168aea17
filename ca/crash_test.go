package ca

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/big"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

var errCrash = errors.New("test: the leader died here")

// crashNode stops n's cluster as a crash would (no leave, no cleanup by the
// pipeline: the hook returns errCrash, which aborts it where it is). The hook may
// run in the handler of a forwarded request, which the cluster's shutdown waits
// for, so the shutdown runs on its own and restart waits for it to end.
func crashNode(n *caNode) {
	n.down.Store(true)
	c := n.c
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_ = c.Shutdown(ctx)
	}()
}

// restart opens a crashed node again from its data directory, once its files
// are closed.
func (tc *testCluster) restart(ctx context.Context, n *caNode) {
	tc.t.Helper()
	if n.c != nil {
		select {
		case <-n.c.Done():
		case <-ctx.Done():
			tc.t.Fatalf("node %s never finished shutting down", n.c.ID())
		}
	}
	if n.a != nil {
		n.a.Close()
	}
	n.c, n.a = nil, nil
	n.down.Store(false)
	n.open(ctx)
}

// waitStatus waits until serial has the status on every running node.
func (tc *testCluster) waitStatus(ctx context.Context, serial []byte, want Status, reason crlreason.Reason) []Record {
	tc.t.Helper()
	for {
		recs := tc.lookupEverywhere(ctx, serial)
		ok := true
		for _, r := range recs {
			ok = ok && r.Status == want && r.Reason == reason
		}
		if ok {
			return recs
		}
		select {
		case <-ctx.Done():
			tc.t.Fatalf("serial %x: records %+v, want %s/%d", serial, recs, want, reason)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestLeaderCrashBetweenSteps kills the leader after each step of the pipeline and
// checks what the next leader makes of it: an intent without an issued record is
// resolved as revoked (cessationOfOperation) on every node, never delivered; an
// issued record survives; the restarted node agrees.
func TestLeaderCrashBetweenSteps(t *testing.T) {
	ctx := testenv.Context(t, 120*time.Second)
	tc := newCACluster(t, 3, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	for _, c := range []struct {
		step   string
		status Status
		reason crlreason.Reason
		hasDER bool
	}{
		{stepIntent, Revoked, crlreason.CessationOfOperation, false},
		{stepSigned, Revoked, crlreason.CessationOfOperation, false},
		{stepIssued, Good, 0, true},
	} {
		t.Run(c.step, func(t *testing.T) {
			leader := tc.leader()
			var serial []byte
			leader.a.crash = func(step string, s []byte) error {
				if step != c.step {
					return nil
				}
				serial = s
				crashNode(leader)
				return errCrash
			}
			req, _ := derivedRequest(t)
			if _, err := leader.a.Issue(ctx, req); !errors.Is(err, errCrash) {
				t.Fatalf("issue on the crashing leader: err = %v", err)
			}
			leader.a.crash = nil
			next := tc.leader()
			if next == leader {
				t.Fatal("the crashed node still leads")
			}
			recs := tc.waitStatus(ctx, serial, c.status, c.reason)
			for _, r := range recs {
				if (r.DER != nil) != c.hasDER {
					t.Errorf("record has DER = %t, want %t", r.DER != nil, c.hasDER)
				}
			}
			// The new leader issues, and the crashed node catches up when back.
			req2, _ := derivedRequest(t)
			iss, err := next.a.Issue(ctx, req2)
			if err != nil {
				t.Fatal(err)
			}
			tc.restart(ctx, leader)
			tc.waitStatus(ctx, serial, c.status, c.reason)
			tc.waitStatus(ctx, iss.Serial.Bytes(), Good, 0)
		})
	}
}

// TestLeaderCrashUnderLoad kills the leader at a random point of the pipeline
// while requests arrive on every node, and checks the invariants: no serial twice,
// every acknowledged certificate on every node (the restarted one too), every
// dangling intent resolved as revoked by the new leader, and every signature the
// HSM made covered by a record.
func TestLeaderCrashUnderLoad(t *testing.T) {
	ctx := testenv.Context(t, 120*time.Second)
	tc := newCACluster(t, 3, perNodeHSM)
	tc.initCA(ctx, hsm.ECP256)
	leader := tc.leader()

	var mu sync.Mutex
	signed := map[string]bool{}
	steps := []string{stepIntent, stepSigned, stepIssued}
	target := steps[rand.IntN(len(steps))]
	at := int64(5 + rand.IntN(20))
	var calls atomic.Int64
	var once sync.Once
	t.Logf("the leader dies at the %dth %q step", at, target)
	for _, n := range tc.nodes {
		n.a.crash = func(step string, s []byte) error {
			if step == stepSigned {
				mu.Lock()
				signed[string(s)] = true
				mu.Unlock()
			}
			if n != leader {
				return nil
			}
			if n.down.Load() || (step == target && calls.Add(1) == at) {
				once.Do(func() { crashNode(n) })
				return errCrash
			}
			return nil
		}
	}

	var acked sync.Map // serial → DER
	var wg sync.WaitGroup
	var failed atomic.Int64
	deadline := time.Now().Add(3 * time.Second)
	for w := range 24 {
		via := tc.nodes[w%len(tc.nodes)]
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				req, _ := derivedRequest(t)
				cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				iss, err := via.a.Issue(cctx, req)
				cancel()
				if err != nil {
					if failed.Add(1)%500 == 1 {
						t.Logf("via %s: %v", via.c.ID(), err)
					}
					if via == leader {
						return // it is dead
					}
					continue
				}
				if _, dup := acked.LoadOrStore(string(iss.Serial.Bytes()), iss.DER); dup {
					t.Errorf("serial %x acknowledged twice", iss.Serial)
				}
			}
		}()
	}
	wg.Wait()
	if calls.Load() < at {
		t.Fatalf("the leader never reached its %dth %s step (only %d)", at, target, calls.Load())
	}
	for _, n := range tc.nodes {
		n.a.crash = nil
	}
	tc.restart(ctx, leader)
	newLeader := tc.leader()
	t.Logf("acknowledged %d, failed %d; leader now %s", countMap(&acked), failed.Load(), newLeader.c.ID())

	// Every node: no pending intent left, every acknowledged certificate good with
	// the DER the caller got, every signature covered by a record.
	for _, n := range tc.running() {
		for {
			if err := n.c.Barrier(ctx); err != nil {
				t.Fatal(err)
			}
			var pending int
			_ = n.c.View(func(tx *bbolt.Tx) error { pending = tx.Bucket(bucketIntents).Stats().KeyN; return nil })
			if pending == 0 {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("node %s: %d intents never resolved", n.c.ID(), pending)
			}
			time.Sleep(50 * time.Millisecond)
		}
		err := n.c.View(func(tx *bbolt.Tx) error {
			acked.Range(func(k, v any) bool {
				r, err := Read(tx).Lookup(new(big.Int).SetBytes([]byte(k.(string))))
				if err != nil || r.Status != Good || !bytes.Equal(r.DER, v.([]byte)) {
					t.Errorf("node %s: acknowledged %x: %+v, %v", n.c.ID(), k, r.Status, err)
				}
				return true
			})
			mu.Lock()
			defer mu.Unlock()
			for s := range signed {
				r, err := Read(tx).Lookup(new(big.Int).SetBytes([]byte(s)))
				if err != nil {
					t.Errorf("node %s: signed %x has no record", n.c.ID(), s)
					continue
				}
				if r.Status == Revoked && r.DER == nil && r.Reason != crlreason.CessationOfOperation {
					t.Errorf("node %s: %x resolved with reason %d", n.c.ID(), s, r.Reason)
				}
			}
			return tx.Bucket(bucketCerts).ForEach(func(k, v []byte) error {
				var r certRecord
				if err := decMode.Unmarshal(v, &r); err != nil {
					return err
				}
				if Status(r.Status) == Pending {
					return fmt.Errorf("serial %x still pending", k)
				}
				return nil
			})
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func countMap(m *sync.Map) int {
	n := 0
	m.Range(func(any, any) bool { n++; return true })
	return n
}
