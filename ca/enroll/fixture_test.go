package enroll

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
	"github.com/inkan-pki/inkan/subscriber"
)

// The fixture is made once per test binary (TestMain): a stand-in J-LIS with one
// card in a SoftHSM token (RSA key generation in SoftHSM is slow, so the card is
// shared), certificates for an in-memory key in every state a test needs (revoked for
// each reason, expired, from another root with the same DN), a fresh and a stale
// CRL, and a real one-node cluster whose key vault is a SoftHSM token, running the
// real issuing authority (ca.Authority) with a self-signed CA. Tests share the
// cluster; each uses its own nonces.

// fx is the fixture; a test that uses it calls needFixture first. It is made lazily
// so that fuzz workers, which run this binary's TestMain too, do not pay for it.
var (
	fx        *fixture
	fxOnce    sync.Once
	fxErr     error
	fxCleanup func()
)

func needFixture(t testing.TB) {
	t.Helper()
	fxOnce.Do(func() { fx, fxCleanup, fxErr = newFixture() })
	if fxErr != nil {
		t.Fatalf("enroll fixture: %v", fxErr)
	}
}

type fixture struct {
	dir   string
	sim   *jpkisim.Sim
	stale string // path of a CRL past its nextUpdate

	cardToken *softhsm.Token
	card      *subscriber.PKCS11Card // a jpkisim card, through PKCS#11

	memKey  *rsa.PrivateKey // a "card" key in memory, for the certificates below
	good    []byte          // valid, unrevoked certificate for memKey
	expired []byte
	foreign []byte // issued by another root with the J-LIS DN
	revoked map[crlreason.Reason][]byte
	other   *rsa.PrivateKey // a key no certificate is for

	cluster   *cluster.Cluster
	authority *ca.Authority
	issuerID  string
	vault     *softhsm.Token
	linkKey   []byte
	caCert    *x509.Certificate // the authority's self-signed issuing CA

	subKeys [4]*ecdsa.PrivateKey // subscriber keys, reused
}

var reasons = []crlreason.Reason{
	crlreason.Unspecified, crlreason.KeyCompromise, crlreason.CACompromise, crlreason.AffiliationChanged,
	crlreason.Superseded, crlreason.CessationOfOperation, crlreason.CertificateHold,
}

func TestMain(m *testing.M) {
	code := m.Run()
	if fxCleanup != nil {
		fxCleanup()
	}
	os.Exit(code)
}

func rsaKey() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 2048) }

func newFixture() (f *fixture, cleanup func(), err error) {
	var undo []func()
	cleanup = func() {
		for i := len(undo) - 1; i >= 0; i-- {
			undo[i]()
		}
	}
	ctx := context.Background()
	f = &fixture{revoked: map[crlreason.Reason][]byte{}}
	if f.dir, err = os.MkdirTemp("", "inkan-enroll-test"); err != nil {
		return nil, cleanup, err
	}
	undo = append(undo, func() { os.RemoveAll(f.dir) })

	// Keys first, in parallel: RSA generation is the slow part.
	var rootKey, otherRoot *rsa.PrivateKey
	var wg sync.WaitGroup
	var keyErr error
	var mu sync.Mutex
	for _, dst := range []**rsa.PrivateKey{&rootKey, &otherRoot, &f.memKey, &f.other} {
		wg.Go(func() {
			k, err := rsaKey()
			mu.Lock()
			defer mu.Unlock()
			*dst, keyErr = k, errors.Join(keyErr, err)
		})
	}
	wg.Wait()
	if keyErr != nil {
		return nil, cleanup, keyErr
	}
	for i := range f.subKeys {
		if f.subKeys[i], err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, cleanup, err
		}
	}

	now := time.Now()
	if f.sim, err = jpkisim.Init(jpkisim.Config{Dir: filepath.Join(f.dir, "jlis"), Key: rootKey, RootNotBefore: now.AddDate(-3, 0, 0)}); err != nil {
		return nil, cleanup, err
	}
	person := jpkisim.DemoPerson()
	issue := func(spec jpkisim.CardSpec) ([]byte, *big.Int, error) {
		spec.Person = person
		c, err := f.sim.IssueCertificate(&f.memKey.PublicKey, spec)
		if err != nil {
			return nil, nil, err
		}
		return c.DER, c.Serial, nil
	}
	if f.good, _, err = issue(jpkisim.CardSpec{}); err != nil {
		return nil, cleanup, err
	}
	if f.expired, _, err = issue(jpkisim.CardSpec{NotBefore: now.AddDate(-2, 0, 0), NotAfter: now.Add(-time.Hour)}); err != nil {
		return nil, cleanup, err
	}
	for _, r := range reasons {
		der, serial, err := issue(jpkisim.CardSpec{})
		if err != nil {
			return nil, cleanup, err
		}
		if err := f.sim.Revoke(serial, r, now.Add(-time.Minute)); err != nil {
			return nil, cleanup, err
		}
		f.revoked[r] = der
	}
	// A second J-LIS with the same DN and another key.
	foreignSim, err := jpkisim.Init(jpkisim.Config{Dir: filepath.Join(f.dir, "foreign"), Key: otherRoot, RootNotBefore: now.AddDate(-1, 0, 0)})
	if err != nil {
		return nil, cleanup, err
	}
	c, err := foreignSim.IssueCertificate(&f.memKey.PublicKey, jpkisim.CardSpec{Person: person})
	if err != nil {
		return nil, cleanup, err
	}
	f.foreign = c.DER

	// The card, in a token, through the client's PKCS#11 path.
	if f.cardToken, err = softhsm.Create(); err != nil {
		return nil, cleanup, err
	}
	undo = append(undo, func() { f.cardToken.Close() })
	cardCfg := f.cardToken.Config()
	cardCfg.Logger = testenv.Logger()
	if _, err := f.sim.IssueCard(ctx, cardCfg, jpkisim.CardSpec{Person: person}); err != nil {
		return nil, cleanup, err
	}
	if f.card, err = subscriber.OpenCard(ctx, subscriber.CardConfig{
		Module: f.cardToken.Module, Key: hsm.URI{Token: f.cardToken.Label}, PIN: hsm.PINFile(f.cardToken.PINFile), Logger: testenv.Logger(),
	}); err != nil {
		return nil, cleanup, err
	}
	undo = append(undo, func() { f.card.Close() })

	// CRLs: a stale one kept aside, then the fresh one in the sim's CRL file.
	stale, err := f.sim.PublishCRL(now.Add(-72*time.Hour), now.Add(-48*time.Hour))
	if err != nil {
		return nil, cleanup, err
	}
	f.stale = filepath.Join(f.dir, "stale.crl")
	if err := os.WriteFile(f.stale, stale, 0o644); err != nil {
		return nil, cleanup, err
	}
	if _, err := f.sim.PublishCRL(time.Time{}, time.Time{}); err != nil {
		return nil, cleanup, err
	}

	// A one-node cluster, its key vault a SoftHSM token, with the issuing authority.
	if f.vault, err = softhsm.Create(); err != nil {
		return nil, cleanup, err
	}
	undo = append(undo, func() { f.vault.Close() })
	n, err := openNode(ctx, filepath.Join(f.dir, "node0"), f.vault, true, nil)
	if err != nil {
		return nil, cleanup, err
	}
	undo = append(undo, n.close)
	f.cluster, f.authority = n.c, n.a
	if f.issuerID, f.caCert, err = initCA(ctx, n.a); err != nil {
		return nil, cleanup, err
	}
	f.linkKey = make([]byte, 32)
	_, _ = rand.Read(f.linkKey)
	return f, cleanup, nil
}

// initCA makes the authority's issuing CA, self-signed (a lab root).
func initCA(ctx context.Context, a *ca.Authority) (string, *x509.Certificate, error) {
	root, err := a.Init(ctx, ca.InitOptions{
		Subject:  pkix.Name{Country: []string{"JP"}, Organization: []string{"inkan test"}, CommonName: "inkan test derived ID CA"},
		SelfSign: true,
	})
	if err != nil {
		return "", nil, err
	}
	return root.ID, root.Cert, nil
}

// node is a cluster node with its authority.
type node struct {
	c *cluster.Cluster
	a *ca.Authority
}

func (n *node) close() {
	n.a.Close()
	_ = n.c.Shutdown(context.Background())
}

// openNode starts a cluster node whose key vault and CA keys are in tok,
// bootstrapping or joining, with the authority's and the nonces' handlers, and runs
// an Authority over it.
func openNode(ctx context.Context, dir string, tok *softhsm.Token, bootstrap bool, join *cluster.Join) (*node, error) {
	cfg := tok.Config()
	cfg.Logger = testenv.Logger()
	cfg.Sessions = 8
	h, err := hsm.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	c, err := cluster.Open(ctx, cluster.Config{
		DataDir:            dir,
		BindAddr:           "127.0.0.1:0",
		KeyVault:           cluster.NewHSMVault(h),
		Bootstrap:          bootstrap,
		Join:               join,
		Handlers:           append(ca.Handlers(), NonceHandler()),
		Logger:             testenv.Logger(),
		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
	})
	if err != nil {
		h.Close()
		return nil, err
	}
	a, err := ca.New(ca.Config{
		Cluster: c, Keys: h, Logger: testenv.Logger(),
		URLs: ca.URLs{OCSP: "http://ocsp.inkan.test/", CRL: "http://crl.inkan.test/crl/", CAIssuers: "http://crl.inkan.test/ca/"},
	})
	if err != nil {
		_ = c.Shutdown(ctx)
		h.Close()
		return nil, err
	}
	return &node{c: c, a: a}, nil
}

// testIssuer is the Issuer the tests give the API: the real authority behind a
// recorder, so a test sees every request that reached the CA, and can make the CA
// fail.
type testIssuer struct {
	next  issuer
	mu    sync.Mutex
	calls []ca.Request
	fail  error
	// before, if set, runs before a request is passed on: a test's way to change the
	// CA's state between the API's checks and the leader's.
	before func(ca.Request)
}

func (i *testIssuer) Issue(ctx context.Context, req ca.Request) (*ca.Issued, error) {
	i.mu.Lock()
	i.calls = append(i.calls, req)
	fail, before := i.fail, i.before
	i.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	if before != nil {
		before(req)
	}
	return i.next.Issue(ctx, req)
}

func (i *testIssuer) count() int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return len(i.calls)
}

// memCard is a "card" whose key is in memory: for the certificates only the sim's
// IssueCertificate made. The faithful card is fx.card.
type memCard struct {
	*rsa.PrivateKey
	chain [][]byte
}

func (c memCard) Chain() [][]byte { return c.chain }

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// isProblem says whether err is the API's problem of the type named name.
func isProblem(err error, name string) bool {
	var p *enrollapi.Problem
	return errors.As(err, &p) && p.Name() == name
}

// verifierOf is a verifier of test cards that trusts the sim's root and reads
// crlFile, configured as a node configures its own; maxAge, if not 0, bounds
// how old its revocation data may be (jpki.Config.MaxRevocationAge).
func verifierOf(crlFile string, maxAge time.Duration) (*jpki.Verifier, error) {
	cfg := fx.sim.VerifierConfig()
	cfg.Policies = []string{jpki.PolicyTest}
	cfg.Revocation.File = crlFile
	cfg.MaxRevocationAge = maxAge
	return cfg.NewVerifier(testenv.Logger())
}

// crlFeed is a CRL source over the sim's CRL file: what a node's linkage job
// follows.
func crlFeed() (*jpki.CRLSource, error) {
	v, err := verifierOf(fx.sim.CRLPath(), 0)
	if err != nil {
		return nil, err
	}
	return v.CRL(), nil
}
