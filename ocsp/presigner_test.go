package ocsp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"io"
	"math/big"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	xocsp "golang.org/x/crypto/ocsp"
)

// stateSource is CA state as a map, for the pre-signer's tests: the real one is the
// replicated ca state, adapted by node. Signing goes through a real SoftHSM key.
type stateSource struct {
	mu      sync.Mutex
	issuer  issuer
	entries map[string]certStatus
	// hidden: the issuer is not listed (no responder certificate for this
	// node yet).
	hidden bool
}

func (s *stateSource) Issuers(context.Context) ([]issuer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hidden {
		return nil, nil
	}
	return []issuer{s.issuer}, nil
}

func (s *stateSource) hide(h bool) {
	s.mu.Lock()
	s.hidden = h
	s.mu.Unlock()
}

func (s *stateSource) Statuses(_ context.Context, _ string, fn func(certStatus) error) error {
	s.mu.Lock()
	all := make([]certStatus, 0, len(s.entries))
	for _, st := range s.entries {
		all = append(all, st)
	}
	s.mu.Unlock()
	for _, st := range all {
		if err := fn(st); err != nil {
			return err
		}
	}
	return nil
}

func (s *stateSource) Status(_ context.Context, _ string, serial []byte) (certStatus, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.entries[string(serial)]
	return st, ok, nil
}

func (s *stateSource) set(st certStatus) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries[string(st.Serial)] = st
}

// responderKey makes this test's responder key in its own SoftHSM token.
func responderKey(t *testing.T) crypto.Signer { return responderKeyTB(t) }

func responderKeyTB(t testing.TB) crypto.Signer {
	t.Helper()
	tok := softhsm.NewToken(t)
	k, err := tok.HSM.GenerateKey(context.Background(), hsm.KeySpec{Type: hsm.ECP256, Label: "ocsp-responder"})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func newSource(t *testing.T, key crypto.Signer, n int) *stateSource {
	p := getPKI(t)
	src := &stateSource{issuer: issuer{ID: "ca1", Cert: p.ca, Responder: p.delegatedResponder(t, key)}, entries: map[string]certStatus{}}
	for i := range n {
		src.set(certStatus{Serial: big.NewInt(int64(0x10000 + i)).Bytes(), Status: statusGood, Reason: -1})
	}
	return src
}

func waitFor(t *testing.T, what string, d time.Duration, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func signedCount(reg *prometheus.Registry) float64 {
	mfs, _ := reg.Gather()
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "inkan_ocsp_signed_total" {
			for _, m := range mf.GetMetric() {
				total += m.GetCounter().GetValue()
			}
		}
	}
	return total
}

func TestPresignerFillChangeRestart(t *testing.T) {
	key := responderKey(t)
	src := newSource(t, key, 50)
	store := filepath.Join(t.TempDir(), "ocsp.db")
	ctx, cancel := context.WithCancel(context.Background())

	cache := newCache()
	reg := prometheus.NewRegistry()
	p, err := newPresigner(ctx, cache, src, presignerConfig{Key: key, StorePath: store, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan change, 1)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, changes) }()
	waitFor(t, "the cache to fill", 20*time.Second, func() bool { return cache.Len() == 50*len(certIDHashes) })

	// Every response verifies under the delegated responder chain and says good.
	pki := getPKI(t)
	leafFor := func(serial []byte) *x509.Certificate {
		return &x509.Certificate{SerialNumber: new(big.Int).SetBytes(serial), RawIssuer: pki.ca.RawSubject}
	}
	for _, h := range certIDHashes {
		r := cache.Get("ca1", h, big.NewInt(0x10000).Bytes())
		resp, err := xocsp.ParseResponseForCert(r.DER, leafFor(big.NewInt(0x10000).Bytes()), pki.ca)
		if err != nil || resp.Status != xocsp.Good || resp.IssuerHash != h {
			t.Fatalf("%v: %v %+v", h, err, resp)
		}
	}

	// A revocation reaches the cache within 2 s of the change notice.
	serial := big.NewInt(0x10007).Bytes()
	revokedAt := time.Now().UTC().Truncate(time.Second)
	src.set(certStatus{Serial: serial, Status: statusRevoked, RevokedAt: revokedAt, Reason: xocsp.KeyCompromise})
	start := time.Now()
	changes <- change{IssuerID: "ca1", Serials: [][]byte{serial}}
	waitFor(t, "the revocation to be signed", 2*time.Second, func() bool {
		r := cache.Get("ca1", crypto.SHA256, serial)
		return r != nil && r.Status == statusRevoked
	})
	t.Logf("revocation signed %v after the change notice", time.Since(start))
	resp, err := xocsp.ParseResponseForCert(cache.Get("ca1", crypto.SHA1, serial).DER, leafFor(serial), pki.ca)
	if err != nil || resp.Status != xocsp.Revoked || resp.RevocationReason != xocsp.KeyCompromise || !resp.RevokedAt.Equal(revokedAt) {
		t.Fatalf("revoked response: %v %+v", err, resp)
	}
	// A hold that becomes a revocation for another reason is signed again too.
	src.set(certStatus{Serial: serial, Status: statusRevoked, RevokedAt: revokedAt, Reason: xocsp.CessationOfOperation})
	changes <- change{IssuerID: "ca1", Serials: [][]byte{serial}}
	waitFor(t, "the new reason to be signed", 2*time.Second, func() bool {
		return cache.Get("ca1", crypto.SHA1, serial).Reason == xocsp.CessationOfOperation
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart: the store fills the cache before Run, and nothing is signed again.
	cache2 := newCache()
	reg2 := prometheus.NewRegistry()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	p2, err := newPresigner(ctx2, cache2, src, presignerConfig{Key: key, StorePath: store, Registerer: reg2})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if cache2.Len() != 50*len(certIDHashes) {
		t.Fatalf("after restart the cache holds %d responses before Run, want %d", cache2.Len(), 50*len(certIDHashes))
	}
	if r := cache2.Get("ca1", crypto.SHA256, serial); r == nil || r.Reason != xocsp.CessationOfOperation {
		t.Fatalf("restarted cache lost the revocation: %+v", r)
	}
	done2 := make(chan error, 1)
	go func() { done2 <- p2.Run(ctx2, nil) }()
	// Reconciled: the reconcile that runs first thing in Run has compared the
	// cache with the whole state and signed whatever it found missing or due.
	waitFor(t, "the restart's reconcile", 20*time.Second, func() bool { return p2.Health().Reconciled })
	if n := signedCount(reg2); n != 0 {
		t.Fatalf("restart signed %v responses it already had", n)
	}
	cancel2()
	<-done2
}

func TestPresignerRefreshAndClamp(t *testing.T) {
	key := responderKey(t)
	src := newSource(t, key, 5)
	now := time.Now()
	var clockMu sync.Mutex
	clock := func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now }
	cache := newCache()
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := newPresigner(ctx, cache, src, presignerConfig{Key: key, Now: clock, ScanInterval: 20 * time.Millisecond, Rate: 1000, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, nil) }()
	waitFor(t, "the cache to fill", 10*time.Second, func() bool { return cache.Len() == 5*len(certIDHashes) })

	// The responder certificate ends in 7 days, so 4-day responses are not clamped;
	// their nextUpdate is thisUpdate + 4 days.
	r := cache.Get("ca1", crypto.SHA1, big.NewInt(0x10000).Bytes())
	if got := r.NextUpdate.Sub(r.ThisUpdate); got != 4*24*time.Hour {
		t.Fatalf("validity %v, want 4 days", got)
	}
	// Two days and a bit later every response is due and is signed again.
	clockMu.Lock()
	now = now.Add(2*24*time.Hour + time.Minute)
	clockMu.Unlock()
	waitFor(t, "the refresh", 10*time.Second, func() bool {
		ok := true
		cache.Range(func(_ string, _ crypto.Hash, _ []byte, r *response) bool {
			ok = ok && !r.ThisUpdate.Before(now.Add(-time.Minute))
			return ok
		})
		return ok
	})
	if v := counterValue(p.metrics.signed.WithLabelValues("refresh")); v != float64(5*len(certIDHashes)) {
		t.Errorf("refresh signed %v responses, want %d", v, 5*len(certIDHashes))
	}
	// Six days in, the responder certificate (7 days) caps nextUpdate.
	clockMu.Lock()
	now = now.Add(4 * 24 * time.Hour)
	clockMu.Unlock()
	waitFor(t, "clamped responses", 10*time.Second, func() bool {
		r := cache.Get("ca1", crypto.SHA1, big.NewInt(0x10001).Bytes())
		return !r.NextUpdate.After(src.issuer.Responder.NotAfter) && r.ThisUpdate.After(now.Add(-time.Minute))
	})
	cancel()
	<-done
}

func TestLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	l := newLimiter(10, clock)
	ctx := context.Background()
	for i := range 10 { // the initial burst is one second's worth
		if err := l.wait(ctx); err != nil {
			t.Fatal(i, err)
		}
	}
	ctx2, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if err := l.wait(ctx2); err == nil {
		t.Fatal("an eleventh token in the same instant was granted")
	}
	mu.Lock()
	now = now.Add(500 * time.Millisecond)
	mu.Unlock()
	for range 5 {
		if err := l.wait(ctx); err != nil {
			t.Fatal(err)
		}
	}
}

func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// TestPresignerSignsTheLatestStatus: a job queued with a status that has
// changed since (a refresh of "good" racing a revocation, or two quick
// changes on two workers) signs the status the Source holds now, for every
// CertID variant, so the variants cannot disagree and a revocation is never
// overwritten by an older "good".
func TestPresignerSignsTheLatestStatus(t *testing.T) {
	key := responderKey(t)
	src := newSource(t, key, 3)
	cache := newCache()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := newPresigner(ctx, cache, src, presignerConfig{Key: key, StorePath: filepath.Join(t.TempDir(), "ocsp.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.syncIssuers(ctx); err != nil {
		t.Fatal(err)
	}
	serial := big.NewInt(0x10001).Bytes()
	revokedAt := time.Now().UTC().Truncate(time.Second)
	src.set(certStatus{Serial: serial, Status: statusRevoked, RevokedAt: revokedAt, Reason: xocsp.KeyCompromise})
	stale := job{issuerID: "ca1", st: certStatus{Serial: serial, Status: statusGood, Reason: -1}, why: "refresh"}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.signLatest(ctx, stale); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, h := range certIDHashes {
		if r := cache.Get("ca1", h, serial); r == nil || r.Status != statusRevoked || r.Reason != xocsp.KeyCompromise {
			t.Fatalf("%v: %+v; want revoked keyCompromise", h, r)
		}
	}
}

// gatedKey signs only while its gate is open: a stand-in for a busy HSM, so a
// test can look at the pre-signer while responses are queued but not signed.
// The signing itself is the real SoftHSM key's.
type gatedKey struct {
	crypto.Signer
	mu   sync.RWMutex
	open bool
	cond *sync.Cond
}

func newGatedKey(k crypto.Signer) *gatedKey {
	g := &gatedKey{Signer: k, open: true}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *gatedKey) set(open bool) {
	g.mu.Lock()
	g.open = open
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *gatedKey) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	g.mu.Lock()
	for !g.open {
		g.cond.Wait()
	}
	g.mu.Unlock()
	return g.Signer.Sign(r, digest, opts)
}

// TestPresignerHealthReconciled: Health says reconciled only once what a
// reconcile found missing is signed, not when it has been queued — at the
// start, and again when a resync (a CA's responder certificate arriving)
// finds certificates the cache lacks. Readiness of the OCSP listener rests on
// it: a node ready while it answers unauthorized for a certificate its state
// holds would be taken into a load balancer too soon.
func TestPresignerHealthReconciled(t *testing.T) {
	soft := responderKey(t)
	key := newGatedKey(soft)
	src := newSource(t, soft, 40)
	cache := newCache()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	key.set(false)
	p, err := newPresigner(ctx, cache, src, presignerConfig{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, nil) }()
	// The reconcile is done once it has queued its 40 serials (the flag Health
	// ands with the jobs still unsigned); none can be signed while the key is shut.
	waitFor(t, "the reconcile to queue its serials", 10*time.Second, func() bool {
		p.health.Lock()
		defer p.health.Unlock()
		return p.health.h.Reconciled
	})
	if h := p.Health(); h.Reconciled {
		t.Fatalf("reconciled with %d of %d responses signed", cache.Len(), 40*len(certIDHashes))
	}
	key.set(true)
	waitFor(t, "reconciled", 20*time.Second, func() bool { return p.Health().Reconciled })
	if n := cache.Len(); n != 40*len(certIDHashes) {
		t.Fatalf("reconciled with %d responses cached, want %d", n, 40*len(certIDHashes))
	}
	cancel()
	<-done

	// A resync that finds new serials: not reconciled until they are signed.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	changes := make(chan change, 1)
	go func() { done <- p.Run(ctx, changes) }()
	waitFor(t, "reconciled after the restart", 20*time.Second, func() bool { return p.Health().Reconciled })
	key.set(false)
	for i := range 10 {
		src.set(certStatus{Serial: big.NewInt(int64(0x20000 + i)).Bytes(), Status: statusGood, Reason: -1})
	}
	changes <- change{Resync: true}
	waitFor(t, "a resync to be seen as under way", 10*time.Second, func() bool { return !p.Health().Reconciled })
	key.set(true)
	waitFor(t, "reconciled after the resync", 20*time.Second, func() bool { return p.Health().Reconciled })
	if n := cache.Len(); n != 50*len(certIDHashes) {
		t.Fatalf("reconciled with %d responses cached, want %d", n, 50*len(certIDHashes))
	}
	cancel()
	<-done
}

// TestPresignerIssuerArrives: changes that come while this node has no
// responder certificate from their CA cannot be signed and are dropped; when
// a change finds the responder certificate in (its own issuance is one), every
// certificate of the CA is signed, not only that change's serials. Before,
// the dropped ones stayed unauthorized until a restart (an edge that joined
// under load).
func TestPresignerIssuerArrives(t *testing.T) {
	key := responderKey(t)
	src := newSource(t, key, 0)
	src.hide(true)
	cache := newCache()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := newPresigner(ctx, cache, src, presignerConfig{Key: key})
	if err != nil {
		t.Fatal(err)
	}
	changes := make(chan change)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, changes) }()
	var early [][]byte
	for i := range 20 {
		st := certStatus{Serial: big.NewInt(int64(0x30000 + i)).Bytes(), Status: statusGood, Reason: -1}
		src.set(st)
		early = append(early, st.Serial)
		changes <- change{IssuerID: "ca1", Serials: [][]byte{st.Serial}}
	}
	if n := cache.Len(); n != 0 {
		t.Fatalf("%d responses signed without a responder certificate", n)
	}
	src.hide(false)
	last := big.NewInt(0x31000).Bytes()
	src.set(certStatus{Serial: last, Status: statusGood, Reason: -1})
	changes <- change{IssuerID: "ca1", Serials: [][]byte{last}}
	waitFor(t, "every certificate of the CA to be signed", 20*time.Second, func() bool { return cache.Len() == 21*len(certIDHashes) })
	for _, s := range early {
		for _, h := range certIDHashes {
			if r := cache.Get("ca1", h, s); r == nil || r.Status != statusGood {
				t.Fatalf("%x %v: %+v", s, h, r)
			}
		}
	}
	waitFor(t, "reconciled", 20*time.Second, func() bool { return p.Health().Reconciled })
	cancel()
	<-done
}

// TestStoppedRefresherNeverServesStale: responses valid for two seconds, and
// a refresher that cannot sign (its rate allows one signature in 1000 s):
// relying parties get each response only before its nextUpdate, then
// tryLater, counted; the pre-signer's scan counts the stale responses, which
// is what /readyz/ocsp reads to take the node out of a load balancer.
func TestStoppedRefresherNeverServesStale(t *testing.T) {
	key := responderKey(t)
	src := newSource(t, key, 3)
	cache := newCache()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p, err := newPresigner(ctx, cache, src, presignerConfig{Key: key, Validity: 2 * time.Second, RefreshAfter: time.Second,
		Rate: 0.001, ScanInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, nil) }() // the reconcile signs at once, outside the rate
	waitFor(t, "the cache to fill", 10*time.Second, func() bool { return cache.Len() == 3*len(certIDHashes) })
	reg := prometheus.NewRegistry()
	r := newResponder(cache, nil, reg)
	url := serve(t, r)
	pki := getPKI(t)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(0x10001), RawIssuer: pki.ca.RawSubject}
	req, err := xocsp.CreateRequest(leaf, pki.ca, &xocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	served := 0
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		asked := time.Now()
		resp, err := http.Post(url+"/", "application/ocsp-request", bytes.NewReader(req))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if bytes.Equal(body, respTryLater) {
			break
		}
		got, err := xocsp.ParseResponse(body, nil)
		if err != nil {
			t.Fatalf("neither a response nor tryLater: %v", err)
		}
		if !asked.Before(got.NextUpdate) {
			t.Fatalf("served at %v a response whose nextUpdate is %v", asked, got.NextUpdate)
		}
		served++
		if time.Now().After(deadline) {
			t.Fatal("still served 10 s after a 2 s response was signed")
		}
	}
	if served == 0 {
		t.Fatal("the response was never served before its nextUpdate")
	}
	if v := counterValue(r.results.stale); v < 1 {
		t.Errorf("stale counter %v after a tryLater", v)
	}
	waitFor(t, "the scan to count the stale responses", 5*time.Second, func() bool { return p.Health().Stale == 3*len(certIDHashes) })
	if v := counterValue(p.metrics.signed.WithLabelValues("refresh")); v != 0 {
		t.Errorf("the stopped refresher signed %v responses", v)
	}
	cancel()
	<-done
}
