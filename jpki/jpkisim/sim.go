package jpkisim

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/jpki"
)

// The files of a state directory.
const (
	rootFile    = "root.pem"     // the root certificate: the anchor verifiers configure
	rootKeyFile = "root-key.pem" // the root key (PKCS#8, mode 0600), when the sim made it
	crlFile     = "crl.der"      // the latest CRL (DER)
	stateFile   = "state.json"
	lockFile    = ".lock"
)

// defaultCRLValidity is how long a published CRL is valid (nextUpdate − thisUpdate):
// J-LIS publishes daily.
const defaultCRLValidity = 24 * time.Hour

// Errors callers act on.
var (
	errUnknownSerial  = errors.New("jpkisim: no certificate with that serial")
	errAlreadyRevoked = errors.New("jpkisim: certificate already revoked")
	errReason         = errors.New("jpkisim: not a reason J-LIS uses")
	errExists         = errors.New("jpkisim: state directory already initialised")
)

// Config says where a Sim keeps its state and what signs.
type Config struct {
	// Dir is the state directory: root certificate, issued certificates,
	// revocations, CRL number and the latest CRL.
	Dir string
	// Key is the root key. If nil, the sim uses RootKeyFile in Dir, which Init makes
	// (RSA-2048) when Key is nil.
	Key crypto.Signer
	// Now is the clock for defaults (issue times, CRL times); time.Now if nil.
	Now func() time.Time
	// RootNotBefore and RootNotAfter are the validity of the root Init makes;
	// zero fields mean one hour ago and ten years on (a J-LIS generation is
	// valid for ten years). Open reads the root from Dir and ignores them.
	RootNotBefore, RootNotAfter time.Time
}

// Sim is a stand-in J-LIS signature CA over one state directory. It is safe for
// concurrent use, and several processes may share a directory (changes are made
// under a lock file).
type Sim struct {
	dir  string
	key  crypto.Signer
	root *x509.Certificate
	now  func() time.Time
	mu   sync.Mutex // serialises this process's changes; the lock file serialises processes

	refreshCheck time.Duration // how often ServeCRL looks for changes (refreshCheck if 0)
}

// Init makes a new state directory (created if missing; it must not hold a sim
// already) with a new root certificate (valid from cfg.RootNotBefore to
// cfg.RootNotAfter), and returns the Sim.
func Init(cfg Config) (*Sim, error) {
	if cfg.Dir == "" {
		return nil, errors.New("jpkisim: no state directory")
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("jpkisim: %w", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.Dir, stateFile)); err == nil {
		return nil, fmt.Errorf("%w: %s", errExists, cfg.Dir)
	}
	s := &Sim{dir: cfg.Dir, key: cfg.Key, now: clock(cfg.Now)}
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	if s.key == nil {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			return nil, fmt.Errorf("jpkisim: root key: %w", err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, fmt.Errorf("jpkisim: root key: %w", err)
		}
		if err := writeFile(filepath.Join(s.dir, rootKeyFile), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			return nil, err
		}
		s.key = k
	}
	now := s.now()
	notBefore, notAfter := cfg.RootNotBefore, cfg.RootNotAfter
	if notBefore.IsZero() {
		notBefore = now.Add(-time.Hour)
	}
	if notAfter.IsZero() {
		notAfter = notBefore.AddDate(10, 0, 0)
	}
	if s.root, err = newRoot(s.key, notBefore, notAfter); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(s.dir, rootFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.root.Raw}), 0o644); err != nil {
		return nil, err
	}
	if err := s.save(&state{Version: stateVersion}); err != nil {
		return nil, err
	}
	return s, nil
}

// Open returns the Sim of an initialised state directory.
func Open(cfg Config) (*Sim, error) {
	if cfg.Dir == "" {
		return nil, errors.New("jpkisim: no state directory")
	}
	s := &Sim{dir: cfg.Dir, key: cfg.Key, now: clock(cfg.Now)}
	data, err := os.ReadFile(filepath.Join(s.dir, rootFile))
	if err != nil {
		return nil, fmt.Errorf("jpkisim: %w (run init first)", err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("jpkisim: %s: no CERTIFICATE block", rootFile)
	}
	if s.root, err = x509.ParseCertificate(b.Bytes); err != nil {
		return nil, fmt.Errorf("jpkisim: %s: %w", rootFile, err)
	}
	if s.key == nil {
		if s.key, err = readKey(filepath.Join(s.dir, rootKeyFile)); err != nil {
			return nil, err
		}
	}
	if err := s.root.CheckSignature(s.root.SignatureAlgorithm, s.root.RawTBSCertificate, s.root.Signature); err != nil {
		return nil, fmt.Errorf("jpkisim: %s is not self-signed: %w", rootFile, err)
	}
	if !publicKeysEqual(s.key.Public(), s.root.PublicKey) {
		return nil, errors.New("jpkisim: the root key does not match the root certificate")
	}
	if _, err := s.load(); err != nil {
		return nil, err
	}
	return s, nil
}

// Root returns the root certificate: what a verifier configures as its J-LIS anchor.
func (s *Sim) Root() *x509.Certificate { return s.root }

// Dir returns the state directory.
func (s *Sim) Dir() string { return s.dir }

// RootPath is the file that holds the root certificate (PEM): the anchor a
// node's jpki.anchors names.
func (s *Sim) RootPath() string { return filepath.Join(s.dir, rootFile) }

// VerifierConfig is the jpki section of a node's configuration that trusts the
// sim: its root the one anchor, its CRL file (CRLPath) the revocation source.
// Policies are left empty, which accepts production cards only; a verifier of
// test cards adds jpki.PolicyTest.
func (s *Sim) VerifierConfig() jpki.Config {
	return jpki.Config{
		Anchors:    []string{s.RootPath()},
		Revocation: jpki.RevocationConfig{Kind: jpki.RevocationCRL, File: s.CRLPath()},
	}
}

// CRLPath is the file PublishCRL writes: what a jpki CRLSource with File reads.
func (s *Sim) CRLPath() string { return filepath.Join(s.dir, crlFile) }

// Certificate is a signature certificate the sim issued.
type Certificate struct {
	Serial *big.Int
	DER    []byte
}

// CardSpec says what signature certificate to issue.
type CardSpec struct {
	Person Person
	// Policy is the certificate policy OID: jpki.PolicyTest if empty (the OID of JPKI
	// test cards), or jpki.PolicyProduction for a certificate that looks like a real
	// card's.
	Policy string
	// NotBefore defaults to now; NotAfter to the end of the person's fifth birthday
	// after NotBefore (a card's certificate ends then, or when the card expires).
	NotBefore, NotAfter time.Time
}

// IssueCertificate issues a signature certificate for pub (an RSA key, as on a card)
// and records it. Tests that need many certificates use it with keys made in memory;
// IssueCard is the faithful path, with the key in a token.
func (s *Sim) IssueCertificate(pub crypto.PublicKey, spec CardSpec) (*Certificate, error) {
	return s.issue(pub, spec, "")
}

func (s *Sim) issue(pub crypto.PublicKey, spec CardSpec, token string) (*Certificate, error) {
	if err := spec.Person.check(); err != nil {
		return nil, err
	}
	if _, ok := pub.(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("jpkisim: a signature certificate's key is RSA, not %T", pub)
	}
	if spec.Policy == "" {
		spec.Policy = jpki.PolicyTest
	}
	policies, err := policiesExtension(spec.Policy)
	if err != nil {
		return nil, err
	}
	now := s.now()
	if spec.NotBefore.IsZero() {
		spec.NotBefore = now
	}
	if spec.NotAfter.IsZero() {
		spec.NotAfter = spec.Person.fifthBirthday(spec.NotBefore)
	}
	if !spec.NotAfter.After(spec.NotBefore) {
		return nil, errors.New("jpkisim: notAfter is not after notBefore")
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	serial, err := st.newSerial()
	if err != nil {
		return nil, err
	}
	cn, err := opaqueCN(spec.NotBefore)
	if err != nil {
		return nil, err
	}
	p := spec.Person
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		RawSubject:   cardSubject(p.Prefecture, p.Municipality, cn),
		NotBefore:    spec.NotBefore,
		NotAfter:     spec.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		ExtraExtensions: []pkix.Extension{
			policies,
			{Id: oidExtIssuerAltName, Value: jlisAltName()},
			{Id: oidExtCRLDP, Value: crldpExtension(crlDistributionPoint(p.Prefecture, p.Municipality))},
			sanExtension(p.otherNames()),
		},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.root, pub, s.key)
	if err != nil {
		return nil, fmt.Errorf("jpkisim: sign certificate: %w", err)
	}
	st.Certificates = append(st.Certificates, record{Serial: hex.EncodeToString(serial.Bytes()), DER: der, Token: token, IssuedAt: now})
	st.Revision++
	if err := s.save(st); err != nil {
		return nil, err
	}
	return &Certificate{Serial: serial, DER: der}, nil
}

// Person returns the person a certificate the sim issued was issued to, as a
// re-issue needs it (a move keeps everything but the address).
func (s *Sim) Person(serial *big.Int) (Person, error) {
	st, err := s.load()
	if err != nil {
		return Person{}, err
	}
	r := st.find(serial)
	if r == nil {
		return Person{}, errUnknownSerial
	}
	return personOf(r.DER)
}

// Revoke records the revocation of the certificate with serial for reason (one of
// crlreason.Unspecified through crlreason.CertificateHold, the reasons J-LIS uses)
// at time at (now if zero). It takes effect in the next CRL published.
func (s *Sim) Revoke(serial *big.Int, reason crlreason.Reason, at time.Time) error {
	if reason < crlreason.Unspecified || reason > crlreason.CertificateHold {
		return fmt.Errorf("%w: %d", errReason, reason)
	}
	if at.IsZero() {
		at = s.now()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock()
	if err != nil {
		return err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return err
	}
	r := st.find(serial)
	switch {
	case r == nil:
		return errUnknownSerial
	case r.Revoked != nil:
		return errAlreadyRevoked
	}
	r.Revoked = &revocation{Reason: reason, At: at.UTC().Truncate(time.Second)}
	st.Revision++
	return s.save(st)
}

// PublishCRL signs a complete CRL (no issuingDistributionPoint, so it covers every
// certificate of the root whatever its CRLDP) listing every revocation made at or
// before thisUpdate of a certificate not expired then, with the next CRL number, and
// writes it to CRLPath. Zero times mean now and thisUpdate + DefaultCRLValidity.
func (s *Sim) PublishCRL(thisUpdate, nextUpdate time.Time) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock()
	if err != nil {
		return nil, err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	return s.publish(st, thisUpdate, nextUpdate)
}

// Refresh publishes a new CRL when anything was issued or revoked since the last
// one, or when the last one's thisUpdate is older than maxAge (or there is none). It
// reports whether it published.
func (s *Sim) Refresh(maxAge time.Duration) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	unlock, err := s.lock()
	if err != nil {
		return false, err
	}
	defer unlock()
	st, err := s.load()
	if err != nil {
		return false, err
	}
	_, statErr := os.Stat(s.CRLPath())
	if statErr == nil && st.PublishedRevision == st.Revision && s.now().Sub(st.PublishedAt) < maxAge {
		return false, nil
	}
	_, err = s.publish(st, time.Time{}, time.Time{})
	return err == nil, err
}

func (s *Sim) publish(st *state, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	if thisUpdate.IsZero() {
		thisUpdate = s.now()
	}
	if nextUpdate.IsZero() {
		nextUpdate = thisUpdate.Add(defaultCRLValidity)
	}
	rl := &x509.RevocationList{
		Number:     big.NewInt(st.CRLNumber + 1),
		ThisUpdate: thisUpdate,
		NextUpdate: nextUpdate,
	}
	for _, r := range st.Certificates {
		if r.Revoked == nil || r.Revoked.At.After(thisUpdate) {
			continue
		}
		c, err := x509.ParseCertificate(r.DER)
		if err != nil {
			return nil, fmt.Errorf("jpkisim: state: certificate %s: %w", r.Serial, err)
		}
		if c.NotAfter.Before(thisUpdate) {
			continue // expired certificates leave the CRL, as J-LIS's do
		}
		rl.RevokedCertificateEntries = append(rl.RevokedCertificateEntries, x509.RevocationListEntry{
			SerialNumber:   c.SerialNumber,
			RevocationTime: r.Revoked.At,
			// Zero (unspecified) leaves the reasonCode extension out, as RFC 5280 asks.
			ReasonCode: int(r.Revoked.Reason),
		})
	}
	der, err := x509.CreateRevocationList(rand.Reader, rl, s.root, s.key)
	if err != nil {
		return nil, fmt.Errorf("jpkisim: sign CRL: %w", err)
	}
	st.CRLNumber++
	st.PublishedRevision = st.Revision
	st.PublishedAt = thisUpdate.UTC()
	if err := s.save(st); err != nil {
		return nil, err
	}
	if err := writeFile(s.CRLPath(), der, 0o644); err != nil {
		return nil, err
	}
	return der, nil
}

// Issued lists the certificates the sim issued, oldest first.
func (s *Sim) Issued() ([]Issuance, error) {
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	out := make([]Issuance, 0, len(st.Certificates))
	for _, r := range st.Certificates {
		serial, _ := new(big.Int).SetString(r.Serial, 16)
		i := Issuance{Certificate: Certificate{Serial: serial, DER: r.DER}, Token: r.Token, IssuedAt: r.IssuedAt}
		if r.Revoked != nil {
			i.Revoked, i.Reason, i.RevokedAt = true, r.Revoked.Reason, r.Revoked.At
		}
		out = append(out, i)
	}
	return out, nil
}

// Issuance is a certificate the sim issued, kept in its state directory, and
// what became of it.
type Issuance struct {
	Certificate
	Token     string // the card's token label ("" when issued for a key outside a token)
	IssuedAt  time.Time
	Revoked   bool
	Reason    crlreason.Reason
	RevokedAt time.Time
}

func newRoot(key crypto.Signer, notBefore, notAfter time.Time) (*x509.Certificate, error) {
	if _, ok := key.Public().(*rsa.PublicKey); !ok {
		return nil, fmt.Errorf("jpkisim: the root key must be RSA (J-LIS's is RSA-2048), not %T", key.Public())
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		RawSubject:            rootDN(),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		ExtraExtensions:       []pkix.Extension{{Id: oidExtSubjectAltName, Value: jlisAltName()}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("jpkisim: sign root: %w", err)
	}
	return x509.ParseCertificate(der)
}

func randomSerial() (*big.Int, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	b[0] &= 0x7f
	b[0] |= 0x01 // eight bytes, positive, never zero
	return new(big.Int).SetBytes(b), nil
}

// opaqueCN is a subject CN of the form real cards carry: the issue date and an
// opaque reference.
func opaqueCN(t time.Time) (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	const letters, digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789"
	out := []byte(t.In(time.FixedZone("JST", 9*60*60)).Format("20060102"))
	out = append(out, letters[int(b[0])%26], letters[int(b[1])%26])
	for _, c := range b[2:] {
		out = append(out, digits[int(c)%10])
	}
	return string(out), nil
}

func personOf(der []byte) (Person, error) {
	sc, err := jpki.ParseSignatureCertificate(der)
	if err != nil {
		return Person{}, err
	}
	id := sc.Identity
	p := Person{
		Name: id.Name(), NameSubstitutes: id.NameSubstitutes(), Gender: id.Gender(), Birth: id.DateOfBirth(),
		Address: id.Address(), AddressSubstitutes: id.AddressSubstitutes(),
	}
	var ls []string
	for _, a := range sc.X509().Subject.Names {
		if a.Type.Equal(oidAttrL) {
			if v, ok := a.Value.(string); ok {
				ls = append(ls, v)
			}
		}
	}
	if len(ls) != 2 {
		return Person{}, errors.New("jpkisim: certificate subject has no prefecture and municipality")
	}
	p.Prefecture, p.Municipality = ls[0], ls[1]
	return p, nil
}

func clock(now func() time.Time) func() time.Time {
	if now == nil {
		now = time.Now
	}
	return func() time.Time { return now().UTC().Truncate(time.Second) }
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

func readKey(path string) (crypto.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("jpkisim: root key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("jpkisim: root key %s is readable by group or others (want 0600)", path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jpkisim: root key: %w", err)
	}
	b, _ := pem.Decode(data)
	if b == nil || b.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("jpkisim: root key %s: no PRIVATE KEY block", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("jpkisim: root key %s: %w", path, err)
	}
	signer, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("jpkisim: root key %s: %T is not a signer", path, k)
	}
	return signer, nil
}
