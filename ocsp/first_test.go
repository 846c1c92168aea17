package ocsp

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	xocsp "golang.org/x/crypto/ocsp"
)

// TestFirstResponsesInstall: the leader's responses for a new serial, installed
// on another node, are served there under every CertID hash and verify under
// the leader's responder certificate; Await returns once they are in. A bundle
// for another serial, another issuer's CertIDs, another status or damaged bytes
// is refused with ErrBadFirstResponses and installs nothing.
func TestFirstResponsesInstall(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	leaderKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	nodeKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaderSrc := &stateSource{issuer: issuer{ID: "ca1", Cert: p.ca, Responder: p.delegatedResponder(t, leaderKey)}, entries: map[string]certStatus{}}
	nodeSrc := &stateSource{issuer: issuer{ID: "ca1", Cert: p.ca, Responder: p.delegatedResponder(t, nodeKey)}, entries: map[string]certStatus{}}
	leader, err := newPresigner(ctx, newCache(), leaderSrc, presignerConfig{Key: leaderKey})
	if err != nil {
		t.Fatal(err)
	}
	cache := newCache()
	// One worker: the node signs its jobs in the order they are queued (below).
	node, err := newPresigner(ctx, cache, nodeSrc, presignerConfig{Key: nodeKey, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	leaf := p.leaves[0]
	serial := leaf.SerialNumber.Bytes()
	good := certStatus{Serial: serial, Status: statusGood, Reason: -1}
	bundle, err := leader.FirstResponses("ca1", good)
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name   string
		serial []byte
		st     certStatus
		bundle []byte
	}{
		{"another serial", p.leaves[1].SerialNumber.Bytes(), certStatus{Serial: p.leaves[1].SerialNumber.Bytes(), Status: statusGood, Reason: -1}, bundle},
		{"another status", serial, certStatus{Serial: serial, Status: statusRevoked, RevokedAt: time.Now(), Reason: 1}, bundle},
		{"truncated", serial, good, bundle[:len(bundle)-3]},
		{"trailing bytes", serial, good, append(append([]byte(nil), bundle...), 0)},
		{"another version", serial, good, append([]byte{9}, bundle[1:]...)},
		{"empty", serial, good, nil},
	} {
		if err := node.Install("ca1", c.serial, c.st, c.bundle); !errors.Is(err, errBadFirstResponses) {
			t.Errorf("%s: %v, want ErrBadFirstResponses", c.name, err)
		}
	}
	if cache.Len() != 0 {
		t.Fatalf("refused bundles left %d responses in the cache", cache.Len())
	}
	if err := node.Install("ca2", serial, good, bundle); !errors.Is(err, errUnknownIssuer) {
		t.Errorf("unknown issuer: %v, want ErrUnknownIssuer", err)
	}

	waited := make(chan error, 1)
	go func() {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		waited <- cache.Await(wctx, "ca1", serial, good)
	}()
	time.Sleep(20 * time.Millisecond)
	if err := node.Install("ca1", serial, good, bundle); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Fatalf("Await: %v", err)
	}
	for _, h := range certIDHashes {
		r := cache.Get("ca1", h, serial)
		if r == nil {
			t.Fatalf("%v: not installed", h)
		}
		got, err := xocsp.ParseResponseForCert(r.DER, leaf, p.ca)
		if err != nil || got.Status != xocsp.Good || !got.Certificate.Equal(leaderSrc.issuer.Responder) {
			t.Fatalf("%v: %v, %+v", h, err, got)
		}
	}
	// Installed again (a retried entry), the newer one already held stays.
	before := cache.Get("ca1", crypto.SHA256, serial)
	if err := node.Install("ca1", serial, good, bundle); err != nil || cache.Get("ca1", crypto.SHA256, serial) != before {
		t.Fatalf("second install: %v, replaced %v", err, cache.Get("ca1", crypto.SHA256, serial) != before)
	}

	// Await gives up with ErrNotAnswered when the status does not come.
	wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	revoked := certStatus{Serial: serial, Status: statusRevoked, RevokedAt: time.Now().Truncate(time.Second), Reason: 1}
	if err := cache.Await(wctx, "ca1", serial, revoked); !errors.Is(err, errNotAnswered) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Await of a status not served: %v", err)
	}
	if err := cache.Await(ctx, "ca2", serial, good); !errors.Is(err, errUnknownIssuer) {
		t.Fatalf("Await under an unknown issuer: %v", err)
	}
	if n := cache.waiting.Load(); n != 0 {
		t.Fatalf("%d waiters left behind", n)
	}

	// The node's pre-signer, told of the serial, keeps the leader's responses
	// (they are current) rather than sign its own. Proof that it signed none:
	// a second serial's change, taken by Run only once the first is handled
	// (changes is unbuffered) and signed by the one worker after any job the
	// first queued, is in the cache while the first serial's response is still
	// the leader's.
	nodeSrc.set(good)
	changes := make(chan change)
	rctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- node.Run(rctx, changes) }()
	changes <- change{IssuerID: "ca1", Serials: [][]byte{serial}}
	other := p.leaves[1].SerialNumber.Bytes()
	nodeSrc.set(certStatus{Serial: other, Status: statusGood, Reason: -1})
	changes <- change{IssuerID: "ca1", Serials: [][]byte{other}}
	waitFor(t, "the second serial to be signed", 10*time.Second, func() bool { return cache.Get("ca1", crypto.SHA256, other) != nil })
	stop()
	<-done
	if r := cache.Get("ca1", crypto.SHA256, serial); r != before {
		t.Fatal("the node signed its own response over the leader's current one")
	}

	// A node that applies the intent again after it learnt of the revocation
	// that followed (a restart replaying its log, a follower catching up)
	// keeps the newer revoked response.
	revokedNow := certStatus{Serial: serial, Status: statusRevoked, RevokedAt: time.Now().UTC().Truncate(time.Second), Reason: 1}
	nodeSrc.set(revokedNow)
	if err := node.sign(job{issuerID: "ca1", st: revokedNow, why: "change"}); err != nil {
		t.Fatal(err)
	}
	if err := node.Install("ca1", serial, good, bundle); err != nil {
		t.Fatal(err)
	}
	for _, h := range certIDHashes {
		if r := cache.Get("ca1", h, serial); r == nil || r.Status != statusRevoked {
			t.Fatalf("%v: the replayed intent's good replaced the newer revoked response (got %v)", h, r != nil && r.Status == statusGood)
		}
	}
}

// TestRevokedAtToTheSecond: the state keeps a revocation's time in
// nanoseconds, a response states it to the second. A response for the
// revocation says it all the same: Await returns (the node acknowledges the
// revocation) and the pre-signer holds it current rather than sign it again
// and again; a first-responses bundle for it installs.
func TestRevokedAtToTheSecond(t *testing.T) {
	p := getPKI(t)
	ctx := context.Background()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	src := &stateSource{issuer: issuer{ID: "ca1", Cert: p.ca, Responder: p.delegatedResponder(t, key)}, entries: map[string]certStatus{}}
	cache := newCache()
	pre, err := newPresigner(ctx, cache, src, presignerConfig{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	serial := p.leaves[2].SerialNumber.Bytes()
	at := time.Date(2026, 12, 7, 10, 0, 0, 123456789, time.UTC)
	st := certStatus{Serial: serial, Status: statusRevoked, RevokedAt: at, Reason: xocsp.KeyCompromise}
	src.set(st)
	bundle, err := pre.FirstResponses("ca1", st)
	if err != nil {
		t.Fatal(err)
	}
	if err := pre.Install("ca1", serial, st, bundle); err != nil {
		t.Fatalf("install: %v", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := cache.Await(wctx, "ca1", serial, st); err != nil {
		t.Fatalf("Await of the revocation: %v", err)
	}
	if !pre.current("ca1", st, time.Now()) {
		t.Fatal("the pre-signer does not hold the revocation current")
	}
	other := st
	other.RevokedAt = at.Add(time.Second)
	if pre.current("ca1", other, time.Now()) {
		t.Fatal("a revocation a second later is held current")
	}
}
