package ocsp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	xocsp "golang.org/x/crypto/ocsp"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/policies"
)

// ocspNode is one voter of TestStatusChangeTravels: its authority, its OCSP
// follower served on a loopback socket, and what stops the follower.
type ocspNode struct {
	m    *clustertest.Member
	a    *ca.Authority
	f    *Follower
	url  string
	stop context.CancelFunc
	done chan struct{}
}

// TestStatusChangeTravels: on a real three-voter cluster whose nodes each run
// the OCSP follower, a follower whose own pre-signer is stopped still serves a
// hold, a release and a revocation the moment it applies them, over HTTP, in
// responses signed by another node's responder key: the leader signed them
// before the change was committed, and the follower's apply hook installed
// them from the entry. The node answering the request (that follower) returns
// only once it serves them. A change the state refuses installs nothing on
// any node.
func TestStatusChangeTravels(t *testing.T) {
	ctx := testenv.Context(t, 3*time.Minute)
	pubs := []*Publisher{NewPublisher(testenv.Logger()), NewPublisher(testenv.Logger()), NewPublisher(testenv.Logger())}
	var mu sync.Mutex
	nodes := map[int]*ocspNode{}
	g := clustertest.Voters(t, 3, clustertest.Options{
		Config: cluster.Config{Handlers: ca.Handlers()},
		Tweak:  func(i int, cfg *cluster.Config) { cfg.Hooks = append(cfg.Hooks, pubs[i].Hook) },
		Open: func(m *clustertest.Member) {
			a, err := ca.New(ca.Config{Cluster: m.Cluster, Keys: m.Keys, CRLShards: 4, Publisher: pubs[m.Index],
				URLs: ca.URLs{OCSP: "http://ocsp.inkan.test/", CRL: "http://ocsp.inkan.test/crl/", CAIssuers: "http://ocsp.inkan.test/ca/"}, Logger: testenv.Logger()})
			if err != nil {
				t.Fatal(err)
			}
			key, err := m.Keys.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: "ocsp-responder"})
			if err != nil {
				t.Fatal(err)
			}
			f, err := Follow(ctx, FollowConfig{Cluster: m.Cluster, Authority: a, Key: key, ResponderLifetime: 24 * time.Hour,
				Archive: 10 * 365 * 24 * time.Hour, Publisher: pubs[m.Index], Logger: testenv.Logger()})
			if err != nil {
				t.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := NewServer(f.Handler())
			go func() { _ = srv.Serve(ln) }()
			runCtx, stop := context.WithCancel(context.Background())
			n := &ocspNode{m: m, a: a, f: f, url: "http://" + ln.Addr().String() + "/", stop: stop, done: make(chan struct{})}
			go func() { defer close(n.done); f.Run(runCtx) }()
			t.Cleanup(func() { _ = srv.Shutdown() })
			mu.Lock()
			nodes[m.Index] = n
			mu.Unlock()
		},
		Close: func(m *clustertest.Member) {
			mu.Lock()
			n := nodes[m.Index]
			mu.Unlock()
			n.stop()
			<-n.done
			n.a.Close()
		},
	})

	// A self-signed CA, and every node's responder certificate from it.
	var in *ca.Initialized
	for {
		var err error
		in, err = nodes[g.Leader().Index].a.Init(ctx, ca.InitOptions{Subject: pkix.Name{Country: []string{"JP"}, CommonName: "inkan test CA"}, SelfSign: true})
		if err == nil {
			break
		}
		if !errors.Is(err, cluster.ErrNotLeader) || ctx.Err() != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	responders := map[int]*x509.Certificate{}
	for i, n := range nodes {
		for !slices.Contains(n.f.Health().Signs, in.ID) {
			if ctx.Err() != nil {
				t.Fatalf("node %d never got a responder certificate", i)
			}
			time.Sleep(20 * time.Millisecond)
		}
		responders[i] = n.f.pre.signing(in.ID).issuer.Responder
	}

	leader := nodes[g.Leader().Index]
	follower := nodes[g.Follower().Index]
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	iss, err := leader.a.Issue(ctx, ca.Request{
		Decision: policies.Decision{Profile: "authentication", PolicyVersion: 1, NotAfter: time.Now().Add(24 * time.Hour),
			Template: &x509.Certificate{Subject: pkix.Name{Country: []string{"JP"}, CommonName: "status-change"},
				KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}},
		PublicKey: key.Public(),
	})
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(iss.DER)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := n.m.Cluster.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// The follower's pre-signer stops: whatever it serves from now on, it
	// did not sign.
	follower.stop()
	<-follower.done

	const operator = "sha256:00000000000000000000000000000000000000000000000000000000000000aa"
	for _, c := range []struct {
		name   string
		do     func(a *ca.Authority) error
		status int
		reason int
	}{
		{"hold", func(a *ca.Authority) error { return a.Hold(ctx, iss.Serial, operator) }, xocsp.Revoked, xocsp.CertificateHold},
		{"release", func(a *ca.Authority) error { return a.Release(ctx, iss.Serial, operator) }, xocsp.Good, 0},
		{"revoke", func(a *ca.Authority) error { return a.Revoke(ctx, iss.Serial, xocsp.KeyCompromise, "") }, xocsp.Revoked, xocsp.KeyCompromise},
	} {
		// Through the follower: it returns once it serves the new status.
		if err := c.do(follower.a); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var rec ca.Record
		if err := follower.m.Cluster.View(func(tx *bbolt.Tx) error { var err error; rec, err = ca.Read(tx).Lookup(iss.Serial); return err }); err != nil {
			t.Fatal(err)
		}
		for _, h := range certIDHashes {
			got := askOCSP(t, follower.url, cert, in.Cert, h)
			if got.Status != c.status || c.status == xocsp.Revoked && (got.RevocationReason != c.reason || !got.RevokedAt.Equal(rec.RevokedAt.Truncate(time.Second))) {
				t.Fatalf("%s, %v: the follower answers %d (reason %d, at %v) right after, want %d (%d, at %v)",
					c.name, h, got.Status, got.RevocationReason, got.RevokedAt, c.status, c.reason, rec.RevokedAt)
			}
			if got.Certificate.Equal(responders[follower.m.Index]) {
				t.Fatalf("%s, %v: signed by the follower's own responder key, whose pre-signer is stopped", c.name, h)
			}
			if !slices.ContainsFunc([]*x509.Certificate{responders[0], responders[1], responders[2]}, got.Certificate.Equal) {
				t.Fatalf("%s, %v: signed under a responder certificate of no node", c.name, h)
			}
		}
	}

	// Refused changes install nothing, on any node.
	cached := func() map[int][]byte {
		out := map[int][]byte{}
		for i, n := range nodes {
			if err := n.m.Cluster.Barrier(ctx); err != nil {
				t.Fatal(err)
			}
			if r := n.f.cache.Get(in.ID, crypto.SHA256, iss.Serial.Bytes()); r != nil {
				out[i] = r.DER
			}
		}
		return out
	}
	before := cached()
	for _, c := range []struct {
		name string
		do   func(a *ca.Authority) error
		want error
	}{
		{"hold a revoked certificate", func(a *ca.Authority) error { return a.Hold(ctx, iss.Serial, operator) }, ca.ErrStatus},
		{"release a revoked certificate", func(a *ca.Authority) error { return a.Release(ctx, iss.Serial, operator) }, ca.ErrStatus},
		{"revoke it again", func(a *ca.Authority) error { return a.Revoke(ctx, iss.Serial, xocsp.Superseded, "") }, ca.ErrStatus},
		{"revoke an unknown serial", func(a *ca.Authority) error {
			return a.Revoke(ctx, new(big.Int).Lsh(big.NewInt(1), 90), xocsp.Superseded, "")
		}, ca.ErrNotFound},
	} {
		if err := c.do(follower.a); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	after := cached()
	for i := range nodes {
		if !bytes.Equal(before[i], after[i]) {
			t.Errorf("node %d: a refused change replaced the cached response", i)
		}
	}
}

// askOCSP posts an OCSP request for cert to url and parses the answer.
func askOCSP(t *testing.T, url string, cert, issuer *x509.Certificate, h crypto.Hash) *xocsp.Response {
	t.Helper()
	req, err := xocsp.CreateRequest(cert, issuer, &xocsp.RequestOptions{Hash: h})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(url, "application/ocsp-request", bytes.NewReader(req))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	got, err := xocsp.ParseResponseForCert(body, cert, issuer)
	if err != nil {
		t.Fatalf("%v: %v", h, err)
	}
	return got
}

// TestInstallChange: a status change's responses replace a cached response
// that says another status even when it was signed in the same second or
// later (the certificate's first responses, a refresh while the change was
// committed), where an intent's first responses would keep it; a cached one
// that says the change's status and is not older is kept. A bundle for another
// status than the state's installs nothing.
func TestInstallChange(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	leaderKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	nodeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leader, err := newPresigner(ctx, newCache(), &stateSource{issuer: issuer{ID: "ca1", Cert: p.ca, Responder: p.delegatedResponder(t, leaderKey)}, entries: map[string]certStatus{}}, presignerConfig{Key: leaderKey})
	if err != nil {
		t.Fatal(err)
	}
	cache := newCache()
	node, err := newPresigner(ctx, cache, &stateSource{issuer: issuer{ID: "ca1", Cert: p.ca, Responder: p.delegatedResponder(t, nodeKey)}, entries: map[string]certStatus{}}, presignerConfig{Key: nodeKey})
	if err != nil {
		t.Fatal(err)
	}
	serial := p.leaves[0].SerialNumber.Bytes()
	good := certStatus{Serial: serial, Status: statusGood, Reason: -1}
	revoked := certStatus{Serial: serial, Status: statusRevoked, RevokedAt: time.Now().UTC(), Reason: xocsp.KeyCompromise}
	bundle, err := leader.FirstResponses("ca1", revoked)
	if err != nil {
		t.Fatal(err)
	}
	says := func(st certStatus) bool {
		for _, h := range certIDHashes {
			if r := cache.Get("ca1", h, serial); r == nil || !r.says(st) {
				return false
			}
		}
		return true
	}

	// The node's own good, signed now (the same second as the bundle, or
	// the next): Install keeps it, installChange replaces it.
	if err := node.sign(job{issuerID: "ca1", st: good, why: "change"}); err != nil {
		t.Fatal(err)
	}
	if err := node.Install("ca1", serial, revoked, bundle); err != nil || !says(good) {
		t.Fatalf("Install kept the good response it holds: %v, says good %v", err, says(good))
	}
	if err := node.installChange("ca1", serial, revoked, bundle); err != nil || !says(revoked) {
		t.Fatalf("installChange over a same-second good: %v, says revoked %v", err, says(revoked))
	}

	// Its own revoked, signed after: kept.
	if err := node.sign(job{issuerID: "ca1", st: revoked, why: "change"}); err != nil {
		t.Fatal(err)
	}
	own := cache.Get("ca1", crypto.SHA256, serial)
	if err := node.installChange("ca1", serial, revoked, bundle); err != nil || cache.Get("ca1", crypto.SHA256, serial) != own {
		t.Fatalf("installChange replaced a response that says the same and is not older: %v", err)
	}

	// A bundle that does not say the state's status: refused, nothing changes.
	if err := node.installChange("ca1", serial, good, bundle); !errors.Is(err, errBadFirstResponses) || cache.Get("ca1", crypto.SHA256, serial) != own {
		t.Fatalf("a bundle for another status: %v, want ErrBadFirstResponses and nothing installed", err)
	}
}

// statusHook is a source that runs then after each Status read: the moment
// an entry's hook may install responses while the pre-signer signs.
type statusHook struct {
	*stateSource
	then func()
}

func (s statusHook) Status(ctx context.Context, issuerID string, serial []byte) (certStatus, bool, error) {
	st, ok, err := s.stateSource.Status(ctx, issuerID, serial)
	if s.then != nil {
		s.then()
	}
	return st, ok, err
}

// TestSigningYieldsToInstall: the pre-signer read a serial's status (good),
// and while it signs, the node applies the revocation and installs the
// leader's revoked responses: what it signed is dropped, not put over them.
func TestSigningYieldsToInstall(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	leaderKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	nodeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leader, err := newPresigner(ctx, newCache(), &stateSource{issuer: issuer{ID: "ca1", Cert: p.ca, Responder: p.delegatedResponder(t, leaderKey)}, entries: map[string]certStatus{}}, presignerConfig{Key: leaderKey})
	if err != nil {
		t.Fatal(err)
	}
	serial := p.leaves[1].SerialNumber.Bytes()
	good := certStatus{Serial: serial, Status: statusGood, Reason: -1}
	revoked := certStatus{Serial: serial, Status: statusRevoked, RevokedAt: time.Now().UTC(), Reason: xocsp.KeyCompromise}
	bundle, err := leader.FirstResponses("ca1", revoked)
	if err != nil {
		t.Fatal(err)
	}
	src := &stateSource{issuer: issuer{ID: "ca1", Cert: p.ca, Responder: p.delegatedResponder(t, nodeKey)}, entries: map[string]certStatus{}}
	src.set(good)
	hooked := statusHook{stateSource: src}
	cache := newCache()
	node, err := newPresigner(ctx, cache, hooked, presignerConfig{Key: nodeKey})
	if err != nil {
		t.Fatal(err)
	}
	var installErr error
	node.src = statusHook{stateSource: src, then: func() {
		src.set(revoked)
		installErr = node.installChange("ca1", serial, revoked, bundle)
	}}
	if err := node.signLatest(ctx, job{issuerID: "ca1", st: good, why: "refresh"}); err != nil || installErr != nil {
		t.Fatalf("sign: %v, install: %v", err, installErr)
	}
	for _, h := range certIDHashes {
		if r := cache.Get("ca1", h, serial); r == nil || !r.says(revoked) {
			t.Fatalf("%v: the pre-signer's good replaced the installed revocation", h)
		}
	}
}
