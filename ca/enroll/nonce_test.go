package enroll

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// applier runs the nonce handler's Apply on a bbolt file of its own, one transaction
// per command, rolled back on refusal as the cluster does: Apply is a pure function of
// the state and the entry, so no Raft is needed to test it.
type applier struct {
	t  *testing.T
	db *bbolt.DB
}

func newApplier(t *testing.T) *applier {
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, &bbolt.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range NonceHandler().Buckets() {
			if _, err := tx.CreateBucket(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return &applier{t: t, db: db}
}

var errRollback = errors.New("rollback")

func (a *applier) apply(op string, nonce []byte, at time.Time) ([]byte, error) {
	a.t.Helper()
	h := sha256.Sum256(nonce)
	cmd, err := cluster.NewCommand(nonceCommand, 1, nonceBody{Op: op, Hash: h[:]})
	if err != nil {
		a.t.Fatal(err)
	}
	var res []byte
	var refusal error
	err = a.db.Update(func(tx *bbolt.Tx) error {
		res, err = NonceHandler().Apply(tx, cluster.Entry{Time: at, Command: cmd})
		if errors.Is(err, cluster.ErrRefused) {
			refusal = err
			return errRollback
		}
		return err
	})
	if refusal != nil {
		return nil, refusal
	}
	if err != nil {
		a.t.Fatal(err)
	}
	return res, nil
}

func (a *applier) dump() []byte {
	var out bytes.Buffer
	_ = a.db.View(func(tx *bbolt.Tx) error {
		for _, name := range NonceHandler().Buckets() {
			_ = tx.Bucket(name).ForEach(func(k, v []byte) error {
				fmt.Fprintf(&out, "%s %x %x\n", name, k, v)
				return nil
			})
		}
		return nil
	})
	return out.Bytes()
}

func newNonce() []byte {
	n := make([]byte, enrollapi.NonceLen)
	_, _ = rand.Read(n)
	return n
}

// TestNonceApply: expiry is judged by the entry's time, a nonce redeems once, a
// replay inside the TTL is told from an unknown nonce, expired nonces are pruned, and
// two replicas applying the same entries hold the same bytes.
func TestNonceApply(t *testing.T) {
	t0 := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	a, b := newApplier(t), newApplier(t)
	n1, n2, n3 := newNonce(), newNonce(), newNonce()
	steps := []struct {
		op      string
		nonce   []byte
		at      time.Time
		wantErr error
	}{
		{opCreate, n1, t0, nil},
		{opCreate, n1, t0, errors.New("exists")}, // the same hash twice
		{opCreate, n2, t0.Add(time.Minute), nil},
		{opConsume, n1, t0.Add(4 * time.Minute), nil},
		{opConsume, n1, t0.Add(4 * time.Minute), errNonceReplayed},
		{opConsume, n3, t0.Add(4 * time.Minute), errNonceUnknown},
		{opConsume, n2, t0.Add(nonceTTL + time.Minute + time.Second), errNonceUnknown}, // expired, not redeemable
		{opConsume, n1, t0.Add(nonceTTL + time.Second), errNonceUnknown},               // pruned: unknown now
		{opCreate, n3, t0.Add(time.Hour), nil},
	}
	for i, s := range steps {
		for _, ap := range []*applier{a, b} {
			res, err := ap.apply(s.op, s.nonce, s.at)
			switch {
			case s.wantErr == nil && err != nil:
				t.Fatalf("step %d: %v", i, err)
			case s.wantErr != nil && !errors.Is(err, cluster.ErrRefused):
				t.Fatalf("step %d: err = %v, want a refusal", i, err)
			case errors.Is(s.wantErr, errNonceReplayed) || errors.Is(s.wantErr, errNonceUnknown):
				if !errors.Is(err, s.wantErr) {
					t.Fatalf("step %d: err = %v, want %v", i, err, s.wantErr)
				}
			}
			if s.op == opCreate && err == nil && len(res) != 8 {
				t.Fatalf("step %d: create returned %d bytes", i, len(res))
			}
		}
	}
	if !bytes.Equal(a.dump(), b.dump()) {
		t.Fatal("two replicas diverged")
	}
	// Only n3 is left (n1 and n2 expired and were pruned), and the live count says so.
	dump := string(a.dump())
	h3 := sha256.Sum256(n3)
	for _, n := range [][]byte{n1, n2} {
		h := sha256.Sum256(n)
		if bytes.Contains([]byte(dump), fmt.Appendf(nil, "%x", h)) {
			t.Errorf("expired nonce still held:\n%s", dump)
		}
	}
	if !bytes.Contains([]byte(dump), fmt.Appendf(nil, "%x", h3)) || !bytes.Contains([]byte(dump), fmt.Appendf(nil, "%x 0000000000000001", keyLive)) {
		t.Errorf("state after pruning:\n%s", dump)
	}
	// Nothing in the state is a nonce: only hashes.
	for _, n := range [][]byte{n1, n2, n3} {
		if bytes.Contains([]byte(dump), fmt.Appendf(nil, "%x", n)) {
			t.Error("a nonce is stored in clear")
		}
	}
}

// TestNoncePruneBounded: one command prunes at most pruneBatch expired nonces.
func TestNoncePruneBounded(t *testing.T) {
	a := newApplier(t)
	t0 := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	for i := range pruneBatch + 10 {
		if _, err := a.apply(opCreate, newNonce(), t0.Add(time.Duration(i)*time.Millisecond)); err != nil {
			t.Fatal(err)
		}
	}
	later := t0.Add(time.Hour)
	if _, err := a.apply(opCreate, newNonce(), later); err != nil {
		t.Fatal(err)
	}
	count := func() uint64 {
		var n uint64
		_ = a.db.View(func(tx *bbolt.Tx) error {
			v := tx.Bucket(bucketNonces).Get(keyLive)
			for _, c := range v {
				n = n<<8 | uint64(c)
			}
			return nil
		})
		return n
	}
	if got := count(); got != 11 { // 10 left over, plus the new one
		t.Fatalf("live after one prune = %d, want 11", got)
	}
	if _, err := a.apply(opCreate, newNonce(), later); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != 2 {
		t.Fatalf("live after two prunes = %d, want 2", got)
	}
}

// TestNonceRaceThreeNodes posts one request (one nonce) to two nodes of a
// three-node cluster at the same time: exactly one certificate is issued, the
// other request is refused as a replay, however far each got (the CA records the
// nonce with the intent). Then many uses of one re-bind nonce across all three
// nodes: exactly one is recorded. A challenge writes nothing to the cluster.
func TestNonceRaceThreeNodes(t *testing.T) {
	nodes := threeNodes(t)
	ctx := context.Background()
	envs := clusterEnvs(t, nodes)
	count := func() int {
		if err := nodes[0].c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		n := 0
		_ = nodes[0].c.View(func(tx *bbolt.Tx) error {
			is, err := ca.Read(tx).ActiveIssuer()
			if err != nil {
				return err
			}
			return ca.Read(tx).Walk(is.ID, func(ca.CertStatus) error { n++; return nil })
		})
		return n
	}
	applied := func() uint64 {
		var top uint64
		for _, n := range nodes {
			st, err := n.c.Status()
			if err != nil {
				t.Fatal(err)
			}
			top = max(top, st.AppliedIndex)
		}
		return top
	}
	before := applied()
	for range 20 {
		envs[1].challenge(t)
	}
	if got := applied(); got != before {
		t.Errorf("20 challenges moved the applied index from %d to %d: a challenge must not write", before, got)
	}
	for round := range 3 {
		req, _ := envs[0].request(t, proofSpec{subKey: fx.subKeys[round%len(fx.subKeys)]})
		body := mustJSON(t, req)
		certs := count()
		var wg sync.WaitGroup
		statuses := make([]int, 2)
		problems := make([]string, 2)
		for i, e := range envs[1:] {
			wg.Go(func() {
				resp, err := e.srv.Client().Post(e.srv.URL+enrollapi.PathEnroll, "application/json", bytes.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				defer resp.Body.Close()
				statuses[i] = resp.StatusCode
				if resp.StatusCode != http.StatusCreated {
					var p enrollapi.Problem
					_ = json.NewDecoder(resp.Body).Decode(&p)
					problems[i] = p.Name()
				}
			})
		}
		wg.Wait()
		won, lost := 0, 0
		for i := range statuses {
			switch {
			case statuses[i] == http.StatusCreated:
				won++
			case statuses[i] == http.StatusConflict && problems[i] == "nonce-replayed":
				lost++
			}
		}
		if won != 1 || lost != 1 || count() != certs+1 {
			t.Fatalf("round %d: statuses %v problems %v, %d certificates more: want exactly one issued", round, statuses, problems, count()-certs)
		}
	}

	// Many uses of one nonce, spread over the nodes.
	nonce, expires, err := envs[2].h.nonces.make(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok, replayed int
	for i := range 12 {
		wg.Go(func() {
			err := nodes[i%3].a.UseNonce(ctx, nonceHash(nonce), expires)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, ca.ErrNonceUsed):
				replayed++
			default:
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if ok != 1 || replayed != 11 {
		t.Fatalf("%d recorded, %d refused as used; want 1 and 11", ok, replayed)
	}
}

// threeNodes starts a three-voter cluster, each node's key vault and CA keys in a
// SoftHSM token of its own and an Authority on each, and makes the issuing CA once
// all three have joined (its key is sent to every voter, wrapped).
func threeNodes(t testing.TB) []*node {
	t.Helper()
	needFixture(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	dir := t.TempDir()
	first, err := openNode(ctx, filepath.Join(dir, "n0"), softhsm.NewToken(t), true, nil)
	if err != nil {
		t.Fatal(err)
	}
	nodes := []*node{first}
	t.Cleanup(func() {
		for _, n := range nodes {
			n.close()
		}
	})
	for i := 1; i < 3; i++ {
		st := softhsm.NewToken(t)
		ndir := filepath.Join(dir, fmt.Sprintf("n%d", i))
		tok := clustertest.JoinToken(t, first.c, cluster.Config{DataDir: ndir, KeyVault: cluster.NewHSMVault(st.HSM)}, cluster.Voter)
		n, err := openNode(ctx, ndir, st, false, &cluster.Join{Addr: first.c.Addr(), Token: tok})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, n)
	}
	if _, _, err := initCA(ctx, first.a); err != nil {
		t.Fatal(err)
	}
	return nodes
}

// clusterEnvs serves one API per node, all under one audience (the public name in
// front of the cluster), each issuing through its own node's authority.
func clusterEnvs(t testing.TB, nodes []*node) []*env {
	const audience = "https://enroll.example.jp/v1/enroll"
	envs := make([]*env, len(nodes))
	for i, n := range nodes {
		envs[i] = newEnv(t, "", func(c *Config) { c.Cluster = n.c; c.Audience = audience; c.Issuer = &testIssuer{next: n.a} })
		envs[i].issuer = envs[i].h.cfg.Issuer.(*testIssuer)
	}
	return envs
}
