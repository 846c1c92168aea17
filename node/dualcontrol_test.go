package node

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/audit"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/operator"
)

// The insider's tests: one operator with one role, and their own certificate,
// trying to do what the rules of dual control say needs others.

// staff is a cluster's operators: four admins, three officers, an auditor,
// each with a client of the admin API over mutual TLS.
type staff struct {
	n        *Node
	tok      *softhsm.Token
	url      string
	roots    *x509.CertPool
	admins   []opClient
	officers []opClient
	auditor  opClient
}

type opClient struct {
	name string
	c    *admin.Client
	key  crypto.Signer
	cert *tls.Certificate
	op   admin.OperatorInfo
}

// newStaff starts a bootstrapping node with the admin API over mutual TLS
// (cfg tweaked by tweak) and gives it its operators, added in the initial
// ceremony (directly, while the rule of operator.manage cannot be met).
func newStaff(t *testing.T, ctx context.Context, tweak func(*Config)) *staff {
	t.Helper()
	cfg, tok := testNodeConfig(t, "insider-test")
	if tweak != nil {
		tweak(cfg)
	}
	s := &staff{n: startTestNode(t, ctx, cfg), tok: tok}
	s.roots = x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(cfg.DataDir, clusterCAFile))
	if err != nil || !s.roots.AppendCertsFromPEM(caPEM) {
		t.Fatalf("cluster CA: %v", err)
	}
	s.url = "https://" + s.n.Addrs().AdminTLS
	k, csr := newCSR(t, "a0")
	a0, err := admin.NewClient(cfg.AdminSocket()).InitOperators(ctx, admin.OperatorInit{Name: "a0", CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	s.admins = append(s.admins, s.client(t, "a0", *a0, k))
	add := func(name string, role operator.Role) opClient {
		k, csr := newCSR(t, name)
		op, err := s.admins[0].c.AddOperator(ctx, admin.OperatorAdd{Name: name, Role: string(role), CSR: csr})
		if err != nil {
			t.Fatalf("add %s: %v", name, err)
		}
		return s.client(t, name, *op, k)
	}
	for i := 1; i <= 3; i++ {
		s.officers = append(s.officers, add(fmt.Sprintf("o%d", i), operator.Officer))
	}
	s.auditor = add("u1", operator.Auditor)
	// Admins last: from the third on, adding anyone needs approval.
	for i := 1; i <= 3; i++ {
		if i == 3 {
			// The fourth admin, proposed and approved like any change from now on.
			k, csr := newCSR(t, "a3")
			_, err := s.admins[0].c.AddOperator(ctx, admin.OperatorAdd{Name: "a3", Role: "admin", CSR: csr})
			q := s.proposed(t, err)
			s.approve(t, ctx, q, s.admins[1], s.admins[2])
			op := s.waitOperator(t, ctx, "a3")
			s.admins = append(s.admins, s.client(t, "a3", op, k))
			continue
		}
		s.admins = append(s.admins, add(fmt.Sprintf("a%d", i), operator.Admin))
	}
	return s
}

func (s *staff) client(t *testing.T, name string, op admin.OperatorInfo, k crypto.Signer) opClient {
	cert := tlsCert(t, op.Certificate, k)
	return opClient{name: name, c: admin.NewClientTLS(s.url, s.roots, *cert), key: k, cert: cert, op: op}
}

// waitOperator waits for an operator added by an approved request.
func (s *staff) waitOperator(t *testing.T, ctx context.Context, name string) admin.OperatorInfo {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ops, err := s.admins[0].c.Operators(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range ops {
			if o.Name == name && o.Status == "active" {
				full, err := s.admins[0].c.Operator(ctx, o.ID)
				if err != nil {
					t.Fatal(err)
				}
				return *full
			}
		}
	}
	t.Fatalf("operator %s never added", name)
	return admin.OperatorInfo{}
}

// proposed is the request an admin call was put under.
func (s *staff) proposed(t *testing.T, err error) admin.ApprovalRequest {
	t.Helper()
	var p *admin.ProposedError
	if !errors.As(err, &p) {
		t.Fatalf("want a request under dual control, got %v", err)
	}
	return p.Request
}

// decide signs and sends one decision.
func (s *staff) decide(ctx context.Context, q admin.ApprovalRequest, by opClient, d operator.Decision) error {
	digest, err := hexDecode(q.Digest)
	if err != nil {
		return err
	}
	sig, err := operator.SignApproval(by.key, q.ID, digest, d)
	if err != nil {
		return err
	}
	_, err = by.c.Decide(ctx, q.ID, d == operator.Approve, sig)
	return err
}

func (s *staff) approve(t *testing.T, ctx context.Context, q admin.ApprovalRequest, by ...opClient) {
	t.Helper()
	for _, b := range by {
		if err := s.decide(ctx, q, b, operator.Approve); err != nil {
			t.Fatalf("%s approves %s: %v", b.name, q.ID, err)
		}
	}
}

// waitState waits until request id is in state want (or a final other one).
func (s *staff) waitState(t *testing.T, ctx context.Context, id, want string) admin.Approval {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		a, err := s.admins[0].c.Approval(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if a.State == want {
			return *a
		}
		if time.Now().After(deadline) || a.State == "failed" || a.State == "interrupted" || a.State == "rejected" {
			t.Fatalf("request %s is %s (%s), want %s", id, a.State, a.Error, want)
		}
	}
}

func wantProblem(t *testing.T, what string, err error, name string) {
	t.Helper()
	var p *admin.Problem
	if !errors.As(err, &p) || p.Name() != name {
		t.Fatalf("%s: %v, want problem %s", what, err, name)
	}
}

// joiner is a node that will join s's cluster as role, on its own token: its
// configuration (the token file not written yet) and its keys.
type joiner struct {
	cfg  *Config
	tok  *softhsm.Token
	keys cluster.JoinKeys
	file string
}

func (s *staff) newJoiner(t *testing.T, ctx context.Context, id, role string) *joiner {
	t.Helper()
	cfg, tok := testNodeConfig(t, "insider-test")
	cfg.Cluster.Bootstrap = false
	cfg.Cluster.NodeID = id
	cfg.Cluster.Role = role
	file := filepath.Join(t.TempDir(), "join-token")
	cfg.Cluster.Join = &joinConfig{Address: s.n.Addrs().Cluster, TokenFile: file}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	keys, err := PrepareJoin(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &joiner{cfg: cfg, tok: tok, keys: keys, file: file}
}

// start starts the joiner with token; it returns the node or the error.
func (j *joiner) start(t *testing.T, ctx context.Context, token string) (*Node, error) {
	t.Helper()
	if err := os.WriteFile(j.file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := Start(ctx, j.cfg)
	if err == nil {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_ = n.Stop(ctx)
		})
	}
	return n, err
}

// operatorCAKey is the operator CA's replicated key in the HSMs, by the name
// docs/operators.md gives it.
const operatorCAKey = "operator-ca"

// heldKeys lists the replicated keys a token holds.
func heldKeys(t *testing.T, ctx context.Context, tok *softhsm.Token) []string {
	t.Helper()
	var out []string
	for _, name := range []string{cluster.CAKeyName, operatorCAKey, "audit-key", linkKeyName} {
		if _, err := tok.HSM.Signer(ctx, hsm.URI{Object: name, Type: "private"}); err == nil {
			out = append(out, name)
		}
	}
	return out
}

// TestInsiderCannotTakeAKey walks every route by which a replicated key can be
// wrapped for another HSM, as one admin with their own certificate: a voter's
// join (and a nonvoter's, with a voter's configuration), the approval of a
// transport key, a change of the rules themselves. The admin proposes, approves
// their own request, approves it again, counts on an approver who is then
// removed, and uses the token they hold with an HSM the approvers did not
// approve: no key is ever wrapped for that HSM. Only the node the approvers
// approved joins, and its keys' transfer is on the audit record with its
// transport key.
func TestInsiderCannotTakeAKey(t *testing.T) {
	if testing.Short() {
		t.Skip("several nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newStaff(t, ctx, nil)
	mallory, b, c, d := s.admins[0], s.admins[1], s.admins[2], s.admins[3]

	// Mallory's own HSM, prepared as a voter: the node she would like to join.
	rogue := s.newJoiner(t, ctx, "rogue", "voter")
	token, _, err := mallory.c.GrantJoin(ctx, "voter", rogue.keys, time.Hour)
	q := s.proposed(t, err) // not a token that works: a request
	if q.Approvals != 2 || q.Action != "cluster.membership" {
		t.Fatalf("voter join proposed as %+v", q)
	}
	if _, err := rogue.start(t, ctx, token); !errors.Is(err, cluster.ErrTokenInvalid) {
		t.Fatalf("rogue with an unapproved grant: %v, want ErrTokenInvalid", err)
	}
	// Her own approval, twice, and under a new certificate of her own.
	wantProblem(t, "self-approval", s.decide(ctx, q, mallory, operator.Approve), "self-approval")
	renewed := mallory
	rop, err := s.n.app.operators().Renew(ctx, mustOperator(t, s, mallory.op.ID), csrDER2(t, mallory), 0)
	if err != nil {
		t.Fatal(err)
	}
	renewed.cert = tlsCert(t, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rop.Certificate})), mallory.key)
	renewed.c = admin.NewClientTLS(s.url, s.roots, *renewed.cert)
	wantProblem(t, "self-approval, renewed", s.decide(ctx, q, renewed, operator.Approve), "self-approval")
	wantProblem(t, "the replaced certificate", s.decide(ctx, q, mallory, operator.Approve), "unauthenticated")
	mallory, s.admins[0] = renewed, renewed
	// An officer or the auditor cannot approve an admins' rule.
	wantProblem(t, "officer approves", s.decide(ctx, q, s.officers[0], operator.Approve), "approver-role")
	wantProblem(t, "auditor approves", s.decide(ctx, q, s.auditor, operator.Approve), "forbidden")
	// One approval, by an admin then removed: it no longer counts.
	s.approve(t, ctx, q, b)
	rq := s.proposed(t, c.c.RemoveOperator(ctx, b.op.ID))
	s.approve(t, ctx, rq, d, renewed)
	s.waitState(t, ctx, rq.ID, "executed")
	wantProblem(t, "removed approver approves again", s.decide(ctx, q, b, operator.Approve), "unauthenticated")
	// A second approval now would be the M-th, were the removed approver's
	// still counted: it is not, and the grant stays pending.
	s.approve(t, ctx, q, c)
	if a, _ := c.c.Approval(ctx, q.ID); a.State != "pending" {
		t.Fatalf("grant approved by one active admin and one removed: %s", a.State)
	}
	if _, err := rogue.start(t, ctx, token); !errors.Is(err, cluster.ErrTokenInvalid) {
		t.Fatalf("rogue after one (removed) approval: %v", err)
	}
	// She rejects her own request (a proposer may withdraw it).
	if err := s.decide(ctx, q, mallory, operator.Reject); err != nil {
		t.Fatal(err)
	}

	// The approvers approve a grant to the node the operators agreed on;
	// Mallory holds its token (she proposed it) and tries it from her HSM.
	good := s.newJoiner(t, ctx, "good", "voter")
	token, _, err = mallory.c.GrantJoin(ctx, "voter", good.keys, time.Hour)
	gq := s.proposed(t, err)
	ga, err := c.c.Approval(ctx, gq.ID)
	if err != nil {
		t.Fatal(err)
	}
	var grant struct { // the request as the approvers read it
		Node         string `json:"node"`
		NodeKey      string `json:"node_key"`
		TransportKey string `json:"transport_key"`
	}
	if err := json.Unmarshal([]byte(ga.Body), &grant); err != nil || grant.TransportKey != good.keys.TransportKey.String() ||
		grant.NodeKey != good.keys.NodeKey.String() || grant.Node != "good" || strings.Contains(ga.Body, tokenSecret(t, token)) {
		t.Fatalf("what the approvers see: %s (%v)", ga.Body, err)
	}
	s.approve(t, ctx, gq, c, d)
	s.waitState(t, ctx, gq.ID, "executed")
	impostor := s.newJoiner(t, ctx, "good", "voter") // her HSM, the approved node's ID
	if _, err := impostor.start(t, ctx, token); !errors.Is(err, cluster.ErrJoinBinding) {
		t.Fatalf("the approved token on another HSM: %v, want ErrJoinBinding", err)
	}
	if _, err := rogue.start(t, ctx, token); !errors.Is(err, cluster.ErrJoinBinding) {
		t.Fatalf("the approved token on the rogue node: %v, want ErrJoinBinding", err)
	}
	// A nonvoter's grant used by a node configured as a voter.
	edge := s.newJoiner(t, ctx, "edge", "nonvoter")
	etoken, _, err := mallory.c.GrantJoin(ctx, "nonvoter", edge.keys, time.Hour)
	eq := s.proposed(t, err) // an edge can vouch for any serial: approved too
	s.approve(t, ctx, eq, c, d)
	s.waitState(t, ctx, eq.ID, "executed")
	edgeAsVoter := *edge
	cfg := *edge.cfg
	cfg.Cluster.Role = "voter"
	edgeAsVoter.cfg = &cfg
	if _, err := edgeAsVoter.start(t, ctx, etoken); !errors.Is(err, cluster.ErrJoinRole) {
		t.Fatalf("a nonvoter grant with a voter configuration: %v, want ErrJoinRole", err)
	}
	// The edge, joined as approved, is Mallory's: its node submits a voter
	// grant to her rogue HSM itself, past the admin API's rules. The leader
	// refuses a membership command from a nonvoter, and the token admits nobody.
	en, err := edge.start(t, ctx, etoken)
	if err != nil {
		t.Fatalf("the approved edge: %v", err)
	}
	rtoken, rid, rhash, err := cluster.NewJoinToken(en.Cluster().CAFingerprint())
	if err != nil {
		t.Fatal(err)
	}
	err = en.Cluster().GrantJoin(ctx, cluster.JoinGrant{TokenID: rid, SecretHash: rhash, Role: cluster.Voter, Keys: rogue.keys, TTL: time.Hour})
	if code := cluster.RefusalCode(err); code != "cluster.nonvoter" {
		t.Fatalf("a voter grant submitted by the edge: %v (code %q), want cluster.nonvoter", err, code)
	}
	if _, err := rogue.start(t, ctx, rtoken); !errors.Is(err, cluster.ErrTokenInvalid) {
		t.Fatalf("rogue with the edge's own grant: %v, want ErrTokenInvalid", err)
	}
	// Through the edge's admin API, what only a voter's may do is a problem
	// of its own type. (An edge serves its node certificate, which names no
	// host: the chain is checked, not the name.)
	edgeTLS := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{*mallory.cert}, InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			leaf, err := x509.ParseCertificate(raw[0])
			if err != nil {
				return err
			}
			_, err = leaf.Verify(x509.VerifyOptions{Roots: s.roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		}}
	resp, err := (&http.Client{Transport: &http.Transport{TLSClientConfig: edgeTLS}, Timeout: 30 * time.Second}).
		Post("https://"+en.Addrs().AdminTLS+"/v1/cluster/transfer-leadership", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var p admin.Problem
	_ = json.NewDecoder(resp.Body).Decode(&p)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || p.Name() != "voter-only" {
		t.Fatalf("leadership moved through the edge: %d %+v, want 403 voter-only", resp.StatusCode, p)
	}
	for _, j := range []*joiner{rogue, impostor, edge} {
		if held := heldKeys(t, ctx, j.tok); len(held) != 0 {
			t.Fatalf("an unapproved HSM holds %v", held)
		}
	}
	// The approved node joins with the token, and holds the keys.
	if _, err := good.start(t, ctx, token); err != nil {
		t.Fatalf("the approved node: %v", err)
	}
	if held := heldKeys(t, ctx, good.tok); len(held) < 3 {
		t.Fatalf("the approved voter holds %v", held)
	}

	// Approving another transport key for a voter, and changing the rules,
	// are requests too; proposing and approving them is the same walk.
	err = mallory.c.ApproveTransportKey(ctx, "good", rogue.keys.TransportKey)
	s.proposed(t, err)
	_, err = mallory.c.SetRules(ctx, map[string]admin.RuleSpec{})
	tq := s.proposed(t, err)
	wantProblem(t, "self-approval of a rules change", s.decide(ctx, tq, renewed, operator.Approve), "self-approval")
	if r, err := c.c.Rules(ctx); err != nil || len(r.Rules) == 0 {
		t.Fatalf("rules after the proposal: %+v %v", r, err)
	}

	// The audit record: each key wrapped for the good voter, with its
	// transport key, and for nobody else.
	transfers := auditKeyTransfers(t, ctx, s)
	if len(transfers) < 3 {
		t.Fatalf("key transfers on record: %+v", transfers)
	}
	for _, k := range transfers {
		if k.Node != "good" || k.TransportKey != good.keys.TransportKey.String() {
			t.Fatalf("a key went elsewhere: %+v", k)
		}
	}
}

// TestCountedAcrossRequests: an officer's revocations count over the rule's
// window (10 then 5 needs approval for the second request, 10 then 1 too),
// another officer counts alone, and the single-certificate route counts toward
// the same total.
func TestCountedAcrossRequests(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newStaff(t, ctx, nil)
	serials := func(from, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%032x", from+i+1))
		}
		return out
	}
	o1, o2 := s.officers[0], s.officers[1]
	direct := func(by opClient, ss []string) {
		t.Helper()
		_, err := by.c.BulkRevoke(ctx, admin.BulkRevokeRequest{Serials: ss, Reason: "keyCompromise"}, nil)
		var p *admin.ProposedError
		if errors.As(err, &p) {
			t.Fatalf("%d serials by %s proposed, want direct", len(ss), by.name)
		}
	}
	direct(o1, serials(0, 10))
	_, err := o1.c.BulkRevoke(ctx, admin.BulkRevokeRequest{Serials: serials(10, 5), Reason: "keyCompromise"}, nil)
	q := s.proposed(t, err)
	if a, _ := o2.c.Approval(ctx, q.ID); !strings.Contains(a.Body, serials(10, 5)[4]) {
		t.Fatalf("the approvers see %s", a.Body)
	}
	_, err = o1.c.Revoke(ctx, serials(20, 1)[0], "keyCompromise")
	s.proposed(t, err)
	direct(o2, serials(30, 10))
}

// TestAdminBodyDecodedOnce sends each rule's request with trailing bytes,
// duplicate members, case variants and escaped duplicates: each is refused as
// request-invalid naming the member, and nothing is proposed, counted or done.
// A well-formed request is proposed with the canonical body the approvers see,
// and that is what is counted.
func TestAdminBodyDecodedOnce(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newStaff(t, ctx, nil)
	fp := "sha256:" + strings.Repeat("ab", 32)
	serials := func(n int) string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf(`"%032x"`, i+1))
		}
		return strings.Join(out, ",")
	}
	grant := `"role":"voter","node":"n9","node_key":"` + fp + `","transport_key":"` + fp + `","ttl":"1h","token_id":"0011223344556677","secret_sha256":"` + strings.Repeat("cd", 32) + `"`
	type attack struct {
		name, body, field string
	}
	for _, rt := range []struct {
		path    string
		method  string
		by      opClient
		good    string
		attacks []attack
	}{
		{"/v1/revocations", "POST", s.officers[0], `{"serials":[` + serials(12) + `],"reason":"keyCompromise"}`, []attack{
			{"trailing serials", `{"serials":["01"],"reason":"keyCompromise"}{"serials":[` + serials(12) + `]}`, ""},
			{"trailing bytes", `{"serials":[` + serials(12) + `],"reason":"keyCompromise"}xx`, ""},
			{"duplicate serials", `{"serials":["01"],"serials":[` + serials(12) + `],"reason":"keyCompromise"}`, "serials"},
			{"escaped duplicate", `{"serials":["01"],"\u0073erials":[` + serials(12) + `],"reason":"keyCompromise"}`, "serials"},
			{"case variant", `{"serials":["01"],"Serials":[` + serials(12) + `],"reason":"keyCompromise"}`, "Serials"},
			{"wrong type", `{"serials":"01","reason":"keyCompromise"}`, "serials"},
		}},
		{"/v1/certs/0badc0de/revoke", "POST", s.officers[0], "", []attack{
			{"trailing bytes", `{"reason":"keyCompromise"} {"reason":"unspecified"}`, ""},
			{"duplicate reason", `{"reason":"keyCompromise","reason":"unspecified"}`, "reason"},
		}},
		{"/v1/cluster/join-tokens", "POST", s.admins[0], "{" + grant + "}", []attack{
			{"trailing grant", "{" + grant + "}" + `{"role":"nonvoter"}`, ""},
			{"duplicate role", "{" + grant + `,"role":"nonvoter"}`, "role"},
			{"case variant", "{" + grant + `,"Role":"nonvoter"}`, "Role"},
			{"escaped duplicate", "{" + grant + `,"r\u006fle":"nonvoter"}`, "role"},
			{"unknown member", "{" + grant + `,"keys":["ca"]}`, "keys"},
		}},
		{"/v1/rules", "PUT", s.admins[0], "", []attack{
			{"duplicate action", `{"rules":{"cert.revoke":{"m":2,"role":"officer","ttl":"1h"},"cert.revoke":{"m":1,"role":"officer","ttl":"1h"}}}`, "rules.cert.revoke"},
			{"case variant", `{"rules":{},"Rules":{}}`, "Rules"},
			{"trailing", `{"rules":{}} {}`, ""},
		}},
		{"/v1/ca/init", "POST", s.admins[0], "", []attack{
			{"duplicate key", `{"key":"ec-p256","key":"rsa-3072","subject":{"common_name":"x"}}`, "key"},
			{"nested case", `{"subject":{"common_name":"x","Common_Name":"y"}}`, "subject.Common_Name"},
		}},
		{"/v1/cluster/members/n1/transport-key", "POST", s.admins[0], "", []attack{
			{"duplicate", `{"transport_key":"` + fp + `","transport_key":"` + fp + `"}`, "transport_key"},
		}},
		{"/v1/policies/apply", "POST", s.admins[0], "", []attack{
			{"trailing", `{"file":"a.yaml","data":"x"} {"file":"b.yaml"}`, ""},
		}},
	} {
		for _, a := range rt.attacks {
			t.Run(rt.path+"/"+a.name, func(t *testing.T) {
				status, prob, _ := rawCall(t, s.url, s.roots, rt.by.cert, rt.method, rt.path, a.body)
				if status != http.StatusBadRequest || prob.Name() != "request-invalid" {
					t.Fatalf("%d %+v, want 400 request-invalid", status, prob)
				}
				if want := "body: " + a.field; a.field != "" && !strings.HasPrefix(prob.Detail, want+":") {
					t.Fatalf("detail %q does not name %s", prob.Detail, a.field)
				}
			})
		}
		if rt.good == "" {
			continue
		}
		status, _, b := rawCall(t, s.url, s.roots, rt.by.cert, rt.method, rt.path, rt.good)
		if status != http.StatusAccepted {
			t.Fatalf("%s: good body: %d %s", rt.path, status, b)
		}
		var q admin.ApprovalRequest
		if err := json.Unmarshal(b, &q); err != nil {
			t.Fatal(err)
		}
		a, err := s.admins[1].c.Approval(ctx, q.ID)
		if err != nil {
			t.Fatal(err)
		}
		var raw, canon any
		_ = json.Unmarshal([]byte(rt.good), &raw)
		if err := json.Unmarshal([]byte(a.Body), &canon); err != nil || fmt.Sprint(raw) != fmt.Sprint(canon) {
			t.Fatalf("%s: approvers see %s for %s (%v)", rt.path, a.Body, rt.good, err)
		}
	}
	// None of the refused bodies was proposed or counted: the only requests are
	// the good ones, and an officer's first 10 revocations are still direct.
	qs, err := s.admins[0].c.Approvals(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(qs) != 2 {
		t.Fatalf("%d requests pending, want the 2 good ones: %+v", len(qs), qs)
	}
	_, err = s.officers[0].c.BulkRevoke(ctx, admin.BulkRevokeRequest{Serials: strings.Split(strings.ReplaceAll(serials(10), `"`, ""), ","), Reason: "keyCompromise"}, nil)
	var p *admin.ProposedError
	if errors.As(err, &p) {
		t.Fatal("refused bodies were counted")
	}
}

// TestAuditExposure: audit.public decides, the same before and after the
// cluster has operators: closed by default (an auditor certificate is needed),
// open when set.
func TestAuditExposure(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, public := range []bool{false, true} {
		t.Run(fmt.Sprintf("public=%v", public), func(t *testing.T) {
			cfg, _ := testNodeConfig(t, "audit-exposure")
			cfg.Audit.Public = public
			n := startTestNode(t, ctx, cfg)
			roots := x509.NewCertPool()
			caPEM, _ := os.ReadFile(filepath.Join(cfg.DataDir, clusterCAFile))
			roots.AppendCertsFromPEM(caPEM)
			api := "https://" + n.Addrs().API
			want := http.StatusUnauthorized
			if public {
				want = http.StatusOK
			}
			// The audit key is recorded by the first leader shortly after the
			// node is ready, and the first checkpoint signed a moment later:
			// until then the log has no checkpoint to give.
			status, prob, _ := rawCall(t, api, roots, nil, "GET", "/v1/audit/checkpoint", "")
			starting := func() bool {
				return status == http.StatusServiceUnavailable && prob.Type == "urn:inkan:problem:audit:no-key" ||
					status == http.StatusNotFound && prob.Type == "urn:inkan:problem:audit:no-checkpoint"
			}
			for deadline := time.Now().Add(30 * time.Second); starting() && time.Now().Before(deadline); {
				time.Sleep(100 * time.Millisecond)
				status, prob, _ = rawCall(t, api, roots, nil, "GET", "/v1/audit/checkpoint", "")
			}
			if status != want {
				t.Fatalf("before init, no certificate: %d %+v, want %d", status, prob, want)
			}
			k, csr := newCSR(t, "a0")
			a0, err := admin.NewClient(cfg.AdminSocket()).InitOperators(ctx, admin.OperatorInit{Name: "a0", CSR: csr})
			if err != nil {
				t.Fatal(err)
			}
			if status, prob, _ := rawCall(t, api, roots, nil, "GET", "/v1/audit/checkpoint", ""); status != want {
				t.Fatalf("after init, no certificate: %d %+v, want %d", status, prob, want)
			}
			adminCert := tlsCert(t, a0.Certificate, k)
			if status, _, _ := rawCall(t, api, roots, adminCert, "GET", "/v1/audit/checkpoint", ""); !public && status != http.StatusForbidden {
				t.Fatalf("an admin reads the audit log: %d", status)
			}
			uk, ucsr := newCSR(t, "u")
			u, err := admin.NewClientTLS("https://"+n.Addrs().AdminTLS, roots, *adminCert).AddOperator(ctx, admin.OperatorAdd{Name: "u", Role: "auditor", CSR: ucsr})
			if err != nil {
				t.Fatal(err)
			}
			if status, prob, _ := rawCall(t, api, roots, tlsCert(t, u.Certificate, uk), "GET", "/v1/audit/checkpoint", ""); status != http.StatusOK {
				t.Fatalf("an auditor: %d %+v", status, prob)
			}
		})
	}
}

// mustOperator is the operator of that ID as the node knows it.
// viewValue reads one value from the node's state in a read transaction.
func viewValue[T any](c *cluster.Cluster, read func(tx *bbolt.Tx) (T, error)) (T, error) {
	var v T
	err := c.View(func(tx *bbolt.Tx) error {
		var err error
		v, err = read(tx)
		return err
	})
	return v, err
}

func mustOperator(t *testing.T, s *staff, id string) operator.Operator {
	t.Helper()
	op, err := viewValue(s.n.c.Load(), func(tx *bbolt.Tx) (operator.Operator, error) { return operator.Lookup(tx, id) })
	if err != nil {
		t.Fatal(err)
	}
	return op
}

// csrDER2 is a CSR (DER) for the operator's own key: a renewal.
func csrDER2(t *testing.T, o opClient) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: o.name}}, o.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// tokenSecret is the secret part of a join token (inkan-join.<id>.<secret>.<ca>).
func tokenSecret(t *testing.T, token string) string {
	t.Helper()
	parts := strings.Split(token, ".")
	if len(parts) != 4 {
		t.Fatalf("token %q", token)
	}
	return parts[2]
}

// auditKeyTransfers exports the audit log as the auditor, verifies it offline
// as `inkan audit verify` does, and returns the key transfers it reports.
func auditKeyTransfers(t *testing.T, ctx context.Context, s *staff) []audit.KeyTransfer {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{*s.auditor.cert}}}}
	// Export once a checkpoint covers every leaf written so far.
	if _, err := s.n.app.audit.NewSource(s.n.c.Load()); err != nil { // the audit key is recorded
		t.Fatal(err)
	}
	size, err := viewValue(s.n.c.Load(), s.n.app.audit.Size)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		dir := filepath.Join(t.TempDir(), "audit")
		cl, err := audit.NewClient(ctx, "https://"+s.n.Addrs().API, hc, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := audit.Export(ctx, dir, cl, 0); err != nil {
			t.Fatal(err)
		}
		r, err := audit.Verify(os.DirFS(dir), nil)
		if err != nil {
			t.Fatal(err)
		}
		if !r.OK() {
			t.Fatalf("audit log: %v", r.Problems)
		}
		if r.Latest != nil && r.Latest.Size >= size {
			return r.KeyTransfers
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint of size %d (latest %+v)", size, r.Latest)
		}
	}
}

// rawCall sends body as it is, over mutual TLS with cert (none if nil).
func rawCall(t *testing.T, url string, roots *x509.CertPool, cert *tls.Certificate, method, path, body string) (int, admin.Problem, []byte) {
	t.Helper()
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var p admin.Problem
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/problem+json") {
		_ = json.Unmarshal(b, &p)
	}
	return resp.StatusCode, p, b
}

// TestHoldsCounted: an officer's holds, one certificate at a time, count under
// the rule of cert.hold as revocations do: the eleventh within the hour is
// proposed, not done, and another officer counts alone.
func TestHoldsCounted(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	s := newStaff(t, ctx, nil)
	o1, o2 := s.officers[0], s.officers[1]
	serial := func(i int) string { return fmt.Sprintf("%032x", i+1) }
	for i := range 10 {
		_, err := o1.c.Hold(ctx, serial(i))
		var p *admin.ProposedError
		if errors.As(err, &p) {
			t.Fatalf("hold %d by o1 proposed, want direct", i+1)
		}
	}
	_, err := o1.c.Hold(ctx, serial(10))
	q := s.proposed(t, err)
	// Approved, the hold is replayed on the leader (no such certificate here,
	// so it fails there, as a hold of it would have directly).
	s.approve(t, ctx, q, o2, s.officers[2])
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		a, err := o2.c.Approval(ctx, q.ID)
		if err != nil {
			t.Fatal(err)
		}
		if a.State == "failed" {
			t.Logf("approved hold: %s", a.Error)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("approved hold is %s", a.State)
		}
	}
	_, err = o2.c.Hold(ctx, serial(20))
	var p *admin.ProposedError
	if errors.As(err, &p) {
		t.Fatalf("o2's first hold proposed, want direct")
	}
}
