package log

import (
	"bytes"
	"context"
	"crypto"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/audit"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"go.etcd.io/bbolt"
)

const testOrigin = "inkan.test/cluster-1"

// A test command type: it records its number in bucket "test" with the entry's
// index and time; its describer names a serial and fails when asked to.
const cmdTest = "test.change"

var bucketTest = []byte("test")

type testBody struct {
	N            uint64 `cbor:"n"`
	FailDescribe bool   `cbor:"fail,omitempty"`
}

type testHandler struct{}

func (testHandler) Type() string      { return cmdTest }
func (testHandler) Versions() []uint  { return []uint{1} }
func (testHandler) Buckets() [][]byte { return [][]byte{bucketTest} }
func (testHandler) Apply(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b testBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	v := binary.BigEndian.AppendUint64(nil, e.Index)
	v = binary.BigEndian.AppendUint64(v, uint64(e.Time.UnixNano()))
	return nil, tx.Bucket(bucketTest).Put(u64(b.N), v)
}

func describeTest(e cluster.Entry, _ []byte) ([]Record, error) {
	var b testBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, err
	}
	if b.FailDescribe {
		return nil, errors.New("test describer refuses")
	}
	return []Record{{Type: cmdTest, Actor: audit.ActorSystem, Serial: new(big.Int).SetUint64(b.N + 1), Data: map[string]any{"n": b.N}}}, nil
}

func newTestService(t testing.TB, extra map[string]Describer) *Service {
	t.Helper()
	d := map[string]Describer{cmdTest: describeTest}
	for k, v := range extra {
		d[k] = v
	}
	s, err := New(Config{Origin: testOrigin, Describers: d})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func singleNode(t testing.TB, s *Service, handlers ...cluster.Handler) *clustertest.Node {
	t.Helper()
	n := clustertest.Single(t, cluster.Config{
		Handlers:       append(append(s.Handlers(), testHandler{}), handlers...),
		Hooks:          []cluster.Hook{s.Hook()},
		ReplicatedKeys: []string{DefaultKeyName},
	})
	s.Start(n.Cluster, cluster.NewHSMVault(n.Token.HSM))
	return n
}

func submitTest(ctx context.Context, c *cluster.Cluster, b testBody) error {
	cmd, err := cluster.NewCommand(cmdTest, 1, b)
	if err != nil {
		return err
	}
	_, err = c.Submit(ctx, cmd)
	return err
}

// submitMany submits count commands from 8 goroutines, so they are batched.
func submitMany(t testing.TB, c *cluster.Cluster, from, count uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, count)
	for w := range uint64(8) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := from + w; i < from+count; i += 8 {
				if err := submitTest(ctx, c, testBody{N: i}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// waitCheckpoint waits until a checkpoint covers at least size leaves.
func waitCheckpoint(t testing.TB, s *Service, v viewer, size uint64, within time.Duration) audit.Checkpoint {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		var cp audit.Checkpoint
		var ok bool
		err := v.View(func(tx *bbolt.Tx) error {
			l, err := s.logIn(tx)
			if err != nil {
				return nil
			}
			cp, ok, err = l.latestCheckpoint(tx)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if ok && cp.Size >= size {
			return cp
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of size >= %d within %v (latest %d, ok %v)", size, within, cp.Size, ok)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHookAppendsEveryCommand(t *testing.T) {
	s := newTestService(t, nil)
	n := singleNode(t, s)
	const count = 200
	submitMany(t, n.Cluster, 0, count)

	err := n.View(func(tx *bbolt.Tx) error {
		l, err := s.logIn(tx)
		if err != nil {
			return err
		}
		size, err := l.Size(tx)
		if err != nil {
			return err
		}
		seen := map[uint64]bool{}
		types := map[string]int{}
		for i := range size {
			leaf, err := l.leaf(tx, i)
			if err != nil {
				return err
			}
			types[leaf.Type]++
			if leaf.Type != cmdTest {
				continue
			}
			var d struct {
				N uint64 `cbor:"n"`
			}
			_, dm := cborModes()
			if err := dm.Unmarshal(leaf.Data, &d); err != nil {
				return err
			}
			v := tx.Bucket(bucketTest).Get(u64(d.N))
			if v == nil {
				return fmt.Errorf("leaf %d: change %d is not in the state", i, d.N)
			}
			if raft := binary.BigEndian.Uint64(v); leaf.RaftIndex != raft {
				return fmt.Errorf("leaf %d: raft index %d, the change was applied at %d", i, leaf.RaftIndex, raft)
			}
			if at := time.Unix(0, int64(binary.BigEndian.Uint64(v[8:]))); !leaf.Time.Equal(at) {
				return fmt.Errorf("leaf %d: time %v, the entry was stamped %v", i, leaf.Time, at)
			}
			if want := new(big.Int).SetUint64(d.N + 1).Text(16); leaf.Serial != want {
				return fmt.Errorf("leaf %d: serial %s, want %s", i, leaf.Serial, want)
			}
			seen[d.N] = true
		}
		if len(seen) != count || types[cmdTest] != count {
			return fmt.Errorf("%d distinct changes in %d leaves of type %s, want %d", len(seen), types[cmdTest], cmdTest, count)
		}
		if types["cluster.member.bootstrap"] != 1 || types[cmdKey] != 1 {
			return fmt.Errorf("leaf types %v: want one cluster.member.bootstrap and one %s", types, cmdKey)
		}
		if types[cmdCheckpoint] != 0 {
			return fmt.Errorf("checkpoints appended leaves: %v", types)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// The serial index finds a change's leaf.
	srv := httptest.NewServer(s.API(n.Cluster))
	defer srv.Close()
	ctx := context.Background()
	cl, err := audit.NewClient(ctx, srv.URL, srv.Client(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := cl.Serial(ctx, "0x00:2A") // change 41
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Leaves) != 1 {
		t.Fatalf("serial 2a: %d leaves, want 1", len(got.Leaves))
	}
	leaf, err := audit.ParseLeaf(got.Leaves[0].Leaf)
	if err != nil || leaf.Serial != "2a" {
		t.Fatalf("serial 2a: leaf %+v, %v", leaf, err)
	}
}

// A command the log cannot describe stops the node, and nothing of it is committed
// on the replica: not the change, not a leaf.
func TestUnauditedChangeStopsNode(t *testing.T) {
	for _, tc := range []struct {
		name string
		cmd  func() (cluster.Command, error)
	}{
		{"describer fails", func() (cluster.Command, error) {
			return cluster.NewCommand(cmdTest, 1, testBody{N: 999, FailDescribe: true})
		}},
		{"no describer", func() (cluster.Command, error) {
			return cluster.NewCommand("test.undescribed", 1, testBody{N: 999})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(Config{Origin: testOrigin, Describers: map[string]Describer{cmdTest: describeTest}})
			if err != nil {
				t.Fatal(err)
			}
			n := singleNode(t, s, undescribedHandler{})
			submitMany(t, n.Cluster, 0, 10)
			var before uint64
			_ = n.View(func(tx *bbolt.Tx) error { before, _ = s.appender.Size(tx); return nil })

			cmd, err := tc.cmd()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if _, err := n.Submit(ctx, cmd); err == nil {
				t.Fatal("a change that cannot be audited was applied")
			}
			select {
			case <-n.Done():
			case <-time.After(5 * time.Second):
				t.Fatal("the node did not stop")
			}
			if !errors.Is(n.Err(), cluster.ErrNodeFailed) {
				t.Fatalf("node stopped with %v, want ErrNodeFailed", n.Err())
			}
			db, err := bbolt.Open(filepath.Join(n.Dir, "state.db"), 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			err = db.View(func(tx *bbolt.Tx) error {
				if tx.Bucket(bucketTest).Get(u64(999)) != nil {
					return errors.New("the change was committed")
				}
				size, err := s.appender.Size(tx)
				if err != nil {
					return err
				}
				if size < before {
					return fmt.Errorf("log shrank from %d to %d", before, size)
				}
				_, dm := cborModes()
				for i := range size {
					l, err := s.appender.leaf(tx, i)
					if err != nil {
						return err
					}
					var d struct {
						N uint64 `cbor:"n"`
					}
					if l.Type == cmdTest && dm.Unmarshal(l.Data, &d) == nil && d.N == 999 {
						return fmt.Errorf("leaf %d records the change that could not be audited", i)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

type undescribedHandler struct{ testHandler }

func (undescribedHandler) Type() string      { return "test.undescribed" }
func (undescribedHandler) Buckets() [][]byte { return nil }

func TestCheckpointsFromLiveNode(t *testing.T) {
	s := newTestService(t, nil)
	n := singleNode(t, s)
	ctx := context.Background()

	// While the tree grows, a checkpoint covers it within a second (plus a tick).
	var sizes []uint64
	for round := range 3 {
		submitMany(t, n.Cluster, uint64(round*50), 50)
		var size uint64
		_ = n.View(func(tx *bbolt.Tx) error { size, _ = s.appender.Size(tx); return nil })
		start := time.Now()
		cp := waitCheckpoint(t, s, n.Cluster, size, 2*time.Second)
		t.Logf("round %d: size %d covered after %v", round, size, time.Since(start).Round(time.Millisecond))
		sizes = append(sizes, cp.Size)
	}

	srv := httptest.NewServer(s.API(n.Cluster))
	defer srv.Close()
	cl, err := audit.NewClient(ctx, srv.URL, srv.Client(), nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := cl.PublicKey()
	// The key is the token's: the leader made it in SoftHSM.
	signer, err := cluster.NewHSMVault(n.Token.HSM).ReplicatedKey(ctx, DefaultKeyName, false)
	if err != nil {
		t.Fatal(err)
	}
	if audit.KeyFingerprint(signer.Public()) != audit.KeyFingerprint(pub) {
		t.Fatal("the API's key is not the audit key in the HSM")
	}

	// openssl verifies the newest checkpoint.
	latest, ok, err := cl.Latest(ctx)
	if err != nil || !ok {
		t.Fatal(ok, err)
	}
	dir := t.TempDir()
	pemBytes, _ := audit.MarshalPublicKey(pub)
	for name, b := range map[string][]byte{"pub.pem": pemBytes, "cp.txt": latest.Body(), "cp.sig": latest.Signature} {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command("openssl", "dgst", "-sha256", "-verify", filepath.Join(dir, "pub.pem"),
		"-signature", filepath.Join(dir, "cp.sig"), filepath.Join(dir, "cp.txt")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Verified OK") {
		t.Fatalf("openssl: %v: %s", err, out)
	}

	// Proofs from the API verify against the checkpoints.
	first, err := cl.Checkpoint(ctx, sizes[0])
	if err != nil {
		t.Fatal(err)
	}
	cons, err := cl.Consistency(ctx, first.Size, latest.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, first.Size, latest.Size, cons.Proof, first.Root, latest.Root); err != nil {
		t.Fatalf("consistency %d→%d: %v", first.Size, latest.Size, err)
	}
	incl, err := cl.Inclusion(ctx, first.Size-1, latest.Size)
	if err != nil {
		t.Fatal(err)
	}
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, first.Size-1, latest.Size, incl.Hash, incl.Proof, latest.Root); err != nil {
		t.Fatalf("inclusion: %v", err)
	}

	// An export through the API verifies; tampering is still found.
	exp := filepath.Join(t.TempDir(), "export")
	if _, err := audit.Export(ctx, exp, cl, 0); err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(os.DirFS(exp), signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK() || rep.Size != latest.Size || rep.Checkpoints < 2 {
		t.Fatalf("export: ok %v, size %d (want %d), %d checkpoints, problems %v", rep.OK(), rep.Size, latest.Size, rep.Checkpoints, rep.Problems)
	}
	// The same export from the node's state in short transactions.
	src, err := s.NewSource(n.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	exp2 := filepath.Join(t.TempDir(), "export")
	if _, err := audit.Export(ctx, exp2, src, 0); err != nil {
		t.Fatal(err)
	}
	if rep, err := audit.Verify(os.DirFS(exp2), signer.Public()); err != nil || !rep.OK() {
		t.Fatalf("export from the state: %v %+v", err, rep)
	}

	leaves := filepath.Join(exp, "leaves.txt")
	b, err := os.ReadFile(leaves)
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.SplitAfter(b, []byte("\n"))
	lines[5], lines[6] = lines[6], lines[5] // reorder two leaves
	if err := os.WriteFile(leaves, bytes.Join(lines, nil), 0o600); err != nil {
		t.Fatal(err)
	}
	rep, err = audit.Verify(os.DirFS(exp), signer.Public())
	if err != nil {
		t.Fatal(err)
	}
	if rep.OK() || rep.Problems[0].Index != 5 && rep.Problems[0].Index != 6 {
		t.Fatalf("a reordered export: %+v", rep.Problems)
	}
}

// Checkpoints that are not the tree's, or not signed by the audit key, are refused.
func TestCheckpointCommandRefusals(t *testing.T) {
	s := newTestService(t, nil)
	n := singleNode(t, s)
	submitMany(t, n.Cluster, 0, 20)
	good := waitCheckpoint(t, s, n.Cluster, 20, 2*time.Second)
	ctx := context.Background()
	signer, err := cluster.NewHSMVault(n.Token.HSM).ReplicatedKey(ctx, DefaultKeyName, false)
	if err != nil {
		t.Fatal(err)
	}
	other := newKey(t)
	sign := func(c audit.Checkpoint, withOther bool) checkpointCommand {
		if withOther {
			if err := c.Sign(other); err != nil {
				t.Fatal(err)
			}
		} else if err := c.Sign(signer); err != nil {
			t.Fatal(err)
		}
		return checkpointCommand{Body: c.Body(), Sig: c.Signature}
	}
	badRoot := good
	badRoot.Root = bytes.Repeat([]byte{7}, 32)
	later := good
	later.Size += 1000
	otherOrigin := good
	otherOrigin.Origin = "inkan.test/other"
	backdated := good
	backdated.Time = good.Time.Add(-time.Hour)
	for _, tc := range []struct {
		name string
		body checkpointCommand
		want string
	}{
		{"root is not the tree's", sign(badRoot, false), "root"},
		{"beyond the tree", sign(later, false), "the tree holds"},
		{"another log", sign(otherOrigin, false), "origin"},
		{"another key", sign(good, true), "signature"},
		{"second of a size", sign(backdated, false), "exists"},
		{"not a checkpoint", checkpointCommand{Body: []byte("x"), Sig: []byte("y")}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, err := cluster.NewCommand(cmdCheckpoint, 1, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			_, err = n.Submit(ctx, cmd)
			if !errors.Is(err, cluster.ErrRefused) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want a refusal mentioning %q", err, tc.want)
			}
		})
	}
	// And a second audit key is refused.
	der, _ := x509MarshalPKIX(other)
	cmd, _ := cluster.NewCommand(cmdKey, 1, keyCommand{Pub: der})
	if _, err := n.Submit(ctx, cmd); !errors.Is(err, cluster.ErrRefused) {
		t.Fatalf("a second audit key: %v", err)
	}
}

// An auditor following the live log (inkan audit verify --follow) exports it
// through the API and verifies the export; a pinned wrong key is reported.
func TestFollowAPI(t *testing.T) {
	s := newTestService(t, nil)
	n := singleNode(t, s)
	submitMany(t, n.Cluster, 0, 30)
	waitCheckpoint(t, s, n.Cluster, 30, 2*time.Second)
	srv := httptest.NewServer(s.API(n.Cluster))
	defer srv.Close()
	ctx := context.Background()
	follow := func(keyFile string) (*audit.Exported, string, error) {
		var key crypto.PublicKey
		if keyFile != "" {
			b, err := os.ReadFile(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if key, err = audit.ParsePublicKey(b); err != nil {
				t.Fatal(err)
			}
		}
		cl, err := audit.NewClient(ctx, srv.URL, srv.Client(), key)
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), "export")
		exp, err := audit.Export(ctx, dir, cl, 0)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		err = audit.VerifyDirs(&out, keyFile, dir)
		return exp, out.String(), err
	}
	exp, out, err := follow("")
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if !strings.HasPrefix(exp.String(), "leaves 0..") || !strings.HasPrefix(out, "ok: log \""+testOrigin) {
		t.Fatalf("exported %s, output:\n%s", exp, out)
	}
	wrong := filepath.Join(t.TempDir(), "wrong.pem")
	pemBytes, _ := audit.MarshalPublicKey(newKey(t).Public())
	if err := os.WriteFile(wrong, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, out, err := follow(wrong); !errors.Is(err, audit.ErrProblems) {
		t.Fatalf("a wrong pinned key: %v\n%s", err, out)
	}
}

// The API answers bad requests with specific problem types.
func TestAPIProblems(t *testing.T) {
	s := newTestService(t, nil)
	n := singleNode(t, s)
	submitMany(t, n.Cluster, 0, 5)
	waitCheckpoint(t, s, n.Cluster, 5, 2*time.Second)
	srv := httptest.NewServer(s.API(n.Cluster))
	defer srv.Close()
	for _, tc := range []struct {
		path string
		want string
	}{
		{"/v1/audit/leaves?from=x&to=3", "bad-request"},
		{"/v1/audit/leaves?from=1000&to=1001", "beyond-tree"},
		{"/v1/audit/checkpoints/99999", "no-checkpoint"},
		{"/v1/audit/proof/inclusion?index=3&size=2", "bad-request"},
		{"/v1/audit/proof/consistency?from=1&to=100000", "beyond-tree"},
		{"/v1/audit/serials/zz", "bad-request"},
		{"/v1/audit/nothing", "not-found"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := srv.Client().Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var p apiProblem
			if resp.Header.Get("Content-Type") != contentProblem || json.NewDecoder(resp.Body).Decode(&p) != nil {
				t.Fatalf("status %s, %s: not a problem", resp.Status, resp.Header.Get("Content-Type"))
			}
			if p.Type != problemBase+tc.want || p.Status != resp.StatusCode {
				t.Fatalf("problem %+v, want type %s", p, tc.want)
			}
		})
	}
}

// While the tree grows without pause, checkpoints come at least once a second
// (checkpointGrowing, plus a tick of the leader's loop and the signing).
func TestCheckpointCadence(t *testing.T) {
	s := newTestService(t, nil)
	n := singleNode(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
	defer cancel()
	var i uint64
	for ctx.Err() == nil {
		if err := submitTest(ctx, n.Cluster, testBody{N: i}); err != nil && ctx.Err() == nil {
			t.Fatal(err)
		}
		i++
	}
	var cps []audit.Checkpoint
	err := n.View(func(tx *bbolt.Tx) (err error) { cps, err = checkpointsFrom(tx, 0, 100); return err })
	if err != nil {
		t.Fatal(err)
	}
	if len(cps) < 3 {
		t.Fatalf("%d checkpoints in 3.5 s of growth", len(cps))
	}
	for k := 1; k < len(cps); k++ {
		if gap := cps[k].Time.Sub(cps[k-1].Time); gap > checkpointGrowing+400*time.Millisecond {
			t.Errorf("checkpoints of sizes %d and %d are %v apart", cps[k-1].Size, cps[k].Size, gap)
		}
	}
	t.Logf("%d commands, %d checkpoints", i, len(cps))
}

// An export taken through the API while the log grows still verifies: it ends at
// the newest checkpoint it saw, whatever is appended during the export.
func TestExportWhileGrowing(t *testing.T) {
	s := newTestService(t, nil)
	n := singleNode(t, s)
	submitMany(t, n.Cluster, 0, 1100) // more than one page of leaves
	waitCheckpoint(t, s, n.Cluster, 1100, 3*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := uint64(10000); ctx.Err() == nil; i++ {
			_ = submitTest(ctx, n.Cluster, testBody{N: i})
		}
	}()
	defer func() { cancel(); <-done }()
	srv := httptest.NewServer(s.API(n.Cluster))
	defer srv.Close()
	for k := range 3 {
		dir := filepath.Join(t.TempDir(), "export")
		cl, err := audit.NewClient(ctx, srv.URL, srv.Client(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := audit.Export(ctx, dir, cl, 0); err != nil {
			t.Fatal(err)
		}
		rep, err := audit.Verify(os.DirFS(dir), nil)
		if err != nil || !rep.OK() {
			t.Fatalf("export %d: %v %+v", k, err, rep)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
