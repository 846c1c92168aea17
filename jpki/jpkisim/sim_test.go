package jpkisim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/miekg/pkcs11"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/jpki"
)

// RSA keys are made once per test binary: the root's, and one for certificates
// issued outside a token. Card keys are made in SoftHSM, once per card.
var testKeys = sync.OnceValue(func() [2]*rsa.PrivateKey {
	var ks [2]*rsa.PrivateKey
	for i := range ks {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		ks[i] = k
	}
	return ks
})

func newSim(t testing.TB) *Sim {
	t.Helper()
	s, err := Init(Config{Dir: t.TempDir(), Key: testKeys()[0], RootNotBefore: time.Now().AddDate(-1, 0, 0)})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// verifier trusts s's root and reads s's CRL file.
func verifier(t testing.TB, s *Sim, policies ...string) *jpki.Verifier {
	t.Helper()
	if len(policies) == 0 {
		policies = []string{jpki.PolicyTest}
	}
	cfg := s.VerifierConfig()
	cfg.Policies = policies
	v, err := cfg.NewVerifier(testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestCardPassesJPKI issues a card into a SoftHSM token and checks it end to end as a
// verifier meets it: the certificate parses with its basic-4 information, verifies
// under the sim's root with the sim's CRL, and the card signs as OpenSC's JPKI driver
// makes a real card sign (CKM_RSA_PKCS over a SHA-256 DigestInfo), with the
// certificate beside the key on the token. The card is reused for the key checks.
func TestCardPassesJPKI(t *testing.T) {
	ctx := context.Background()
	s := newSim(t)
	tk := softhsm.NewToken(t)
	person := DemoPerson()
	card, err := s.IssueCard(ctx, cardConfig(tk), CardSpec{Person: person})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PublishCRL(time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}

	sc, err := jpki.ParseSignatureCertificate(card.DER)
	if err != nil {
		t.Fatal(err)
	}
	id := sc.Identity
	if id.Name() != person.Name || id.Address() != person.Address || id.Gender() != person.Gender ||
		id.DateOfBirth() != person.Birth || id.NameSubstitutes() != "00000" ||
		len(id.AddressSubstitutes()) != len([]rune(person.Address)) {
		t.Error("basic-4 information does not round-trip")
	}
	if id.DateOfBirth().Era.String() != "Heisei" {
		t.Errorf("era = %v, want Heisei", id.DateOfBirth().Era)
	}
	if sc.Policy != jpki.PolicyTest {
		t.Errorf("policy = %s, want the test OID", sc.Policy)
	}
	leaf := sc.X509()
	if want := person.fifthBirthday(leaf.NotBefore); !leaf.NotAfter.Equal(want) {
		t.Errorf("notAfter = %s, want the fifth birthday %s", leaf.NotAfter, want)
	}
	if !bytes.Equal(leaf.RawIssuer, rootDN()) {
		t.Error("issuer is not the J-LIS DN as the root writes it")
	}
	for _, ext := range leaf.Extensions {
		if ext.Id.Equal(oidExtCertPolicies) && !ext.Critical {
			t.Error("certificatePolicies is not critical")
		}
		if ext.Id.Equal(oidExtCRLDP) && !bytes.Contains(ext.Value, crlDistributionPoint(person.Prefecture, person.Municipality)) {
			t.Error("CRLDP is not the municipality's directoryName")
		}
	}

	res, err := verifier(t, s).Verify(ctx, [][]byte{card.DER}, time.Now())
	if err != nil {
		t.Fatalf("jpki.Verifier refused the card: %v", err)
	}
	if res.Revocation.State != jpki.StateGood {
		t.Fatalf("revocation = %v", res.Revocation.State)
	}
	// The default verifier takes only the production OID: a test card is refused.
	if _, err := verifier(t, s, jpki.PolicyProduction).Verify(ctx, [][]byte{card.DER}, time.Now()); !errors.Is(err, jpki.ErrPolicy) {
		t.Fatalf("production-only verifier: err = %v, want ErrPolicy", err)
	}

	// The card signs through PKCS#11 as a real one does.
	key, err := tk.HSM.Signer(ctx, hsm.URI{Object: keyLabel, ID: keyID, Type: "private"})
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("proof"))
	sig, err := key.Sign(nil, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	if err := rsa.VerifyPKCS1v15(leaf.PublicKey.(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err != nil {
		t.Fatalf("card signature does not verify under its certificate: %v", err)
	}

	t.Run("objects on the token", func(t *testing.T) {
		rawSessionT(t, tk, func(p *pkcs11.Ctx, sh pkcs11.SessionHandle) {
			certs, err := findObjects(p, sh, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
				pkcs11.NewAttribute(pkcs11.CKA_ID, keyID),
			})
			if err != nil || len(certs) != 1 {
				t.Fatalf("signature certificate objects: %d, %v", len(certs), err)
			}
			attrs, err := p.GetAttributeValue(sh, certs[0], []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil),
				pkcs11.NewAttribute(pkcs11.CKA_LABEL, nil),
				pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, nil),
			})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(attrs[0].Value, card.DER) || string(attrs[1].Value) != certLabel || attrs[2].Value[0] != 1 {
				t.Errorf("certificate object: label %q private %v, value matches %t", attrs[1].Value, attrs[2].Value, bytes.Equal(attrs[0].Value, card.DER))
			}
			cas, err := findObjects(p, sh, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_CERTIFICATE),
				pkcs11.NewAttribute(pkcs11.CKA_ID, caCertID),
			})
			if err != nil || len(cas) != 1 {
				t.Fatalf("CA certificate objects: %d, %v", len(cas), err)
			}
		})
	})

	t.Run("key not extractable", func(t *testing.T) {
		rawSessionT(t, tk, func(p *pkcs11.Ctx, sh pkcs11.SessionHandle) {
			keys, err := findObjects(p, sh, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_ID, keyID),
			})
			if err != nil || len(keys) != 1 {
				t.Fatalf("card keys: %d, %v", len(keys), err)
			}
			for _, a := range []uint{pkcs11.CKA_VALUE, pkcs11.CKA_PRIVATE_EXPONENT, pkcs11.CKA_PRIME_1} {
				v, err := p.GetAttributeValue(sh, keys[0], []*pkcs11.Attribute{pkcs11.NewAttribute(a, nil)})
				if err == nil && len(v) == 1 && len(v[0].Value) > 0 {
					t.Errorf("attribute %#x of the card key was read", a)
				}
			}
			flags, err := p.GetAttributeValue(sh, keys[0], []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil),
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
				pkcs11.NewAttribute(pkcs11.CKA_NEVER_EXTRACTABLE, nil),
				pkcs11.NewAttribute(pkcs11.CKA_LOCAL, nil),
			})
			if err != nil {
				t.Fatal(err)
			}
			want := []byte{1, 0, 1, 1}
			for i, f := range flags {
				if f.Value[0] != want[i] {
					t.Errorf("attribute %#x = %d, want %d", f.Type, f.Value[0], want[i])
				}
			}
			// Wrapping it out is refused too.
			kek, err := p.GenerateKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, []*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32), pkcs11.NewAttribute(pkcs11.CKA_WRAP, true), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := p.WrapKey(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(0x210A, nil)}, kek, keys[0]); !isRV(err, pkcs11.CKR_KEY_UNEXTRACTABLE) {
				t.Errorf("wrap the card key: err = %v, want CKR_KEY_UNEXTRACTABLE", err)
			}
		})
	})

	t.Run("second card on the same token refused", func(t *testing.T) {
		if _, err := s.IssueCard(ctx, cardConfig(tk), CardSpec{Person: person}); !errors.Is(err, errCardInUse) {
			t.Fatalf("err = %v, want ErrCardInUse", err)
		}
	})

	t.Run("reissue after a move", func(t *testing.T) {
		moved, err := s.Reissue(ctx, cardConfig(tk), card.Serial, func(p *Person) {
			p.Address, p.AddressSubstitutes = "大阪府大阪市北区試験町二丁目２番２号", ""
			p.Prefecture, p.Municipality = "大阪府", "大阪市"
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.PublishCRL(time.Time{}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		v := verifier(t, s)
		_, err = v.Verify(ctx, [][]byte{card.DER}, time.Now())
		var rev *jpki.RevokedError
		if !errors.As(err, &rev) || rev.Reason != crlreason.AffiliationChanged {
			t.Fatalf("old certificate: err = %v, want revoked (affiliationChanged)", err)
		}
		res, err := v.Verify(ctx, [][]byte{moved.DER}, time.Now())
		if err != nil {
			t.Fatalf("new certificate: %v", err)
		}
		old, _ := jpki.ParseSignatureCertificate(card.DER)
		hk := bytes.Repeat([]byte{7}, 32)
		if res.Certificate.Identity.NameBirthHash(hk) != old.Identity.NameBirthHash(hk) {
			t.Error("a move changed the name-and-birth hash")
		}
		if res.Certificate.Identity.Address() == old.Identity.Address() {
			t.Error("address did not change")
		}
		// The token holds the new key only, and signs with it.
		keys, err := tk.HSM.Keys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		private := 0
		for _, k := range keys {
			if k.Class == "private" {
				private++
			}
		}
		if private != 1 {
			t.Fatalf("%d private keys on the card after re-issue, want 1", private)
		}
		key, err := tk.HSM.Signer(ctx, moved.Key)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := key.Sign(nil, digest[:], crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		if err := rsa.VerifyPKCS1v15(res.Certificate.X509().PublicKey.(*rsa.PublicKey), crypto.SHA256, digest[:], sig); err != nil {
			t.Fatal("re-issued card does not sign with the new certificate's key")
		}
	})
}

func cardConfig(tk *softhsm.Token) hsm.Config {
	cfg := tk.Config()
	cfg.Logger = testenv.Logger()
	return cfg
}

func rawSessionT(t *testing.T, tk *softhsm.Token, fn func(*pkcs11.Ctx, pkcs11.SessionHandle)) {
	t.Helper()
	err := rawSession(context.Background(), tk.Module, tk.HSM, func(p *pkcs11.Ctx, sh pkcs11.SessionHandle) error {
		fn(p, sh)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestCRLEveryReason revokes one certificate per J-LIS reason and checks that jpki's
// CRL source and Verifier report each, from the file and over HTTP, that an unrevoked
// certificate stays good, and that every CRL carries a larger number.
func TestCRLEveryReason(t *testing.T) {
	ctx := context.Background()
	s := newSim(t)
	pub := &testKeys()[1].PublicKey
	reasons := []crlreason.Reason{
		crlreason.Unspecified, crlreason.KeyCompromise, crlreason.CACompromise, crlreason.AffiliationChanged,
		crlreason.Superseded, crlreason.CessationOfOperation, crlreason.CertificateHold,
	}
	certs := map[crlreason.Reason]*Certificate{}
	for _, r := range reasons {
		c, err := s.IssueCertificate(pub, CardSpec{Person: DemoPerson()})
		if err != nil {
			t.Fatal(err)
		}
		certs[r] = c
	}
	good, err := s.IssueCertificate(pub, CardSpec{Person: DemoPerson()})
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	publish := func() {
		der, err := s.PublishCRL(time.Time{}, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if rl.Number.Int64() <= last {
			t.Fatalf("CRL number %d after %d", rl.Number, last)
		}
		last = rl.Number.Int64()
	}
	publish()
	for _, r := range reasons {
		if err := s.Revoke(certs[r].Serial, r, time.Time{}); err != nil {
			t.Fatal(err)
		}
	}
	publish()
	publish()

	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	overHTTP := s.VerifierConfig()
	overHTTP.Policies = []string{jpki.PolicyTest}
	overHTTP.Revocation = jpki.RevocationConfig{Kind: jpki.RevocationCRL, URL: srv.URL + "/crl"}
	httpVerifier, err := overHTTP.NewVerifier(testenv.Logger())
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range map[string]*jpki.Verifier{"file": verifier(t, s), "http": httpVerifier} {
		t.Run(name, func(t *testing.T) {
			for _, r := range reasons {
				_, err := v.Verify(ctx, [][]byte{certs[r].DER}, time.Now())
				var rev *jpki.RevokedError
				if !errors.As(err, &rev) || rev.Reason != r {
					t.Errorf("%v: err = %v", r, err)
				}
			}
			if _, err := v.Verify(ctx, [][]byte{good.DER}, time.Now()); err != nil {
				t.Errorf("unrevoked: %v", err)
			}
		})
	}

	if err := s.Revoke(certs[crlreason.KeyCompromise].Serial, crlreason.Unspecified, time.Time{}); !errors.Is(err, errAlreadyRevoked) {
		t.Errorf("second revocation: err = %v", err)
	}
	if err := s.Revoke(big.NewInt(12345), crlreason.Unspecified, time.Time{}); !errors.Is(err, errUnknownSerial) {
		t.Errorf("unknown serial: err = %v", err)
	}
	if err := s.Revoke(good.Serial, crlreason.RemoveFromCRL, time.Time{}); !errors.Is(err, errReason) {
		t.Errorf("removeFromCRL: err = %v", err)
	}
}

// TestStaleCRL: a CRL past its nextUpdate, or older than the verifier's maximum age,
// makes verification fail closed.
func TestStaleCRL(t *testing.T) {
	s := newSim(t)
	c, err := s.IssueCertificate(&testKeys()[1].PublicKey, CardSpec{Person: DemoPerson()})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := s.PublishCRL(now.Add(-72*time.Hour), now.Add(-48*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := verifier(t, s).Verify(context.Background(), [][]byte{c.DER}, now); !errors.Is(err, jpki.ErrRevocationStale) {
		t.Fatalf("err = %v, want ErrRevocationStale", err)
	}
}

// TestOpenAndRefresh: a state directory made with a key file opens again, the
// production policy is selectable, and Refresh publishes only when something changed
// or the CRL aged.
func TestOpenAndRefresh(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	s, err := Init(Config{Dir: dir, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(dir, rootKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("root key file: %v %v", fi, err)
	}
	if _, err := Init(Config{Dir: dir}); !errors.Is(err, errExists) {
		t.Fatalf("second init: err = %v", err)
	}
	s2, err := Open(Config{Dir: dir, Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	if !s2.Root().Equal(s.Root()) {
		t.Fatal("reopened root differs")
	}
	c, err := s2.IssueCertificate(&testKeys()[1].PublicKey, CardSpec{Person: DemoPerson(), Policy: jpki.PolicyProduction})
	if err != nil {
		t.Fatal(err)
	}
	if sc, err := jpki.ParseSignatureCertificate(c.DER); err != nil || sc.Policy != jpki.PolicyProduction {
		t.Fatalf("production policy: %v", err)
	}
	if p, err := s.Person(c.Serial); err != nil || p.Name != DemoPerson().Name || p.Municipality != "千代田区" {
		t.Fatalf("Person: %v", err)
	}
	for i, want := range []bool{true, false} {
		got, err := s.Refresh(time.Hour)
		if err != nil || got != want {
			t.Fatalf("refresh %d: published %t, %v; want %t", i, got, err, want)
		}
	}
	now = now.Add(2 * time.Hour)
	if got, _ := s.Refresh(time.Hour); !got {
		t.Fatal("an aged CRL was not refreshed")
	}
	if err := s.Revoke(c.Serial, crlreason.CessationOfOperation, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Refresh(time.Hour); !got {
		t.Fatal("a revocation did not refresh the CRL")
	}
	list, err := s.Issued()
	if err != nil || len(list) != 1 || !list[0].Revoked || list[0].Reason != crlreason.CessationOfOperation {
		t.Fatalf("Issued = %+v, %v", list, err)
	}
	data, _ := os.ReadFile(filepath.Join(dir, rootFile))
	if b, _ := pem.Decode(data); b == nil || !bytes.Equal(b.Bytes, s.Root().Raw) {
		t.Fatal("root.pem is not the root")
	}
}

func TestFifthBirthday(t *testing.T) {
	jst := time.FixedZone("JST", 9*60*60)
	for _, tc := range []struct {
		name       string
		birth      jpki.DateOfBirth
		issued     time.Time
		wantYear   int
		wantMonDay string
	}{
		{"birthday passed this year", jpki.BirthDate(1990, time.April, 1), time.Date(2024, 6, 1, 10, 0, 0, 0, jst), 2029, "04-01"},
		{"birthday still ahead", jpki.BirthDate(1990, time.December, 1), time.Date(2024, 6, 1, 10, 0, 0, 0, jst), 2028, "12-01"},
		{"issued on the birthday", jpki.BirthDate(1990, time.June, 1), time.Date(2024, 6, 1, 10, 0, 0, 0, jst), 2029, "06-01"},
		{"29 February in a common year", jpki.BirthDate(2000, time.February, 29), time.Date(2024, 3, 1, 10, 0, 0, 0, jst), 2029, "02-28"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := Person{Birth: tc.birth}.fifthBirthday(tc.issued).In(jst)
			if got.Year() != tc.wantYear || got.Format("01-02") != tc.wantMonDay || got.Hour() != 23 {
				t.Errorf("got %s", got)
			}
		})
	}
}

func TestPersonRefused(t *testing.T) {
	s := newSim(t)
	for name, edit := range map[string]func(*Person){
		"no name":          func(p *Person) { p.Name = "" },
		"bad gender":       func(p *Person) { p.Gender = 4 },
		"no such date":     func(p *Person) { p.Birth.Day = 31; p.Birth.Month = time.April },
		"map length":       func(p *Person) { p.NameSubstitutes = "01" },
		"no municipality":  func(p *Person) { p.Municipality = "" },
		"address too long": func(p *Person) { p.Address = string(bytes.Repeat([]byte("あ"), 201)) },
	} {
		p := DemoPerson()
		edit(&p)
		if _, err := s.IssueCertificate(&testKeys()[1].PublicKey, CardSpec{Person: p}); !errors.Is(err, errPerson) {
			t.Errorf("%s: err = %v, want errPerson", name, err)
		}
	}
}

// TestServeCRL: the served CRL follows a revocation made by another process (another
// Sim over the same directory) without a restart.
func TestServeCRL(t *testing.T) {
	s := newSim(t)
	s.refreshCheck = 20 * time.Millisecond
	c, err := s.IssueCertificate(&testKeys()[1].PublicKey, CardSpec{Person: DemoPerson()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.ServeCRL(ctx, l, time.Hour) }()
	fetch := func() *x509.RevocationList {
		resp, err := http.Get("http://" + l.Addr().String() + "/crl")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		der, _ := io.ReadAll(resp.Body)
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatalf("GET /crl: %s: %v", resp.Status, err)
		}
		if err := rl.CheckSignatureFrom(s.Root()); err != nil {
			t.Fatal(err)
		}
		return rl
	}
	if rl := fetch(); len(rl.RevokedCertificateEntries) != 0 {
		t.Fatal("fresh CRL lists a revocation")
	}
	other, err := Open(Config{Dir: s.Dir(), Key: testKeys()[0]})
	if err != nil {
		t.Fatal(err)
	}
	if err := other.Revoke(c.Serial, crlreason.CertificateHold, time.Time{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		rl := fetch()
		if len(rl.RevokedCertificateEntries) == 1 && rl.RevokedCertificateEntries[0].ReasonCode == int(crlreason.CertificateHold) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the served CRL did not pick up the revocation")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestParallelWriters: sims opened on one directory, as parallel `jpki-sim
// issue-card` and `revoke` processes open it, issue, revoke and publish at the
// same time, and the state keeps every change (the directory's lock file
// serialises each read-modify-write; separate opens hold separate locks, as
// separate processes do).
func TestParallelWriters(t *testing.T) {
	dir := t.TempDir()
	if _, err := Init(Config{Dir: dir, Key: testKeys()[0], RootNotBefore: time.Now().AddDate(-1, 0, 0)}); err != nil {
		t.Fatal(err)
	}
	const writers, each = 6, 5
	var wg sync.WaitGroup
	serials := make(chan *big.Int, writers*each)
	errs := make(chan error, writers*each*2)
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := Open(Config{Dir: dir, Key: testKeys()[0]})
			if err != nil {
				errs <- err
				return
			}
			for range each {
				c, err := s.IssueCertificate(&testKeys()[1].PublicKey, CardSpec{Person: DemoPerson()})
				if err != nil {
					errs <- err
					return
				}
				serials <- c.Serial
				if err := s.Revoke(c.Serial, crlreason.KeyCompromise, time.Time{}); err != nil {
					errs <- err
				}
				if _, err := s.Refresh(time.Hour); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	close(serials)
	for err := range errs {
		t.Fatal(err)
	}
	s, err := Open(Config{Dir: dir, Key: testKeys()[0]})
	if err != nil {
		t.Fatal(err)
	}
	issued, err := s.Issued()
	if err != nil {
		t.Fatal(err)
	}
	if len(issued) != writers*each {
		t.Fatalf("%d certificates recorded, %d issued", len(issued), writers*each)
	}
	for serial := range serials {
		if err := s.Revoke(serial, crlreason.KeyCompromise, time.Time{}); !errors.Is(err, errAlreadyRevoked) {
			t.Fatalf("revocation of %x lost: %v", serial, err)
		}
	}
}
