package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// killedChildEnv carries the spec of the node TestKilledNodeChild runs, in a
// process of its own that TestKilledMidApply kills.
const killedChildEnv = "INKAN_TEST_KILLED_NODE"

type killedSpec struct {
	DataDir, Addr          string
	Module, Label, PINFile string
	Boot                   string // the boot ID the child believes in; "" for the real one
}

// stateDigest hashes every bucket, key and value of the state, and returns it
// with the applied index.
func stateDigest(tx *bbolt.Tx) (uint64, [32]byte) {
	h := sha256.New()
	var walk func(path []byte, b *bbolt.Bucket)
	walk = func(path []byte, b *bbolt.Bucket) {
		_ = b.ForEach(func(k, v []byte) error {
			if v == nil {
				walk(append(append(bytes.Clone(path), 0), k...), b.Bucket(k))
				return nil
			}
			for _, p := range [][]byte{path, k, v} {
				_ = binary.Write(h, binary.BigEndian, uint32(len(p)))
				h.Write(p)
			}
			return nil
		})
	}
	_ = tx.ForEach(func(name []byte, b *bbolt.Bucket) error { walk(name, b); return nil })
	var sum [32]byte
	h.Sum(sum[:0])
	return readApplied(tx), sum
}

// TestKilledNodeChild is the node TestKilledMidApply kills: it opens the node
// the spec names and prints its applied index and state digest whenever they
// change, until it is killed.
func TestKilledNodeChild(t *testing.T) {
	raw := os.Getenv(killedChildEnv)
	if raw == "" {
		t.Skip("run by TestKilledMidApply in a process of its own")
	}
	var spec killedSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	if spec.Boot != "" {
		bootID = func() string { return spec.Boot }
	}
	ctx := context.Background()
	tok, err := hsm.Open(ctx, hsm.Config{Module: spec.Module, Token: spec.Label, PIN: hsm.PINFile(spec.PINFile), Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("token open")
	cfg := fastConfig(t, NewHSMVault(tok))
	cfg.DataDir, cfg.BindAddr, cfg.AdvertiseAddr = spec.DataDir, spec.Addr, spec.Addr
	killedTweak(&cfg)
	c, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for {
		var applied uint64
		var sum [32]byte
		if err := c.View(func(tx *bbolt.Tx) error { applied, sum = stateDigest(tx); return nil }); err != nil {
			t.Fatal(err)
		}
		if applied != last {
			fmt.Printf("state %d %x\n", applied, sum)
			last = applied
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// killedTweak makes snapshots and log compaction frequent, so that restarts
// restore snapshots and replay logs after them.
func killedTweak(c *Config) {
	c.SnapshotThreshold, c.SnapshotInterval, c.TrailingLogs = 64, 100*time.Millisecond, 32
}

// TestKilledMidApply kills a voter's process (SIGKILL) 100 times while the
// cluster applies a steady stream of commands, and restarts it each time. The
// state file is written without fsync (statesync.go): a process killed at any
// point, mid-apply included, must come back with a state equal to the other
// voters', with no command lost or applied twice. Every tenth restart also
// plays a machine that stopped: the state file is torn (pages overwritten with
// garbage) and the boot ID differs, so the node must set the file aside and
// rebuild from its last snapshot and the Raft log.
func TestKilledMidApply(t *testing.T) {
	if os.Getenv(killedChildEnv) != "" {
		t.Skip("in the child")
	}
	kills := 100
	if testing.Short() {
		kills = 10
	}
	ctx := testenv.Context(t, 10*time.Minute)
	nodes := newTestCluster(t, 2, func(c *Config) { killedTweak(c) })

	// The third voter, on a token of its own that the child process opens.
	tk := softhsm.NewToken(t)
	victim := &testNode{t: t, vault: NewHSMVault(tk.HSM)}
	victim.cfg = fastConfig(t, victim.vault)
	killedTweak(&victim.cfg)
	victim.cfg.Join = &Join{Addr: nodes[0].c.Addr(), Token: grant(t, nodes[0].c, victim.cfg, Voter, time.Minute)}
	victim.open(ctx)
	victim.kill() // from now on it runs in a child process
	leader := waitLeader(t, nodes)

	// A steady load of unique commands, each acknowledged once.
	var acked atomic.Int64
	loadCtx, stopLoad := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			val := bytes.Repeat([]byte{byte(w)}, 200)
			for i := 0; loadCtx.Err() == nil; i++ {
				sctx, cancel := context.WithTimeout(loadCtx, 10*time.Second)
				_, err := leader.c.Submit(sctx, putCmd(t, fmt.Sprintf("w%d-%06d", w, i), false, val))
				cancel()
				if err == nil {
					acked.Add(1)
				} else if loadCtx.Err() == nil {
					t.Errorf("submit: %v", err)
					return
				}
			}
		}()
	}

	t.Cleanup(func() { stopLoad(); wg.Wait() }) // before the nodes close

	spec := killedSpec{DataDir: victim.cfg.DataDir, Addr: victim.cfg.BindAddr, Module: tk.Module, Label: tk.Label, PINFile: tk.PINFile}
	statePath := filepath.Join(spec.DataDir, stateFile)
	var reboots, midApply int
	for k := 1; k <= kills && !t.Failed(); k++ {
		rebooted := k%10 == 0
		if rebooted {
			// The machine stopped: the state is torn, and every process
			// from now on runs in another boot.
			tearState(t, statePath)
			spec.Boot = fmt.Sprintf("boot-%d", k)
			reboots++
		}
		child := startChild(t, spec)
		// Kill it at a random moment: one time in four from its login to the
		// token (before the cluster has opened, or while it catches up), else
		// while it applies the load. Not before the login: SoftHSM rewrites
		// its token file in place at each login, and a process killed in that
		// write loses the token, a property of SoftHSM's file store that a
		// hardware token, which keeps its state off the host, does not share.
		child.awaitToken(t, 30*time.Second)
		if k%4 != 1 {
			child.awaitOpen(t, 30*time.Second)
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		if child.advancing() {
			midApply++
		}
		child.kill(t)
		if _, err := os.Stat(statePath + asideSuffix); rebooted && child.applied() > 0 && err != nil {
			t.Errorf("kill %d: the torn state was not set aside: %v", k, err)
		}
	}
	final := startChild(t, spec)
	defer final.kill(t)
	stopLoad()
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	// Once nothing more is submitted, the four states reach one index; they
	// must then be equal.
	if err := leader.c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		type seen struct {
			who string
			at  uint64
			sum [32]byte
		}
		var all []seen
		for _, n := range nodes {
			var s seen
			s.who = n.c.ID()
			_ = n.c.View(func(tx *bbolt.Tx) error { s.at, s.sum = stateDigest(tx); return nil })
			all = append(all, s)
		}
		at, sum := final.state()
		all = append(all, seen{"the killed voter", at, sum})
		same := true
		for _, s := range all[1:] {
			same = same && s.at == all[0].at
		}
		if same {
			for _, s := range all[1:] {
				if s.sum != all[0].sum {
					t.Fatalf("at index %d, %s has state %x, %s has %x", s.at, s.who, s.sum, all[0].who, all[0].sum)
				}
			}
			t.Logf("%d kills (%d while the voter was applying, %d after a torn state and a reboot); %d commands acknowledged; states equal at index %d",
				kills, midApply, reboots, acked.Load(), all[0].at)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the states do not reach one index: %+v", all)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := counts(t, leader.c)
	for id, n := range got {
		if n != 1 {
			t.Fatalf("command %s applied %d times", id, n)
		}
	}
	if int64(len(got)) < acked.Load() {
		t.Fatalf("%d commands in the state, %d acknowledged", len(got), acked.Load())
	}
}

// tearState overwrites a few pages of the state file with garbage, as a
// machine that stopped before writing them back may leave it.
func tearState(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	pages := st.Size() / 4096
	junk := make([]byte, 4096)
	for i := range 4 {
		for j := range junk {
			junk[j] = byte(rand.IntN(256))
		}
		page := int64(i) // the meta pages (0, 1) and what follows
		if i >= 2 && pages > 2 {
			page = 2 + rand.Int64N(pages-2)
		}
		if _, err := f.WriteAt(junk, page*4096); err != nil {
			t.Fatal(err)
		}
	}
}

// childNode is the victim's process.
type childNode struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	last uint64
	sum  [32]byte
	seen time.Time // when last changed
	// how many states it printed
	changes int
	token   bool // it printed "token open"
}

func startChild(t *testing.T, spec killedSpec) *childNode {
	t.Helper()
	raw, _ := json.Marshal(spec)
	cmd := exec.Command(os.Args[0], "-test.run", "^TestKilledNodeChild$", "-test.count", "1")
	cmd.Env = append(os.Environ(), killedChildEnv+"="+string(raw))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &childNode{cmd: cmd}
	go c.read(out)
	return c
}

func (c *childNode) read(out io.Reader) {
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if sc.Text() == "token open" {
			c.mu.Lock()
			c.token = true
			c.mu.Unlock()
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) != 3 || f[0] != "state" {
			fmt.Fprintln(os.Stderr, "killed voter:", sc.Text())
			continue
		}
		n, err := strconv.ParseUint(f[1], 10, 64)
		h, herr := hex.DecodeString(f[2])
		if err != nil || herr != nil || len(h) != 32 {
			continue
		}
		var sum [32]byte
		copy(sum[:], h)
		c.mu.Lock()
		c.last, c.sum, c.seen = n, sum, time.Now()
		c.changes++
		c.mu.Unlock()
	}
}

// awaitToken waits until the child has logged in to its token.
func (c *childNode) awaitToken(t *testing.T, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(2 * time.Millisecond) {
		c.mu.Lock()
		ok := c.token
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the killed voter did not open its token within %v", d)
		}
	}
}

// awaitOpen waits until the child has printed its first state.
func (c *childNode) awaitOpen(t *testing.T, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); c.applied() == 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the killed voter did not open within %v", d)
		}
	}
}

func (c *childNode) state() (uint64, [32]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last, c.sum
}

func (c *childNode) applied() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// advancing says whether the child has applied entries since it opened, the
// last within 100 ms: it is applying the stream.
func (c *childNode) advancing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.changes > 1 && time.Since(c.seen) < 100*time.Millisecond
}

func (c *childNode) kill(t *testing.T) {
	t.Helper()
	if err := c.cmd.Process.Signal(syscall.SIGKILL); err != nil && !c.exited() {
		t.Fatalf("kill: %v", err)
	}
	_ = c.cmd.Wait()
	if st, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && !st.Signaled() {
		t.Errorf("the voter's process ended before it was killed (%v)", c.cmd.ProcessState)
	}
}

func (c *childNode) exited() bool { return c.cmd.ProcessState != nil }
