package admin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/operator"
	"github.com/inkan-pki/inkan/tsa"
)

// TestRoutes: every route names an action of the role matrix, or none (the
// node's own, on its socket only), and no pattern is served twice.
func TestRoutes(t *testing.T) {
	seen := map[string]bool{}
	for _, rt := range (&API{}).adminRouteTable() {
		if seen[rt.pattern] {
			t.Errorf("%s: served twice", rt.pattern)
		}
		seen[rt.pattern] = true
		if rt.access.action != "" && !slices.Contains(operator.Actions(), rt.access.action) {
			t.Errorf("%s: action %q is not in the role matrix", rt.pattern, rt.access.action)
		}
	}
	if routes := Routes(); len(routes) != len(seen) {
		t.Errorf("Routes lists %d routes, the table has %d", len(routes), len(seen))
	}
	for _, a := range []string{actClusterMembership, actCAKeyGenerate, actCAKeyImport, actCAKeyTransfer, actCACeremony,
		actPolicyApply, actOperatorManage, actOperatorRead, actBackup, actCertRevoke, actCertHold, actCertRelease,
		actCertRead, actAuditRead, actConfigRead, actMetricsRead, actApprovalRead, actApprovalDecide} {
		if !slices.Contains(operator.Actions(), a) {
			t.Errorf("action %q is not in the role matrix", a)
		}
	}
	for _, p := range []string{"GET " + pathStatus, "POST " + pathLeave, "POST " + pathOperatorsInit, "POST " + pathBackup} {
		if !seen[p] {
			t.Errorf("%s: not served", p)
		}
	}
}

// socketAPI is an admin API over a one-node cluster with the operator service,
// as a node wires it, with the other services not started.
type socketAPI struct {
	h        http.Handler
	api      *API
	draining atomic.Bool
}

func newSocketAPI(t *testing.T) *socketAPI {
	t.Helper()
	n := clustertest.Single(t, cluster.Config{Handlers: operator.Handlers()})
	vault := cluster.NewHSMVault(n.Token.HSM)
	ops, err := operator.New(operator.Config{Cluster: n.Cluster, Vault: vault, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ops.Close)
	s := &socketAPI{}
	api := New(Config{
		Cluster: n.Cluster, Vault: vault, NodeCert: []byte("node"),
		Authority:    func() *ca.Authority { return nil },
		Operators:    func() *operator.Service { return ops },
		TimeStamping: func() *tsa.Service { return nil },
		Ready:        func(context.Context) (bool, string) { return true, "" },
		Draining:     s.draining.Load,
		CanLeave:     func() error { return ErrLastVoter },
		Leave:        func(context.Context) error { t.Error("Leave called"); return nil },
		Logger:       testenv.Logger(),
	})
	s.h, s.api = api.Socket(), api
	return s
}

// call sends a request to the socket's handler and returns the status and,
// for a problem, its name.
func (s *socketAPI) call(method, target, body string) (int, string) {
	rec := httptest.NewRecorder()
	s.h.ServeHTTP(rec, httptest.NewRequest(method, target, strings.NewReader(body)))
	var p Problem
	if strings.HasPrefix(rec.Header().Get("Content-Type"), "application/problem+json") {
		_ = json.Unmarshal(rec.Body.Bytes(), &p)
	}
	return rec.Code, p.Name()
}

// initBody is the body of an init of the first admin, name, with a new key.
func initBody(t *testing.T, name string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: name}}, key)
	if err != nil {
		t.Fatal(err)
	}
	body, err := json.Marshal(OperatorInit{Name: name, CSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr}))})
	if err != nil {
		t.Fatal(err)
	}
	return string(body)
}

// TestSocketAccess: the socket's guard, before and after the cluster has
// operators, and while the node drains; each refusal has its problem type.
func TestSocketAccess(t *testing.T) {
	s := newSocketAPI(t)
	before := []struct {
		name                 string
		method, target, body string
		status               int
		problem              string
	}{
		{"status", "GET", pathStatus, "", http.StatusOK, ""},
		{"no such endpoint", "GET", "/v1/nope", "", http.StatusNotFound, "not-found"},
		{"a body where none is taken", "POST", pathTransfer, "{}", http.StatusBadRequest, "request-invalid"},
		{"a query on a POST", "POST", pathTransfer + "?x=1", "", http.StatusBadRequest, "request-invalid"},
		{"a member given twice", "PUT", pathRules, `{"rules":{},"rules":{}}`, http.StatusBadRequest, "request-invalid"},
		{"a member in another case", "PUT", pathRules, `{"Rules":{}}`, http.StatusBadRequest, "request-invalid"},
		{"data after the body", "PUT", pathRules, `{"rules":{}} {}`, http.StatusBadRequest, "request-invalid"},
		{"the last voter leaves", "POST", pathLeave, "", http.StatusConflict, "last-voter"},
		{"no authority yet", "POST", pathCAInit, `{"subject":{"common_name":"x"}}`, http.StatusServiceUnavailable, "not-available"},
		{"a serial that is none", "GET", pathCerts + "0d0g", "", http.StatusBadRequest, "request-invalid"},
	}
	for _, c := range before {
		t.Run(c.name, func(t *testing.T) {
			if status, prob := s.call(c.method, c.target, c.body); status != c.status || prob != c.problem {
				t.Fatalf("%s %s: %d %q, want %d %q", c.method, c.target, status, prob, c.status, c.problem)
			}
		})
	}

	// Once the cluster has an operator, the socket keeps what concerns the node.
	// (An init retried with the same CSR answers the same operator.)
	first := initBody(t, "first")
	for range 2 {
		if status, prob := s.call("POST", pathOperatorsInit, first); status != http.StatusCreated {
			t.Fatalf("init: %d %s", status, prob)
		}
	}
	if status, prob := s.call("POST", pathOperatorsInit, initBody(t, "second")); status != http.StatusConflict || prob != "bootstrapped" {
		t.Fatalf("init again: %d %s, want 409 bootstrapped", status, prob)
	}
	if status, prob := s.call("GET", pathRules, ""); status != http.StatusForbidden || prob != "operator-required" {
		t.Fatalf("rules on the socket after init: %d %s, want 403 operator-required", status, prob)
	}
	if status, _ := s.call("GET", pathStatus, ""); status != http.StatusOK {
		t.Fatalf("status on the socket after init: %d", status)
	}

	// A draining node answers its status only.
	s.draining.Store(true)
	if status, prob := s.call("GET", pathOperators, ""); status != http.StatusServiceUnavailable || prob != "shutting-down" {
		t.Fatalf("draining: %d %s, want 503 shutting-down", status, prob)
	}
	if status, _ := s.call("GET", pathStatus, ""); status != http.StatusOK {
		t.Fatalf("status while draining: %d", status)
	}
}

// TestApprovedRunsOnItsAction: the leader replays an approved request through
// the routes, and it runs only on a route of the action it was approved under:
// a recorded call that reaches another action's route (a path read one way when
// proposed and another when replayed) runs nothing there.
func TestApprovedRunsOnItsAction(t *testing.T) {
	s := newSocketAPI(t)
	if status, prob := s.call("POST", pathOperatorsInit, initBody(t, "first")); status != http.StatusCreated {
		t.Fatalf("init: %d %s", status, prob)
	}
	var proposer string
	if err := s.api.c.View(func(tx *bbolt.Tx) error {
		ops, err := operator.List(tx)
		if err == nil && len(ops) == 1 {
			proposer = ops[0].ID
		}
		return err
	}); err != nil || proposer == "" {
		t.Fatalf("the first admin: %q %v", proposer, err)
	}
	fp := "sha256:" + strings.Repeat("ab", 32)
	call := func(tokenID string) []byte {
		body, err := json.Marshal(joinGrantRequest{Role: "voter", Node: "n9", NodeKey: fp, TransportKey: fp, TTL: "1h",
			TokenID: tokenID, SecretSHA256: strings.Repeat("cd", 32)})
		if err != nil {
			t.Fatal(err)
		}
		c, err := json.Marshal(adminCall{Method: "POST", Path: pathJoinTokens, Body: body})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ctx := testenv.Context(t, 30*time.Second)
	// Approved as a revocation, the call is a join grant: refused, nothing granted.
	if _, err := s.api.RunApproved(ctx, operator.Request{ID: "rq-00000000000000a1", Action: actCertRevoke, ProposerID: proposer,
		Body: call("00000000000000a1")}); err == nil {
		t.Fatal("a join grant ran as an approved revocation")
	}
	// Approved as what it is, it runs (and its token ID was not taken above).
	if _, err := s.api.RunApproved(ctx, operator.Request{ID: "rq-00000000000000a1", Action: actClusterMembership, ProposerID: proposer,
		Body: call("00000000000000a1")}); err != nil {
		t.Fatalf("the join grant approved as cluster.membership: %v", err)
	}
}
