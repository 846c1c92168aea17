package cluster

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// vaultOn opens the token cfg names once more, as another host reaches the
// same network HSM.
func vaultOn(t testing.TB, cfg hsm.Config) *hsmVault {
	cfg.Logger = testenv.Logger()
	tok, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return NewHSMVault(tok).(*hsmVault)
}

// dump lists every key of the state by bucket path, nested buckets
// included, so that two states compare key by key and byte by byte.
func dump(tx *bbolt.Tx) map[string]map[string]string {
	out := map[string]map[string]string{}
	var walk func(top string, prefix string, b *bbolt.Bucket)
	walk = func(top, prefix string, b *bbolt.Bucket) {
		_ = b.ForEach(func(k, v []byte) error {
			if v == nil && b.Bucket(k) != nil {
				walk(top, prefix+string(k)+"/", b.Bucket(k))
				return nil
			}
			out[top][prefix+string(k)] = string(v)
			return nil
		})
	}
	_ = tx.ForEach(func(name []byte, b *bbolt.Bucket) error {
		out[string(name)] = map[string]string{}
		walk(string(name), "", b)
		return nil
	})
	return out
}

func dumpFile(t testing.TB, path string) map[string]map[string]string {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var d map[string]map[string]string
	_ = db.View(func(tx *bbolt.Tx) error { d = dump(tx); return nil })
	return d
}

// putIndex reads the Raft index out of a test.put result ("ok:id@index.seq").
func putIndex(t testing.TB, res []byte) uint64 {
	t.Helper()
	s := string(res)
	at := strings.LastIndexByte(s, '@')
	dot := strings.LastIndexByte(s, '.')
	n, err := strconv.ParseUint(s[at+1:dot], 10, 64)
	if at < 0 || dot < at || err != nil {
		t.Fatalf("result %q: no index", s)
	}
	return n
}

// membershipBuckets are what a restore drops: the old cluster's.
var membershipBuckets = map[string]bool{
	string(bucketMembers): true, string(bucketTokens): true, string(bucketDenied): true, string(bucketRequests): true,
	string(bucketMemberKeys): true,
}

// TestBackupRestore backs up a two-voter cluster on its follower and starts
// new clusters from the copy: on the same HSM as the old cluster (a second
// session of its token, as a network HSM), refused on a token without the
// keys, and on a token the keys were moved to. The handlers' state comes
// through unchanged, the Raft log goes on past the copy's index, the old
// cluster's tokens and certificates are dead, and nodes join.
func TestBackupRestore(t *testing.T) {
	ctx := testenv.Context(t, 120*time.Second)
	var nodes []*testNode
	t.Cleanup(func() {
		for _, n := range nodes {
			n.kill()
		}
	})
	newNode := func(vault KeyVault) *testNode {
		n := &testNode{t: t, vault: vault}
		n.cfg = fastConfig(t, vault)
		n.cfg.ReplicatedKeys = []string{"ca-signing"}
		nodes = append(nodes, n)
		return n
	}
	join := func(via *Cluster, role Role) *testNode {
		n := newNode(newHSMVault(t))
		n.cfg.Join = &Join{Addr: via.Addr(), Token: grant(t, via, n.cfg, role, time.Minute)}
		n.open(ctx)
		return n
	}
	submit := func(c *Cluster, id string) uint64 {
		t.Helper()
		res, err := c.Submit(ctx, putCmd(t, id, false, []byte("value of "+id)))
		if err != nil {
			t.Fatal(err)
		}
		return putIndex(t, res)
	}

	// The old cluster: two voters, a replicated key configured and one
	// shared at run time, state written by a handler, an unused token.
	oldHSM := softhsm.NewToken(t)
	first := newNode(vaultOn(t, oldHSM.Config()))
	for _, name := range []string{"ca-signing", "ca-2027"} {
		if _, err := first.vault.ReplicatedKey(ctx, name, true); err != nil {
			t.Fatal(err)
		}
	}
	first.cfg.Bootstrap = true
	first.open(ctx)
	waitLeader(t, nodes)
	second := join(first.c, Voter)
	if err := first.c.ShareKey(ctx, "ca-2027"); err != nil {
		t.Fatal(err)
	}
	var last uint64
	for i := range 40 {
		last = submit(first.c, fmt.Sprintf("k%02d", i))
	}
	unusedNode := newNode(newHSMVault(t))
	unused := grant(t, first.c, unusedNode.cfg, Voter, time.Hour)

	// Backup on the follower is current: it holds the leader's last write.
	var buf bytes.Buffer
	info, err := second.c.Backup(ctx, &buf)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(buf.Bytes())
	ca := sha256.Sum256(second.c.creds.ca.Raw)
	switch {
	case !info.Current || info.Node != second.c.ID() || info.Index < last:
		t.Fatalf("backup info %+v, want current, from %s, index ≥ %d", info, second.c.ID(), last)
	case info.Size != int64(buf.Len()) || !bytes.Equal(info.SHA256, sum[:]):
		t.Fatalf("backup info: size %d sha %x, wrote %d bytes sha %x", info.Size, info.SHA256, buf.Len(), sum)
	case !bytes.Equal(info.ClusterCA, ca[:]) || time.Since(info.Time) > time.Minute:
		t.Fatalf("backup info: cluster CA %x time %v", info.ClusterCA, info.Time)
	}
	path := filepath.Join(t.TempDir(), "state.backup")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	copied := dumpFile(t, path)
	var applied uint64
	if err := second.c.View(func(tx *bbolt.Tx) error { applied = readApplied(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if got := readAppliedFile(t, path); got != info.Index || applied < info.Index {
		t.Fatalf("copy's applied index %d, info %d, node %d", got, info.Index, applied)
	}
	if len(copied[string(bucketTest)]) != 40 || len(copied[string(bucketTokens)]) == 0 || len(copied[string(bucketMembers)]) != 2 {
		t.Fatalf("copy lacks state: %d puts, %d tokens, %d members", len(copied[string(bucketTest)]), len(copied[string(bucketTokens)]), len(copied[string(bucketMembers)]))
	}

	restoreCfg := func(n *testNode) {
		n.cfg.Bootstrap = true
		n.cfg.Restore = &Restore{Path: path, SHA256: info.SHA256}
	}
	openErr := func(cfg Config) error {
		c, err := Open(testenv.Context(t, 20*time.Second), cfg)
		if err == nil {
			c.Shutdown(context.Background())
			t.Fatalf("Open of %s succeeded", cfg.DataDir)
		}
		return err
	}
	noState := func(dir string) {
		t.Helper()
		if err := checkRestoreTarget(dir); err != nil {
			t.Fatalf("a refused restore left state behind: %v", err)
		}
	}

	t.Run("refusals", func(t *testing.T) {
		n := newNode(vaultOn(t, oldHSM.Config()))
		restoreCfg(n)
		cfg := n.cfg
		cfg.Bootstrap = false
		if err := openErr(cfg); !errors.Is(err, errRestoreNoStart) {
			t.Errorf("restore without bootstrap: %v", err)
		}
		cfg = n.cfg
		cfg.Restore = &Restore{Path: path, SHA256: make([]byte, 32)}
		if err := openErr(cfg); !errors.Is(err, errNotTheCopy) {
			t.Errorf("wrong digest: %v", err)
		}
		noState(cfg.DataDir)
		cfg.Restore = &Restore{Path: filepath.Join(t.TempDir(), "none")}
		if err := openErr(cfg); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("missing file: %v", err)
		}
		garbage := filepath.Join(t.TempDir(), "garbage")
		if err := os.WriteFile(garbage, bytes.Repeat([]byte("not bbolt "), 1000), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg.Restore = &Restore{Path: garbage}
		if err := openErr(cfg); !errors.Is(err, errNotAStateCopy) {
			t.Errorf("not a bbolt file: %v", err)
		}
		empty := filepath.Join(t.TempDir(), "empty.db")
		db, err := bbolt.Open(empty, 0o600, nil)
		if err != nil {
			t.Fatal(err)
		}
		db.Close()
		cfg.Restore = &Restore{Path: empty}
		if err := openErr(cfg); !errors.Is(err, errNotInkanState) {
			t.Errorf("a bbolt file that is not a state: %v", err)
		}
		noState(cfg.DataDir)
		// A node with state refuses a restore, whatever it holds.
		cfg = first.cfg
		cfg.Bootstrap, cfg.Restore = true, &Restore{Path: path}
		if err := openErr(cfg); !errors.Is(err, errHasState) {
			t.Errorf("restore over state: %v", err)
		}
	})

	// A new HSM without the keys: refused, naming the key, nothing written.
	moved := newNode(newHSMVault(t))
	restoreCfg(moved)
	err = openErr(moved.cfg)
	if !errors.Is(err, hsm.ErrKeyNotFound) || !strings.Contains(err.Error(), `"ca-signing"`) {
		t.Fatalf("restore without the keys: %v", err)
	}
	noState(moved.cfg.DataDir)

	// On the old cluster's HSM.
	same := newNode(vaultOn(t, oldHSM.Config()))
	restoreCfg(same)
	same.open(ctx)
	waitLeader(t, []*testNode{same})
	var restored map[string]map[string]string
	if err := same.c.View(func(tx *bbolt.Tx) error { restored = dump(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	for name, kv := range copied {
		if membershipBuckets[name] || name == string(bucketMeta) {
			continue
		}
		if fmt.Sprint(restored[name]) != fmt.Sprint(kv) {
			t.Errorf("bucket %s differs after restore:\n got %v\nwant %v", name, restored[name], kv)
		}
	}
	if len(restored[string(bucketKeys)]) == 0 || len(restored[string(bucketTokens)]) != 0 || len(restored[string(bucketDenied)]) != 0 {
		t.Errorf("restored cluster buckets: keys %v tokens %v denied %v", restored[string(bucketKeys)], restored[string(bucketTokens)], restored[string(bucketDenied)])
	}
	for id := range copied[string(bucketRequests)] {
		if _, ok := restored[string(bucketRequests)][id]; ok {
			t.Errorf("request record %x of the old cluster kept", id)
		}
	}
	st, err := same.c.Status()
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Members) != 1 || st.Members[0].ID != same.c.ID() || len(st.Voters) != 1 || st.AppliedIndex <= info.Index {
		t.Fatalf("restored status: %+v (copy at %d)", st, info.Index)
	}

	// New commands apply after the copy's index; none is skipped.
	if at := submit(same.c, "after"); at <= info.Index {
		t.Fatalf("first write after restore at index %d, copy at %d", at, info.Index)
	}
	if got := counts(t, same.c); got["after"] != 1 || got["k00"] != 1 || got["k39"] != 1 || len(got) != 41 {
		t.Fatalf("restored counts: %v", got)
	}

	// The old cluster's token is dead, though it names the same CA key;
	// the old nodes' certificates do not verify here, though signed by it.
	oldKey, _ := first.vault.ReplicatedKey(ctx, CAKeyName, false)
	if !publicKeysEqual(oldKey.Public(), same.c.creds.ca.PublicKey) || bytes.Equal(same.c.creds.ca.Raw, first.c.creds.ca.Raw) {
		t.Fatal("on the same HSM the cluster CA key is kept and its certificate is new")
	}
	// (The node the token was granted to, with the keys it was granted for.)
	thief := unusedNode
	thief.cfg.Join = &Join{Addr: same.c.Addr(), Token: unused}
	if err := openErr(thief.cfg); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("old cluster's token at the restored cluster: %v", err)
	}
	for _, old := range []*testNode{first, second} {
		var unknown x509.UnknownAuthorityError
		if err := verifyNodeCert([]*x509.Certificate{old.c.creds.cert.Leaf}, same.c.creds.pool, x509.ExtKeyUsageClientAuth); !errors.As(err, &unknown) {
			t.Fatalf("old node %s's certificate in the restored cluster: err = %v, want x509.UnknownAuthorityError", old.c.ID(), err)
		}
	}

	// A voter joins (it gets the copy as a snapshot, and the keys) and so
	// does a nonvoter.
	voter := join(same.c, Voter)
	edge := join(same.c, Nonvoter)
	submit(same.c, "joined")
	for _, n := range []*testNode{voter, edge} {
		if err := n.c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		if got := counts(t, n.c); got["joined"] != 1 || got["after"] != 1 || got["k17"] != 1 || len(got) != 42 {
			t.Fatalf("joined node %s counts: %v", n.c.ID(), got)
		}
	}
	for _, name := range []string{CAKeyName, "ca-signing", "ca-2027"} {
		if _, err := voter.vault.ReplicatedKey(ctx, name, false); err != nil {
			t.Errorf("joined voter lacks %s: %v", name, err)
		}
	}
	local, err := edge.c.BackupLocal(ctx, &bytes.Buffer{})
	if err != nil || local.Current || local.Index <= info.Index {
		t.Fatalf("BackupLocal on the edge: %+v, %v", local, err)
	}

	// A restart resumes the restored cluster.
	voter.kill()
	same.kill()
	same.open(ctx)
	voter.open(ctx)
	waitLeader(t, running(nodes))
	if at := submit(same.c, "restarted"); at <= info.Index {
		t.Fatalf("write after restart at %d", at)
	}
	if got := counts(t, same.c); got["restarted"] != 1 || got["joined"] != 1 || len(got) != 43 {
		t.Fatalf("after restart: %v", got)
	}

	// A new HSM the keys were moved to (here by wrapped transfer): the
	// restore goes on, in the data dir the refused one left, with a new
	// cluster CA key.
	for _, name := range []string{"ca-signing", "ca-2027"} {
		tk, err := moved.vault.TransportKey(ctx)
		if err != nil {
			t.Fatal(err)
		}
		blob, err := first.vault.ExportKey(ctx, name, tk)
		if err != nil {
			t.Fatal(err)
		}
		if err := moved.vault.ImportKey(ctx, name, blob); err != nil {
			t.Fatal(err)
		}
	}
	moved.open(ctx)
	waitLeader(t, []*testNode{moved})
	if publicKeysEqual(oldKey.Public(), moved.c.creds.ca.PublicKey) {
		t.Fatal("a new HSM got the old cluster CA key")
	}
	if at := submit(moved.c, "moved"); at <= info.Index {
		t.Fatalf("write after restore on a new HSM at %d", at)
	}
	if got := counts(t, moved.c); got["moved"] != 1 || len(got) != 41 {
		t.Fatalf("restored on a new HSM: %v", got)
	}

	// A node cut off from its quorum gives no current copy, only a local
	// one that says so.
	// (If the survivor led, it first steps down: a heartbeat answered just
	// before the kill may still confirm its leadership for a moment.)
	first.kill()
	for deadline := time.Now().Add(5 * time.Second); second.c.raft.State() == raft.Leader; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the survivor of two voters still leads")
		}
	}
	if bi, err := second.c.Backup(testenv.Context(t, 2*time.Second), &bytes.Buffer{}); !errors.Is(err, context.DeadlineExceeded) {
		st, _ := second.c.Status()
		t.Fatalf("Backup without a quorum: %+v %+v, err = %v, want a deadline", bi, st, err)
	}
	if local, err := second.c.BackupLocal(ctx, &bytes.Buffer{}); err != nil || local.Current || local.Index < info.Index {
		t.Fatalf("BackupLocal without a quorum: %+v, %v", local, err)
	}
}

func readAppliedFile(t testing.TB, path string) uint64 {
	t.Helper()
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n uint64
	_ = db.View(func(tx *bbolt.Tx) error { n = readApplied(tx); return nil })
	return n
}

// blockingWriter holds the first write until release is closed.
type blockingWriter struct {
	started chan struct{}
	release chan struct{}
	once    bool
	buf     bytes.Buffer
}

func (w *blockingWriter) Write(p []byte) (int, error) {
	if !w.once {
		w.once = true
		close(w.started)
		<-w.release
	}
	return w.buf.Write(p)
}

// TestBackupDoesNotBlockApplies: commands apply while a backup is being
// written, and the copy is the state as of its start.
func TestBackupDoesNotBlockApplies(t *testing.T) {
	nodes := newTestCluster(t, 1, nil)
	c := nodes[0].c
	ctx := testenv.Context(t, 30*time.Second)
	if _, err := c.Submit(ctx, putCmd(t, "before", false, nil)); err != nil {
		t.Fatal(err)
	}
	w := &blockingWriter{started: make(chan struct{}), release: make(chan struct{})}
	type result struct {
		info BackupInfo
		err  error
	}
	done := make(chan result, 1)
	go func() {
		info, err := c.Backup(ctx, w)
		done <- result{info, err}
	}()
	<-w.started
	res, err := c.Submit(ctx, putCmd(t, "during", false, nil))
	if err != nil {
		t.Fatal(err)
	}
	close(w.release)
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if at := putIndex(t, res); r.info.Index >= at {
		t.Fatalf("copy at index %d holds the write made during it, at %d", r.info.Index, at)
	}
	path := filepath.Join(t.TempDir(), "copy")
	if err := os.WriteFile(path, w.buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	got := dumpFile(t, path)[string(bucketTest)]
	if _, ok := got["before"]; !ok || len(got) != 1 {
		t.Fatalf("copy holds %v, want only the write before it", got)
	}
}
