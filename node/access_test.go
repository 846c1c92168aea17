package node

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/operator"
)

// testNodeConfig is the configuration of a bootstrapping node on its own
// SoftHSM token (returned too), with the admin API over mutual TLS, all on
// free ports.
func testNodeConfig(t *testing.T, name string) (*Config, *softhsm.Token) {
	t.Helper()
	tok := softhsm.NewToken(t)
	var addrs []string
	for range 5 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	raw := fmt.Sprintf(`data_dir: %s
cluster: {name: %s, bind: %s, bootstrap: true, raft: {heartbeat_timeout: 300ms, election_timeout: 300ms, leader_lease_timeout: 100ms}}
api: {listen: %s}
ocsp: {listen: %s}
metrics: {listen: %s}
admin: {listen: %s}
hsm: {module: %s, token: %s, pin_file: %s}
log: {level: error}
drain_timeout: 2s
`, filepath.Join(t.TempDir(), "data"), name, addrs[0], addrs[1], addrs[2], addrs[3], addrs[4], tok.Module, tok.Label, tok.PINFile)
	cfg, err := parseConfig([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return cfg, tok
}

// startTestNode starts a node from cfg, waits until it is ready, and stops
// it when the test ends.
func startTestNode(t *testing.T, ctx context.Context, cfg *Config) *Node {
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
	for deadline := time.Now().Add(30 * time.Second); !n.ready(ctx).OK; {
		if time.Now().After(deadline) {
			t.Fatal("node not ready")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return n
}

// accessNode starts a bootstrapping node with the admin API over mutual TLS,
// and returns it with the token its keys are on.
func accessNode(t *testing.T) (*Node, *softhsm.Token) {
	t.Helper()
	cfg, tok := testNodeConfig(t, "access-test")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return startTestNode(t, ctx, cfg), tok
}

// identity is a TLS client identity for the matrix.
type identity struct {
	name string
	role operator.Role // "" for the identities that are no operator
	cert *tls.Certificate
}

func newCSR(t *testing.T, name string) (crypto.Signer, string) {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, k)
	if err != nil {
		t.Fatal(err)
	}
	return k, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
}

func tlsCert(t *testing.T, certPEM string, key crypto.Signer) *tls.Certificate {
	t.Helper()
	b, _ := pem.Decode([]byte(certPEM))
	if b == nil {
		t.Fatalf("no certificate in %q", certPEM)
	}
	return &tls.Certificate{Certificate: [][]byte{b.Bytes}, PrivateKey: key}
}

// TestAdminRoleMatrix calls every admin route over mutual TLS as each role, as
// a client with no certificate, with a certificate from another CA, and with
// an expired operator certificate: only the pairs the role matrix allows get
// past access control, and each refusal names what was missing.
func TestAdminRoleMatrix(t *testing.T) {
	n, tok := accessNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sock := admin.NewClient(n.cfg.AdminSocket())

	// The first admin through the socket, then an officer and an auditor
	// (directly: the cluster has fewer admins than dual control needs).
	adminKey, adminCSR := newCSR(t, "admin")
	first, err := sock.InitOperators(ctx, admin.OperatorInit{Name: "admin", CSR: adminCSR})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(n.cfg.DataDir, clusterCAFile))
	if err != nil || !roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("cluster CA: %v", err)
	}
	url := "https://" + n.Addrs().AdminTLS
	asAdmin := admin.NewClientTLS(url, roots, *tlsCert(t, first.Certificate, adminKey))
	ids := []identity{{name: "admin", role: operator.Admin, cert: tlsCert(t, first.Certificate, adminKey)}}
	for _, r := range []operator.Role{operator.Officer, operator.Auditor} {
		k, csr := newCSR(t, string(r))
		op, err := asAdmin.AddOperator(ctx, admin.OperatorAdd{Name: string(r), Role: string(r), CSR: csr})
		if err != nil {
			t.Fatalf("add %s: %v", r, err)
		}
		ids = append(ids, identity{name: string(r), role: r, cert: tlsCert(t, op.Certificate, k)})
	}
	ids = append(ids, identity{name: "no certificate"})

	// A certificate from another CA, shaped like an operator's.
	adminCert, _ := x509.ParseCertificate(ids[0].cert.Certificate[0])
	otherKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := *adminCert
	tmpl.SerialNumber = big.NewInt(7)
	tmpl.PublicKey = otherKey.Public()
	otherDER, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, otherKey.Public(), otherKey)
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, identity{name: "another CA", cert: &tls.Certificate{Certificate: [][]byte{otherDER}, PrivateKey: otherKey}})

	// An expired certificate from the operator CA itself, for the admin's key.
	caKey, err := tok.HSM.Signer(ctx, hsm.URI{Object: operatorCAKey, Type: "private"})
	if err != nil {
		t.Fatal(err)
	}
	var opCA *x509.Certificate
	if b, _ := pem.Decode([]byte(first.OperatorCA)); b != nil {
		opCA, err = x509.ParseCertificate(b.Bytes)
	}
	if opCA == nil || err != nil {
		t.Fatalf("operator CA: %v", err)
	}
	expired := *adminCert
	expired.SerialNumber = big.NewInt(8)
	expired.NotBefore, expired.NotAfter = time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour)
	expiredDER, err := x509.CreateCertificate(rand.Reader, &expired, opCA, adminKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, identity{name: "expired", cert: &tls.Certificate{Certificate: [][]byte{expiredDER}, PrivateKey: adminKey}})

	routes := admin.Routes()
	for _, pattern := range slices.Sorted(maps.Keys(routes)) {
		action := routes[pattern]
		method, path, _ := strings.Cut(pattern, " ")
		path = strings.NewReplacer("{id}", "x-unknown", "{serial}", "0badc0de", "{name}", "no-such-profile").Replace(path)
		for _, id := range ids {
			t.Run(pattern+"/"+id.name, func(t *testing.T) {
				status, prob := call(t, url, roots, id.cert, method, path)
				switch {
				case action == "": // whoever asks
					if status != http.StatusForbidden || !strings.HasSuffix(prob.Type, ":socket-only") {
						t.Fatalf("socket-only route over TLS: %d %+v", status, prob)
					}
				case id.role == "":
					if status != http.StatusUnauthorized || !strings.HasSuffix(prob.Type, ":unauthenticated") {
						t.Fatalf("%s: %d %+v; want 401 unauthenticated", id.name, status, prob)
					}
				case operator.Authorize(operator.Operator{Role: id.role, Status: operator.Active}, action) == nil:
					if status == http.StatusUnauthorized || (status == http.StatusForbidden && strings.HasSuffix(prob.Type, ":forbidden")) {
						t.Fatalf("%s may %s, refused: %d %+v", id.role, action, status, prob)
					}
				default:
					if status != http.StatusForbidden || !strings.HasSuffix(prob.Type, ":forbidden") || !strings.Contains(prob.Detail, "needs role") {
						t.Fatalf("%s may not %s: %d %+v", id.role, action, status, prob)
					}
				}
			})
		}
	}

	// And the socket, now that there are operators: only what concerns the node.
	if _, err := sock.Status(ctx); err != nil {
		t.Fatalf("socket status: %v", err)
	}
	var p *admin.Problem
	if _, err := sock.Issuers(ctx); !errors.As(err, &p) || p.Name() != "operator-required" {
		t.Fatalf("socket after init: %v", err)
	}
}

// call is rawCall with the body a POST needs ("{}") and none otherwise.
func call(t *testing.T, url string, roots *x509.CertPool, cert *tls.Certificate, method, path string) (int, admin.Problem) {
	t.Helper()
	body := ""
	if method == http.MethodPost {
		body = "{}"
	}
	status, p, _ := rawCall(t, url, roots, cert, method, path, body)
	return status, p
}

// TestAdminDualControl: a CA key generation needs 2 admins besides the
// proposer. The proposer's own approval and an officer's are refused, one
// approval leaves it pending and nothing made; the second runs it, on the
// leader, as the proposer.
func TestAdminDualControl(t *testing.T) {
	n, _ := accessNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	sock := admin.NewClient(n.cfg.AdminSocket())
	roots := x509.NewCertPool()
	caPEM, _ := os.ReadFile(filepath.Join(n.cfg.DataDir, clusterCAFile))
	roots.AppendCertsFromPEM(caPEM)
	url := "https://" + n.Addrs().AdminTLS

	k1, csr1 := newCSR(t, "a1")
	a1, err := sock.InitOperators(ctx, admin.OperatorInit{Name: "a1", CSR: csr1})
	if err != nil {
		t.Fatal(err)
	}
	type member struct {
		c   *admin.Client
		key crypto.Signer
	}
	admins := []member{{admin.NewClientTLS(url, roots, *tlsCert(t, a1.Certificate, k1)), k1}}
	add := func(name string, role operator.Role) member {
		k, csr := newCSR(t, name)
		op, err := admins[0].c.AddOperator(ctx, admin.OperatorAdd{Name: name, Role: string(role), CSR: csr})
		if err != nil {
			t.Fatalf("add %s: %v", name, err)
		}
		return member{admin.NewClientTLS(url, roots, *tlsCert(t, op.Certificate, k)), k}
	}
	// The officer first: once there are three admins, adding anyone is
	// itself under dual control.
	officer := add("o1", operator.Officer)
	admins = append(admins, add("a2", operator.Admin), add("a3", operator.Admin))

	_, err = admins[0].c.InitCA(ctx, admin.CAInitRequest{Subject: admin.CASubject{CommonName: "dual"}, SelfSign: true})
	var proposed *admin.ProposedError
	if !errors.As(err, &proposed) {
		t.Fatalf("ca init under dual control: %v", err)
	}
	q := proposed.Request
	decide := func(m member) error {
		got, err := m.c.Approval(ctx, q.ID)
		if err != nil {
			return err
		}
		raw, _ := hexDecode(got.Digest)
		sig, err := operator.SignApproval(m.key, q.ID, raw, operator.Approve)
		if err != nil {
			t.Fatal(err)
		}
		_, err = m.c.Decide(ctx, q.ID, true, sig)
		return err
	}
	noCA := func(when string) {
		if is, err := admins[0].c.Issuers(ctx); err != nil || len(is) != 0 {
			t.Fatalf("%s: issuers %v, %v; want none", when, is, err)
		}
	}
	var p *admin.Problem
	if err := decide(admins[0]); !errors.As(err, &p) || p.Name() != "self-approval" {
		t.Fatalf("proposer's approval: %v", err)
	}
	if err := decide(officer); !errors.As(err, &p) || p.Name() != "approver-role" {
		t.Fatalf("officer's approval: %v", err)
	}
	if err := decide(admins[1]); err != nil {
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond) // the leader's sweep runs every second
	noCA("after one approval")
	if err := decide(admins[1]); !errors.As(err, &p) || p.Name() != "duplicate-approval" {
		t.Fatalf("a second approval by the same admin: %v", err)
	}
	if err := decide(admins[2]); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		got, err := admins[0].c.Approval(ctx, q.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.State == "executed" {
			break
		}
		if time.Now().After(deadline) || got.State == "failed" || got.State == "interrupted" {
			t.Fatalf("request after two approvals: %+v", got)
		}
	}
	is, err := admins[0].c.Issuers(ctx)
	if err != nil || len(is) != 1 || is[0].Status != "active" {
		t.Fatalf("after the approvals: %+v, %v", is, err)
	}
}

func hexDecode(s string) ([32]byte, error) {
	var d [32]byte
	b, err := hex.DecodeString(s)
	copy(d[:], b)
	return d, err
}
