package node_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/internal/testenv"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/node"
)

// freePorts returns n distinct loopback addresses with ports free a moment ago.
func freePorts(t testing.TB, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// testConfig is a node on loopback with the short Raft timings tests use, its
// data dir in a temp dir and its key on tok. extra is YAML appended to the
// cluster section.
func testConfig(t testing.TB, tok *softhsm.Token, clusterExtra string) *node.Config {
	t.Helper()
	p := freePorts(t, 4)
	dir := filepath.Join(t.TempDir(), "data")
	raw := fmt.Sprintf(`data_dir: %s
cluster:
  name: inkan-test
  bind: %s
  raft:
    heartbeat_timeout: 300ms
    election_timeout: 300ms
    leader_lease_timeout: 100ms
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
  pin_file: %s
log:
  level: %s
drain_timeout: 2s
`, dir, p[0], clusterExtra, p[1], p[2], p[3], tok.Module, tok.Label, tok.PINFile, logLevel())
	file := filepath.Join(t.TempDir(), "node.yaml")
	if err := os.WriteFile(file, []byte(raw), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := node.LoadConfig(file)
	if err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	return cfg
}

func logLevel() string {
	if os.Getenv("NODE_TEST_LOG") != "" {
		return "debug"
	}
	return "error"
}

// start starts a node and stops it when the test ends.
func start(t testing.TB, cfg *node.Config, comps ...node.Component) *node.Node {
	t.Helper()
	n, err := node.Start(testenv.Context(t, 60*time.Second), cfg, comps...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	return n
}

func get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitReady polls /readyz until it answers 200.
func waitReady(t testing.TB, n *node.Node) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get(t, "http://"+n.Addrs().Metrics+"/readyz")
		if code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %d %s", code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kvPut is a test component's command: it stores a key, or fails to apply (a
// replica that cannot apply a committed command stops) when the key is "fail".
type kvPut struct{}

type kvBody struct{ Key, Value string }

func (kvPut) Type() string      { return "test.kv" }
func (kvPut) Versions() []uint  { return []uint{1} }
func (kvPut) Buckets() [][]byte { return [][]byte{[]byte("test.kv")} }
func (kvPut) Apply(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b kvBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	if b.Key == "fail" {
		return nil, errors.New("test: cannot apply")
	}
	return nil, tx.Bucket([]byte("test.kv")).Put([]byte(b.Key), []byte(b.Value))
}

func put(ctx context.Context, c *cluster.Cluster, key, value string) error {
	cmd, err := cluster.NewCommand("test.kv", 1, kvBody{key, value})
	if err != nil {
		return err
	}
	_, err = c.Submit(ctx, cmd)
	return err
}

// kvComponent is the test's key-value handler; its writes are test data, not
// changes an auditor looks for.
func kvComponent() node.Component {
	return node.Component{Name: "kv", Handlers: []cluster.Handler{kvPut{}}, Unaudited: []string{"test.kv"}}
}

// recorder is a component that records its start and stop and mounts a
// handler on the API.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) record(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, s)
}

func (r *recorder) component(name string) node.Component {
	return node.Component{
		Name: name,
		Start: func(_ context.Context, env *node.Env) error {
			if env.Cluster == nil || env.Token == nil || env.Metrics == nil {
				return errors.New("env incomplete")
			}
			env.API.HandleFunc("GET /"+name+"/", func(w http.ResponseWriter, _ *http.Request) {
				fmt.Fprintf(w, "%s on %s", name, env.Cluster.ID())
			})
			r.record("start " + name)
			return nil
		},
		Stop: func(context.Context) error { r.record("stop " + name); return nil },
	}
}

// TestNodeListeners runs one bootstrapping node and checks every listener over
// real sockets: probes and metrics, the HTTPS API with the node's certificate
// from the cluster CA and a component's handler, the OCSP listener's handler,
// and the order in which components start and stop.
func TestNodeListeners(t *testing.T) {
	tok := softhsm.NewToken(t)
	cfg := testConfig(t, tok, "  bootstrap: true\n  node_id: solo")
	rec := &recorder{}
	kv := kvComponent()
	n := start(t, cfg, kv, rec.component("alpha"), rec.component("beta"))
	waitReady(t, n)
	a := n.Addrs()

	t.Run("healthz", func(t *testing.T) {
		code, body := get(t, "http://"+a.Metrics+"/healthz")
		if code != http.StatusOK || !strings.Contains(body, `"node":"solo"`) {
			t.Fatalf("healthz: %d %s", code, body)
		}
	})
	t.Run("readyz", func(t *testing.T) {
		code, body := get(t, "http://"+a.Metrics+"/readyz")
		var p struct {
			OK     bool
			State  string
			Leader string
		}
		if err := json.Unmarshal([]byte(body), &p); err != nil || code != 200 || !p.OK || p.State != "Leader" || p.Leader != "solo" {
			t.Fatalf("readyz: %d %s", code, body)
		}
	})
	t.Run("metrics", func(t *testing.T) {
		ctx := testenv.Context(t, 10*time.Second)
		if err := put(ctx, n.Cluster(), "k", "v"); err != nil {
			t.Fatal(err)
		}
		// A body that is not a kvBody is refused: an apply error to count.
		bad, err := cluster.NewCommand("test.kv", 1, "not a struct")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.Cluster().Submit(ctx, bad); !errors.Is(err, cluster.ErrRefused) {
			t.Fatalf("bad body: %v", err)
		}
		code, body := get(t, "http://"+a.Metrics+"/metrics")
		if code != http.StatusOK {
			t.Fatalf("metrics: %d", code)
		}
		for _, want := range []string{
			"inkan_cluster_raft_state 2", "inkan_cluster_applied_index", "inkan_cluster_commit_seconds_count",
			`inkan_cluster_apply_errors_total{kind="refused"} 1`, "go_goroutines", "process_open_fds",
		} {
			if !strings.Contains(body, want) {
				t.Errorf("metrics lack %q", want)
			}
		}
	})
	t.Run("api", func(t *testing.T) {
		pemCA, err := os.ReadFile(filepath.Join(cfg.DataDir, "cluster-ca.pem"))
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemCA) {
			t.Fatal("no CA in cluster-ca.pem")
		}
		// The node certificate names the node in its CN and carries no
		// SAN: verify the chain to the cluster CA and the CN.
		tc := &tls.Config{InsecureSkipVerify: true, VerifyConnection: func(cs tls.ConnectionState) error {
			leaf := cs.PeerCertificates[0]
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return err
			}
			if leaf.Subject.CommonName != "solo" {
				return fmt.Errorf("CN %q", leaf.Subject.CommonName)
			}
			return nil
		}}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
		resp, err := hc.Get("https://" + a.API + "/alpha/x")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "alpha on solo" {
			t.Fatalf("api: %d %q", resp.StatusCode, b)
		}
		// A path no service serves is a problem, as every refusal of the API.
		resp, err = hc.Post("https://"+a.API+"/v1/nope", "application/json", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Content-Type") != "application/problem+json" || !strings.Contains(string(b), `"urn:inkan:problem:not-found"`) {
			t.Fatalf("api, an unknown path: %d %s %q", resp.StatusCode, resp.Header.Get("Content-Type"), b)
		}
	})
	t.Run("ocsp", func(t *testing.T) {
		// The node's own responder: a request that is no OCSP request gets
		// malformedRequest; an unknown CA certificate, 404.
		if code, body := get(t, "http://"+a.OCSP+"/anything"); code != 200 || body != "\x30\x03\x0a\x01\x01" {
			t.Fatalf("ocsp: %d %q", code, body)
		}
		if code, _ := get(t, "http://"+a.OCSP+"/ca/nope.crt"); code != http.StatusNotFound {
			t.Fatalf("ca certificate: %d", code)
		}
	})

	if err := n.Stop(testenv.Context(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if got, want := strings.Join(rec.events, ", "), "start alpha, start beta, stop beta, stop alpha"; got != want {
		t.Errorf("component events %q, want %q", got, want)
	}
	if _, err := os.Stat(a.Admin); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("admin socket left after stop: %v", err)
	}
	if _, err := net.Dial("tcp", a.Metrics); err == nil {
		t.Error("metrics listener still open after stop")
	}
}

// TestNodeRestart: a stopped node restarts from its data dir with its state,
// and a second node on the same data dir is refused while the first runs.
func TestNodeRestart(t *testing.T) {
	tok := softhsm.NewToken(t)
	cfg := testConfig(t, tok, "  bootstrap: true")
	n := start(t, cfg, kvComponent())
	waitReady(t, n)
	ctx := testenv.Context(t, 30*time.Second)
	if err := put(ctx, n.Cluster(), "before", "restart"); err != nil {
		t.Fatal(err)
	}
	id := n.Cluster().ID()

	if _, err := node.Start(ctx, cfg); err == nil || !strings.Contains(err.Error(), "in use by another running node") {
		t.Fatalf("second node on one data dir: %v", err)
	}
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	n2 := start(t, cfg, kvComponent())
	waitReady(t, n2)
	if n2.Cluster().ID() != id {
		t.Fatalf("restarted as %s, was %s", n2.Cluster().ID(), id)
	}
	var got []byte
	err := n2.Cluster().ViewCurrent(ctx, func(tx *bbolt.Tx) error {
		got = append(got, tx.Bucket([]byte("test.kv")).Get([]byte("before"))...)
		return nil
	})
	if err != nil || string(got) != "restart" {
		t.Fatalf("state after restart: %q, %v", got, err)
	}
}

// stutter returns a context said twice in a row ("node: hsm: hsm: …"), or "".
func stutter(msg string) string {
	parts := strings.Split(msg, ": ")
	for i := 1; i < len(parts); i++ {
		if parts[i] == parts[i-1] && strings.Trim(parts[i], "abcdefghijklmnopqrstuvwxyz/") == "" {
			return parts[i]
		}
	}
	return ""
}

// TestStartErrorsSayEachContextOnce: a node that cannot open its token says so
// with its identity kept (errors.Is) and each part of its context once.
func TestStartErrorsSayEachContextOnce(t *testing.T) {
	tok := softhsm.NewToken(t)
	for _, c := range []struct {
		name string
		edit func(*node.Config)
		is   error
	}{
		{"no such token", func(c *node.Config) { c.HSM.Token = "no-such-token" }, hsm.ErrTokenNotFound},
		{"no such module", func(c *node.Config) { c.HSM.Module = "/nonexistent/libpkcs11.so" }, hsm.ErrModuleNotLoadable},
		{"PIN file open to others", func(c *node.Config) {
			pin := filepath.Join(t.TempDir(), "pin")
			if err := os.WriteFile(pin, []byte("1234"), 0o644); err != nil {
				t.Fatal(err)
			}
			c.HSM.PINFile = pin
		}, hsm.ErrPINSource},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := testConfig(t, tok, "  bootstrap: true")
			c.edit(cfg)
			n, err := node.Start(testenv.Context(t, 30*time.Second), cfg)
			if err == nil {
				n.Stop(context.Background())
				t.Fatal("started")
			}
			if !errors.Is(err, c.is) {
				t.Fatalf("error %v is not %v", err, c.is)
			}
			if m := stutter(err.Error()); m != "" {
				t.Fatalf("error %q says %q twice", err, m)
			}
		})
	}
	if m := stutter("node: hsm: hsm: open"); m != "hsm" {
		t.Fatal("the stutter pattern finds nothing")
	}
}

// TestNodeStopsWhenClusterFails: a committed command this replica cannot apply
// stops the cluster, and the node with it, with the cluster's error.
func TestNodeStopsWhenClusterFails(t *testing.T) {
	tok := softhsm.NewToken(t)
	cfg := testConfig(t, tok, "  bootstrap: true")
	n := start(t, cfg, kvComponent())
	waitReady(t, n)
	_ = put(testenv.Context(t, 5*time.Second), n.Cluster(), "fail", "")
	select {
	case <-n.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("node still running after its cluster failed")
	}
	if err := n.Err(); !errors.Is(err, cluster.ErrNodeFailed) {
		t.Fatalf("Err() = %v, want cluster.ErrNodeFailed", err)
	}
	if _, err := net.Dial("tcp", n.Addrs().Metrics); err == nil {
		t.Error("metrics listener still open after the failure")
	}
}

// TestAdmin exercises the admin API over the node's unix socket, through
// admin.Client, and the problem types of its refusals.
func TestAdmin(t *testing.T) {
	tok := softhsm.NewToken(t)
	cfg := testConfig(t, tok, "  bootstrap: true\n  node_id: adm")
	n := start(t, cfg)
	waitReady(t, n)
	ctx := testenv.Context(t, 30*time.Second)
	ac := admin.NewClient(cfg.AdminSocket())

	fi, err := os.Stat(cfg.AdminSocket())
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("admin socket: %v %v", fi.Mode(), err)
	}

	st, err := ac.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Node != "adm" || st.State != "Leader" || !st.Ready || len(st.Members) != 1 ||
		st.Members[0].Raft != "voter" || !st.Members[0].Leader || !st.Members[0].Self {
		t.Fatalf("status: %+v", st)
	}

	keys := func(id string) cluster.JoinKeys {
		return cluster.JoinKeys{Node: id, NodeKey: cluster.KeyFingerprint{1}, TransportKey: cluster.KeyFingerprint{2}}
	}
	for _, role := range []string{"voter", "nonvoter"} {
		tok, g, err := ac.GrantJoin(ctx, role, keys("new-"+role), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(tok, "inkan-join.") || g.Role != role || g.Node != "new-"+role || g.TTL != "1h0m0s" ||
			g.TransportKey != keys("").TransportKey.String() {
			t.Fatalf("join grant: %s %+v", tok, g)
		}
	}

	problems := []struct {
		name string
		call func() error
		want string
	}{
		{"bad role", func() error { _, _, err := ac.GrantJoin(ctx, "leader", keys("x"), time.Hour); return err }, "request-invalid"},
		{"ttl too long", func() error { _, _, err := ac.GrantJoin(ctx, "voter", keys("x"), 30*24*time.Hour); return err }, "request-invalid"},
		{"grant to a member", func() error { _, _, err := ac.GrantJoin(ctx, "voter", keys("adm"), time.Hour); return err }, "refused"},
		{"remove unknown", func() error { return ac.RemoveNode(ctx, "nosuch") }, "node-unknown"},
		{"remove self", func() error { return ac.RemoveNode(ctx, "adm") }, "remove-self"},
		{"last voter leaves", func() error { return ac.Leave(ctx) }, "last-voter"},
		// Every documented spelling of a serial reaches the lookup; others are
		// refused naming the argument.
		{"serial as openssl -text prints it", func() error { _, err := ac.Cert(ctx, "0D:0A:59:08"); return err }, "cert-unknown"},
		{"serial with DER's zero byte", func() error { _, err := ac.Cert(ctx, "00d0a59081"); return err }, "cert-unknown"},
		{"serial not hex", func() error {
			_, err := ac.Cert(ctx, "0d0g")
			var prob *admin.Problem
			if errors.As(err, &prob) && !strings.HasPrefix(prob.Detail, `serial "0d0g": not a certificate serial number`) {
				return fmt.Errorf("detail %q does not name the argument", prob.Detail)
			}
			return err
		}, "request-invalid"},
		{"list after a serial with a bad colon", func() error {
			_, err := ac.Certs(ctx, url.Values{"after": {"0d::0a"}})
			return err
		}, "request-invalid"},
		{"transfer alone", func() error {
			ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			defer cancel()
			_, err := ac.TransferLeadership(ctx)
			return err
		}, ""},
	}
	for _, p := range problems {
		t.Run(p.name, func(t *testing.T) {
			err := p.call()
			var prob *admin.Problem
			if !errors.As(err, &prob) {
				t.Fatalf("error %v is not a problem", err)
			}
			if p.want != "" && prob.Name() != p.want {
				t.Fatalf("problem %s (%v), want %s", prob.Name(), prob, p.want)
			}
			if !strings.HasPrefix(prob.Type, "urn:inkan:problem:admin:") || prob.Status < 400 || prob.Detail == "" {
				t.Fatalf("problem %+v", prob)
			}
		})
	}

	// A socket nobody listens on says so.
	_, err = admin.NewClient(filepath.Join(t.TempDir(), "admin.sock")).Status(ctx)
	if err == nil || !strings.Contains(err.Error(), "no node is running") {
		t.Fatalf("missing socket: %v", err)
	}
}

// TestJoinEdge: a join token file open to others is refused before it is
// used; a nonvoter joins with a good one and is ready, following the leader.
func TestJoinEdge(t *testing.T) {
	first := start(t, testConfig(t, softhsm.NewToken(t), "  bootstrap: true"))
	waitReady(t, first)
	ctx := testenv.Context(t, 60*time.Second)
	ac := admin.NewClient(first.Addrs().Admin)
	file := filepath.Join(t.TempDir(), "token")
	cfg := testConfig(t, softhsm.NewToken(t), fmt.Sprintf("  role: nonvoter\n  join:\n    address: %s\n    token_file: %s", first.Addrs().Cluster, file))
	keys, err := node.PrepareJoin(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok, _, err := ac.GrantJoin(ctx, "nonvoter", keys, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(tok+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	if _, err := node.Start(ctx, cfg); err == nil || !strings.Contains(err.Error(), "make it 0600") {
		t.Fatalf("token file open to others: %v", err)
	}
	if err := os.Chmod(file, 0o600); err != nil {
		t.Fatal(err)
	}
	edge := start(t, cfg)
	waitReady(t, edge)
	st, err := admin.NewClient(edge.Addrs().Admin).Status(ctx)
	if err != nil || st.Role != "nonvoter" || st.LeaderID != first.Cluster().ID() || len(st.Members) != 2 {
		t.Fatalf("edge status %+v, %v", st, err)
	}
	// The edge cannot move leadership; the problem says why.
	_, err = admin.NewClient(edge.Addrs().Admin).TransferLeadership(ctx)
	var p *admin.Problem
	if !errors.As(err, &p) || !strings.Contains(p.Detail, "not allowed to nonvoter") {
		t.Fatalf("transfer from an edge: %v", err)
	}

	// Restarted, the edge resumes from its data dir: the spent token's file
	// may be gone.
	if err := edge.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(file); err != nil {
		t.Fatal(err)
	}
	edge = start(t, cfg)
	waitReady(t, edge)

	// With the only voter gone the edge is alive but not ready.
	if err := first.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	a := edge.Addrs()
	if code, body := get(t, "http://"+a.Metrics+"/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, `"ok":false`) {
		t.Fatalf("readyz without a quorum: %d %s", code, body)
	}
	if code, body := get(t, "http://"+a.Metrics+"/healthz"); code != http.StatusOK {
		t.Fatalf("healthz without a quorum: %d %s", code, body)
	}
}

// TestNodeDrainFinishesInFlight: a stop lets a request in flight on the API
// finish, refuses new connections, and only then stops the components.
func TestNodeDrainFinishesInFlight(t *testing.T) {
	tok := softhsm.NewToken(t)
	cfg := testConfig(t, tok, "  bootstrap: true")
	inFlight := make(chan struct{})
	var handled, stoppedDuring atomic.Bool
	n := start(t, cfg, node.Component{
		Name: "slow",
		Start: func(_ context.Context, env *node.Env) error {
			env.API.HandleFunc("GET /slow", func(w http.ResponseWriter, _ *http.Request) {
				close(inFlight)
				time.Sleep(300 * time.Millisecond)
				fmt.Fprint(w, "finished")
				handled.Store(true)
			})
			return nil
		},
		Stop: func(context.Context) error {
			// Runs after the listeners drained: the handler must be done.
			stoppedDuring.Store(!handled.Load())
			return nil
		},
	})
	waitReady(t, n)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := hc.Get("https://" + n.Addrs().API + "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{code: resp.StatusCode, body: string(b)}
	}()
	<-inFlight
	stopped := make(chan error, 1)
	go func() { stopped <- n.Stop(context.Background()) }()
	r := <-res
	if r.err != nil || r.code != 200 || r.body != "finished" {
		t.Fatalf("in-flight request during the drain: %d %q %v", r.code, r.body, r.err)
	}
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if stoppedDuring.Load() {
		t.Error("the component stopped while a request was in flight")
	}
	if _, err := net.Dial("tcp", n.Addrs().API); err == nil {
		t.Error("the API still accepts connections after the stop")
	}
}
