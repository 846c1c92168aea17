package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// The Raft timing of the nodes these tests run: short, so that a failover is
// quick, yet long enough for two shared cores and the race detector.
const (
	testHeartbeat = 300 * time.Millisecond
	testElection  = 300 * time.Millisecond
)

var (
	binOnce sync.Once
	binDir  string
	binPath string
	binErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// inkanBinary builds the inkan command once for the package's tests: they
// run it as separate processes, the way operators do.
func inkanBinary(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "inkan-bin-"); binErr != nil {
			return
		}
		binPath = filepath.Join(binDir, "inkan")
		if out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// proc is one `inkan server` process with its own SoftHSM token directory,
// PINs, configuration and data dir, restartable from them.
type proc struct {
	t                        testing.TB
	name, home               string
	env                      []string // SOFTHSM2_CONF for this node's token dir
	cfgPath, dataDir         string
	clusterAddr, metricsAddr string
	apiAddr, ocspAddr        string
	adminAddr                string // admin.listen, if given (withAdminListener)

	cmd     *exec.Cmd
	exited  chan struct{}
	exitErr error
}

func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		out = append(out, ln.Addr().String())
	}
	return out
}

// newProc prepares node name: a SoftHSM token made with `inkan hsm
// init-token`, PIN files of mode 0600, and a configuration whose cluster
// section ends with clusterExtra.
func newProc(t testing.TB, name, clusterExtra string) *proc {
	t.Helper()
	module, err := softhsm.Module()
	if err != nil {
		t.Skip(err)
	}
	home := filepath.Join(t.TempDir(), name)
	p := &proc{t: t, name: name, home: home, cfgPath: filepath.Join(home, "node.yaml"), dataDir: filepath.Join(home, "data")}
	for _, d := range []string{home, filepath.Join(home, "tokens")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	conf := filepath.Join(home, "softhsm2.conf")
	write(t, conf, fmt.Sprintf("directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n", home))
	p.env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	write(t, filepath.Join(home, "so.pin"), "so-"+name)
	write(t, filepath.Join(home, "user.pin"), "pin-"+name)
	p.run(t, "hsm", "init-token", "--module", module, "--label", name,
		"--so-pin-file", filepath.Join(home, "so.pin"), "--pin-file", filepath.Join(home, "user.pin"))

	a := freeAddrs(t, 4)
	p.clusterAddr, p.apiAddr, p.ocspAddr, p.metricsAddr = a[0], a[1], a[2], a[3]
	write(t, p.cfgPath, fmt.Sprintf(`data_dir: %s
cluster:
  name: inkan-test
  node_id: %s
  bind: %s
  raft:
    heartbeat_timeout: %s
    election_timeout: %s
    leader_lease_timeout: 150ms
%s
api:
  listen: %s
ocsp:
  listen: %s
metrics:
  listen: %s
hsm:
  module: %s
  token: %s
  pin_file: %s/user.pin
# The audit log is read without an auditor certificate here, as in the demo.
audit:
  public: true
drain_timeout: 5s
`, p.dataDir, name, a[0], testHeartbeat, testElection, clusterExtra, a[1], a[2], a[3], module, name, home))
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(home, "log"))
			t.Logf("%s's log:\n%s", name, tail(string(log), 40))
		}
	})
	return p
}

func write(t testing.TB, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// run runs an inkan command in the node's environment and returns its stdout.
func (p *proc) run(t testing.TB, args ...string) string {
	t.Helper()
	out, err := p.runErr(args...)
	if err != nil {
		t.Fatalf("inkan %s: %v\n%s", strings.Join(args, " "), err, tail(out, 20))
	}
	return out
}

func (p *proc) runErr(args ...string) (string, error) {
	cmd := exec.Command(inkanBinary(p.t), args...)
	cmd.Env = p.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

// admin runs `inkan admin --socket <this node's> args...`.
func (p *proc) admin(t testing.TB, args ...string) string {
	t.Helper()
	return p.run(t, append([]string{"admin", "--socket", filepath.Join(p.dataDir, "admin.sock")}, args...)...)
}

func (p *proc) status(t testing.TB) admin.Status {
	t.Helper()
	var st admin.Status
	if err := json.Unmarshal([]byte(p.admin(t, "--output", "json", "cluster", "status")), &st); err != nil {
		t.Fatal(err)
	}
	return st
}

func (p *proc) start() {
	p.t.Helper()
	log, err := os.OpenFile(filepath.Join(p.home, "log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	defer log.Close()
	stdout, err := os.OpenFile(filepath.Join(p.home, "stdout"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		p.t.Fatal(err)
	}
	defer stdout.Close()
	p.cmd = exec.Command(inkanBinary(p.t), "server", "--config", p.cfgPath)
	p.cmd.Env = p.env
	p.cmd.Stdout, p.cmd.Stderr = stdout, log
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	p.exited = make(chan struct{})
	go func(cmd *exec.Cmd, exited chan struct{}) {
		p.exitErr = cmd.Wait()
		close(exited)
	}(p.cmd, p.exited)
}

func (p *proc) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// waitReady polls /readyz until the node answers 200.
func (p *proc) waitReady() {
	p.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		if !p.running() {
			p.t.Fatalf("%s exited while starting: %v", p.name, p.exitErr)
		}
		if resp, err := http.Get("http://" + p.metricsAddr + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			last = resp.Status
		}
		time.Sleep(25 * time.Millisecond)
	}
	p.t.Fatalf("%s not ready within 60s (last /readyz: %s)", p.name, last)
}

// kill ends the process with SIGKILL, as a crash or a power cut would.
func (p *proc) kill() {
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(d time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(d):
		p.t.Fatalf("%s still running after %s", p.name, d)
	}
	var ee *exec.ExitError
	if errors.As(p.exitErr, &ee) {
		return ee.ExitCode()
	}
	if p.exitErr != nil {
		p.t.Fatal(p.exitErr)
	}
	return 0
}

// joinWith runs the join ceremony for p as role: `inkan join-keys` on p, then a
// join token granted to those keys through via's admin socket.
func (p *proc) joinWith(t testing.TB, via *proc, role string) {
	t.Helper()
	keys := filepath.Join(p.home, "join.keys")
	write(t, keys, p.run(t, "join-keys", "--config", p.cfgPath, "-o", "json"))
	tok := strings.TrimSpace(via.admin(t, "cluster", "join-token", "--role", role, "--keys", keys, "--ttl", "10m"))
	write(t, filepath.Join(p.home, "join-token"), tok)
}

// someKeys are join-token flags naming keys no node has: a grant that is only a
// write to the cluster.
func someKeys(node string) []string {
	fp := "sha256:" + strings.Repeat("ab", 32)
	return []string{"--node", node, "--node-key", fp, "--transport-key", fp}
}

func joinConfig(via *proc, home string) string {
	return fmt.Sprintf("  join:\n    address: %s\n    token_file: %s/join-token", via.clusterAddr, home)
}

// TestClusterFailover runs three `inkan server` processes — node1 bootstraps,
// node2 and node3 join with tokens made by `inkan admin cluster join-token` —
// kills the leader with SIGKILL, times how soon a write (a join token) through
// a survivor succeeds, restarts the killed node from its data dir, sees it catch
// up, and then decommissions it with `inkan admin cluster leave`.
func TestClusterFailover(t *testing.T) {
	begin := time.Now()
	n1 := newProc(t, "node1", "  bootstrap: true")
	n1.start()
	n1.waitReady()
	if out, _ := os.ReadFile(filepath.Join(n1.home, "stdout")); !bytes.Contains(out, []byte("inkan node node1 serving")) || !bytes.Contains(out, []byte(n1.metricsAddr)) {
		t.Errorf("server did not say where it listens:\n%s", out)
	}
	nodes := []*proc{n1}
	for _, name := range []string{"node2", "node3"} {
		p := newProcJoining(t, name, n1)
		p.start()
		p.waitReady()
		nodes = append(nodes, p)
	}
	st := n1.status(t)
	if len(st.Members) != 3 {
		t.Fatalf("members: %+v", st.Members)
	}
	for _, m := range st.Members {
		if m.Raft != "voter" || m.Role != "voter" {
			t.Fatalf("member %+v is not a voter", m)
		}
	}
	t.Logf("three nodes ready after %s", time.Since(begin).Round(time.Millisecond))

	var leader *proc
	var survivors []*proc
	for _, p := range nodes {
		if p.name == st.LeaderID {
			leader = p
		} else {
			survivors = append(survivors, p)
		}
	}
	if leader == nil {
		t.Fatalf("leader %q is none of the nodes", st.LeaderID)
	}

	killed := time.Now()
	leader.kill()
	// A join token is a Raft write; the command waits for a new leader.
	survivors[0].admin(t, append([]string{"--timeout", "30s", "cluster", "join-token", "--role", "nonvoter", "--ttl", "5m"}, someKeys("after-kill")...)...)
	recovery := time.Since(killed)
	t.Logf("a write through a survivor succeeded %s after kill -9 of leader %s (election timeout %s)",
		recovery.Round(time.Millisecond), leader.name, testElection)
	if recovery > testElection+3*time.Second {
		t.Errorf("writes resumed %s after the leader died; want within %s", recovery, testElection+3*time.Second)
	}
	after := survivors[1].status(t)
	if after.LeaderID == "" || after.LeaderID == leader.name {
		t.Fatalf("survivor sees leader %q", after.LeaderID)
	}

	// The killed node restarts from its data dir and catches up.
	leader.start()
	leader.waitReady()
	back := leader.status(t)
	if back.AppliedIndex < after.CommitIndex || back.LeaderID != after.LeaderID || len(back.Members) != 3 || !back.Ready {
		t.Fatalf("restarted node did not catch up: %+v (the survivor had commit index %d, leader %s)", back, after.CommitIndex, after.LeaderID)
	}

	// A clean decommission: the node leaves, and its process exits 0.
	leader.admin(t, "cluster", "leave")
	if code := leader.wait(30 * time.Second); code != 0 {
		t.Fatalf("%s exited %d after leaving", leader.name, code)
	}
	// The survivor's own state shows the removal once it has applied it.
	for deadline := time.Now().Add(10 * time.Second); ; {
		final := survivors[0].status(t)
		if len(final.Members) == 2 && !slices.ContainsFunc(final.Members, func(m admin.Member) bool { return m.ID == leader.name }) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the leave: %+v", final.Members)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("whole test %s", time.Since(begin).Round(time.Millisecond))
}

// newProcJoining prepares node name to join through via with a voter token
// from via's admin socket.
func newProcJoining(t testing.TB, name string, via *proc) *proc {
	t.Helper()
	return newProcJoiningAs(t, name, via, "voter")
}

// newProcJoiningAs prepares node name to join through via as role.
func newProcJoiningAs(t testing.TB, name string, via *proc, role string) *proc {
	t.Helper()
	p := newProc(t, name, "")
	// Rewrite the cluster section's tail: join through via.
	cfg, err := os.ReadFile(p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(cfg), "    leader_lease_timeout: 150ms\n", "    leader_lease_timeout: 150ms\n"+joinConfig(via, p.home)+"\n  role: "+role+"\n", 1)
	write(t, p.cfgPath, strings.TrimRight(s, "\n"))
	p.joinWith(t, via, role)
	return p
}

// TestServerSIGTERM: SIGTERM drains the node and the process exits 0; the
// node restarts from its data dir with the same identity and state.
func TestServerSIGTERM(t *testing.T) {
	p := newProc(t, "solo", "  bootstrap: true")
	p.start()
	p.waitReady()
	p.admin(t, append([]string{"cluster", "join-token", "--role", "voter"}, someKeys("later")...)...) // a write to keep
	before := p.status(t)

	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	log, _ := os.ReadFile(filepath.Join(p.home, "log"))
	if !strings.Contains(string(log), `msg="node: stopped"`) || strings.Contains(string(log), "level=ERROR") {
		t.Errorf("log of a clean stop:\n%s", tail(string(log), 20))
	}
	if _, err := os.Stat(filepath.Join(p.dataDir, "admin.sock")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket left behind: %v", err)
	}

	p.start()
	p.waitReady()
	again := p.status(t)
	if again.Node != before.Node || again.AppliedIndex < before.AppliedIndex || len(again.Members) != 1 || again.State != "Leader" {
		t.Fatalf("after restart %+v, before %+v", again, before)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(20 * time.Second); code != 0 {
		t.Fatalf("exit code %d after the second SIGTERM", code)
	}
}
