package linkage

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509/pkix"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
	"github.com/inkan-pki/inkan/policies"
)

// The fixture, made once per test binary: a real one-node cluster whose key vault is
// a SoftHSM token, running the real issuing authority with a self-signed CA, the
// shipped profiles and a link key. Each test makes its own stand-in J-LIS (sim), so
// the CRL entries one test makes are not another's.
var (
	fx     *fixture
	fxOnce sync.Once
	fxErr  error
	undo   []func()
)

type fixture struct {
	dir       string
	cluster   *cluster.Cluster
	authority *ca.Authority
	issuerID  string
	set       *policies.Set
	linkKey   []byte
	cardKey   *rsa.PrivateKey   // the JPKI certificates' key (in memory: only the CRL matters here)
	subKey    *ecdsa.PrivateKey // the derived certificates' key
}

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(undo) - 1; i >= 0; i-- {
		undo[i]()
	}
	os.Exit(code)
}

func needFixture(t testing.TB) {
	t.Helper()
	fxOnce.Do(func() { fx, fxErr = newFixture() })
	if fxErr != nil {
		t.Fatalf("linkage fixture: %v", fxErr)
	}
}

func newFixture() (*fixture, error) {
	ctx := context.Background()
	f := &fixture{linkKey: make([]byte, 32)}
	_, _ = rand.Read(f.linkKey)
	var err error
	if f.dir, err = os.MkdirTemp("", "inkan-linkage-test"); err != nil {
		return nil, err
	}
	undo = append(undo, func() { os.RemoveAll(f.dir) })
	if f.cardKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, err
	}
	if f.subKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	if f.set, err = policies.Load(policies.Shipped(), f.linkKey, "authentication"); err != nil {
		return nil, err
	}
	tok, err := softhsm.Create()
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { tok.Close() })
	cfg := tok.Config()
	cfg.Logger = testenv.Logger()
	cfg.Sessions = 8
	h, err := hsm.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { h.Close() })
	f.cluster, err = cluster.Open(ctx, cluster.Config{
		DataDir:            filepath.Join(f.dir, "node0"),
		BindAddr:           "127.0.0.1:0",
		KeyVault:           cluster.NewHSMVault(h),
		Bootstrap:          true,
		Handlers:           ca.Handlers(),
		Logger:             testenv.Logger(),
		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
	})
	if err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = f.cluster.Shutdown(context.Background()) })
	f.authority, err = ca.New(ca.Config{
		Cluster: f.cluster, Keys: h, Logger: testenv.Logger(),
		URLs: ca.URLs{OCSP: "http://ocsp.inkan.test/", CRL: "http://crl.inkan.test/crl/", CAIssuers: "http://crl.inkan.test/ca/"},
	})
	if err != nil {
		return nil, err
	}
	undo = append(undo, f.authority.Close)
	root, err := f.authority.Init(ctx, ca.InitOptions{
		Subject:  pkix.Name{Country: []string{"JP"}, Organization: []string{"inkan test"}, CommonName: "inkan linkage test CA"},
		SelfSign: true,
	})
	if err != nil {
		return nil, err
	}
	f.issuerID = root.ID
	return f, nil
}

// jlis is a test's own stand-in J-LIS and the CRL source reading its CRL file.
type jlis struct {
	sim  *jpkisim.Sim
	feed *jpki.CRLSource
}

func newJLIS(t testing.TB, now time.Time) *jlis {
	t.Helper()
	needFixture(t)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sim, err := jpkisim.Init(jpkisim.Config{Dir: t.TempDir(), Key: key, RootNotBefore: now.AddDate(-3, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	v, err := sim.VerifierConfig().NewVerifier(testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	return &jlis{sim: sim, feed: v.CRL()}
}

// card issues a JPKI signature certificate to the person.
func (j *jlis) card(t testing.TB, p jpkisim.Person) (*jpkisim.Certificate, *jpki.SignatureCertificate) {
	t.Helper()
	c, err := j.sim.IssueCertificate(&fx.cardKey.PublicKey, jpkisim.CardSpec{Person: p})
	if err != nil {
		t.Fatal(err)
	}
	sc, err := jpki.ParseSignatureCertificate(c.DER)
	if err != nil {
		t.Fatal(err)
	}
	return c, sc
}

// publish signs a CRL at thisUpdate, valid a day.
func (j *jlis) publish(t testing.TB, thisUpdate time.Time) {
	t.Helper()
	if _, err := j.sim.PublishCRL(thisUpdate, thisUpdate.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
}

// derive issues a derived certificate of profile linked to sc, as the enrolment API
// would have (the profile's contents for the card's person record, which the first
// one starts; link and hashes keyed), valid until notAfter.
func derive(t testing.TB, sc *jpki.SignatureCertificate, profile string, notAfter time.Time) *big.Int {
	t.Helper()
	link, nameBirth := sc.CertHash(fx.linkKey), sc.Identity.NameBirthHash(fx.linkKey)
	req := ca.Request{Link: link[:], PersonMode: ca.PersonSame}
	if err := fx.cluster.View(func(tx *bbolt.Tx) error {
		req.Person, _ = ca.Read(tx).PersonOf(link[:])
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if req.Person == nil {
		var err error
		if req.Person, err = ca.NewPersonID(); err != nil {
			t.Fatal(err)
		}
		req.PersonMode, req.NameBirth = ca.PersonNew, nameBirth[:]
	}
	tmpl, err := fx.set.Render(profile, sc.Identity, req.Person)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := fx.set.Profile(profile)
	req.Decision = policies.Decision{Profile: profile, PolicyVersion: p.Version, Template: tmpl, NotAfter: notAfter}
	req.PublicKey = fx.subKey.Public()
	iss, err := fx.authority.Issue(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return iss.Serial
}

// status is the derived certificate's entry in the CA's status index.
func status(t testing.TB, serial *big.Int) ca.CertStatus {
	t.Helper()
	var st ca.CertStatus
	err := fx.cluster.View(func(tx *bbolt.Tx) (err error) {
		st, err = ca.Read(tx).StatusOf(fx.issuerID, serial)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// clock is a fake clock (an edge the job takes as Config.Now).
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

func newJob(t testing.TB, j *jlis, now func() time.Time, edit ...func(*Config)) *Job {
	t.Helper()
	cfg := Config{
		State: fx.cluster, Authority: fx.authority, Feed: j.feed,
		Profiles: func() *policies.Set { return fx.set },
		LinkKey:  fx.linkKey, Now: now, Logger: testenv.Logger(),
	}
	for _, f := range edit {
		f(&cfg)
	}
	job, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return job
}

var personSeq struct {
	sync.Mutex
	n int
}

// newPerson is a person of the test's own.
func newPerson() jpkisim.Person {
	personSeq.Lock()
	defer personSeq.Unlock()
	personSeq.n++
	p := jpkisim.DemoPerson()
	p.Name = "連携　太郎" + string(rune('０'+personSeq.n%10)) + string(rune('Ａ'+personSeq.n/10%26))
	return p
}

func shippedFile(t testing.TB, name string) []byte {
	t.Helper()
	b, err := fs.ReadFile(policies.Shipped(), name+".yaml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mapFS(files map[string][]byte) fs.FS {
	m := fstest.MapFS{}
	for n, b := range files {
		m[n] = &fstest.MapFile{Data: b}
	}
	return m
}
