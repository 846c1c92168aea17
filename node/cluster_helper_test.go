package node

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/policies"
)

// testCluster is three voters and a nonvoting edge in this process, each a
// whole node (its own SoftHSM token, data dir, listeners, Raft over mTLS), with
// a self-signed CA made on the first. Tests stop nodes through it.
type testCluster struct {
	nodes []*Node // voters first, the edge last
	cfgs  []*Config
	ca    *ca.Initialized
}

// clusterNodeConfig is a node of a test cluster: bootstrap or join (through
// joinAddr with a token file), with the short Raft timings tests use, and
// every node's certificates pointing at public (the same on all).
func clusterNodeConfig(t testing.TB, name, clusterYAML, public string) *Config {
	t.Helper()
	tok := softhsm.NewToken(t)
	var addrs []string
	for range 4 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	pub := ""
	if public != "" {
		pub = ", public_url: " + public
	}
	raw := fmt.Sprintf(`data_dir: %s
cluster: {name: inkan-test, node_id: %s, bind: %s, raft: {heartbeat_timeout: 300ms, election_timeout: 300ms, leader_lease_timeout: 100ms}%s}
api: {listen: %s}
ocsp: {listen: %s%s}
metrics: {listen: %s}
hsm: {module: %s, token: %s, pin_file: %s}
log: {level: %s}
drain_timeout: 2s
`, filepath.Join(t.TempDir(), "data"), name, addrs[0], clusterYAML, addrs[1], addrs[2], pub, addrs[3],
		tok.Module, tok.Label, tok.PINFile, internalLogLevel())
	cfg, err := parseConfig([]byte(raw))
	if err != nil {
		t.Fatalf("%v\n%s", err, raw)
	}
	return cfg
}

func internalLogLevel() string {
	if os.Getenv("NODE_TEST_LOG") != "" {
		return "debug"
	}
	return "error"
}

// startTestCluster starts three voters and an edge, makes a CA on the first
// and waits until every node's OCSP listener is ready (/readyz/ocsp).
func startTestCluster(t testing.TB, ctx context.Context) *testCluster {
	t.Helper()
	tc := &testCluster{}
	first := clusterNodeConfig(t, "node1", ", bootstrap: true", "")
	// Every node writes node1's address into certificates: the tests ask each
	// node directly, so the address only has to be the same on all.
	public := first.OCSP.PublicURL
	n1 := tc.start(t, ctx, first)
	var err error
	if tc.ca, err = n1.app.authority().Init(ctx, ca.InitOptions{
		Subject: pkix.Name{Country: []string{"JP"}, Organization: []string{"inkan test"}, CommonName: "cluster test CA"}, SelfSign: true,
	}); err != nil {
		t.Fatal(err)
	}
	for _, j := range []struct{ name, role string }{{"node2", roleVoter}, {"node3", roleVoter}, {"edge1", roleNonvoter}} {
		file := filepath.Join(t.TempDir(), "token")
		cfg := clusterNodeConfig(t, j.name, fmt.Sprintf(", role: %s, join: {address: %s, token_file: %s}", j.role, n1.Addrs().Cluster, file), public)
		keys, err := PrepareJoin(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		tok, _, err := admin.NewClient(n1.cfg.AdminSocket()).GrantJoin(ctx, j.role, keys, 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		tc.start(t, ctx, cfg)
	}
	// A load balancer sends relying parties to a node once its /readyz/ocsp
	// says so: it holds its responder certificate and has signed what its
	// state holds.
	for i, n := range tc.nodes {
		for deadline := time.Now().Add(60 * time.Second); !n.readyOCSP(time.Now()).OK; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s not ready for OCSP: %+v", tc.cfgs[i].Cluster.NodeID, n.readyOCSP(time.Now()))
			}
		}
	}
	return tc
}

func (tc *testCluster) start(t testing.TB, ctx context.Context, cfg *Config) *Node {
	t.Helper()
	n, err := Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		_ = n.Stop(ctx)
	})
	for deadline := time.Now().Add(60 * time.Second); !n.ready(ctx).OK; {
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready", cfg.Cluster.NodeID)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tc.nodes = append(tc.nodes, n)
	tc.cfgs = append(tc.cfgs, cfg)
	return n
}

// leader returns the node that leads, waiting for one.
func (tc *testCluster) leader(t testing.TB) *Node {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		for _, n := range tc.nodes {
			c := n.Cluster()
			if c == nil {
				continue
			}
			if st, err := c.Status(); err == nil && st.LeaderID == c.ID() && st.State == "Leader" {
				return n
			}
		}
	}
	t.Fatal("no leader")
	return nil
}

// testRequest is a derived certificate request as the enrollment API makes
// one, for a fresh key, link and person.
func testRequest(t testing.TB) ca.Request {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	link, person := make([]byte, 32), make([]byte, 32)
	rand.Read(link)
	rand.Read(person)
	return ca.Request{
		Decision: policies.Decision{
			Profile: "authentication", PolicyVersion: 1,
			Template: &x509.Certificate{
				Subject:     pkix.Name{Country: []string{"JP"}, CommonName: fmt.Sprintf("%x", link[:8])},
				KeyUsage:    x509.KeyUsageDigitalSignature,
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			},
			NotAfter: time.Now().Add(365 * 24 * time.Hour),
		},
		PublicKey: key.Public(), Link: link, Person: person,
	}
}
