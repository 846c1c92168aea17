package ca

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca/crl"
)

// Issuance is two steps, as in Boulder: prepare, a pure function of the order,
// the issuer's snapshot, the time and the serial that returns the linted
// TBSCertificate with what the intent records; then the leader's signing
// (signHere: intent, HSM signature, issued record). prepareOrder is the shell
// around prepare: it reads the state, asks the clock and draws the serial.

// prepareOrder reads the issuer o is signed under (from a current read if
// current: this node's state may lag an issuer's installation or rollover), takes
// the time from the authority's clock and a fresh serial, and prepares o. It runs
// on whichever node got the request.
func (a *Authority) prepareOrder(ctx context.Context, o order, current bool) (*signRequest, *issuerState, error) {
	if err := checkTemplate(o); err != nil {
		return nil, nil, err
	}
	st, err := a.issuerOf(ctx, o, current)
	if err != nil {
		return nil, nil, err
	}
	now := a.now()
	serial, err := newSerial(now)
	if err != nil {
		return nil, nil, err
	}
	sr, err := prepare(o, st, a.cfg.URLs, now, serial, !a.lintOff)
	return sr, st, err
}

// issuerOf reads the issuer o names, or the active one, and refuses one that
// does not sign o's kind (signsUnder).
func (a *Authority) issuerOf(ctx context.Context, o order, current bool) (*issuerState, error) {
	view := a.c.View
	if current {
		view = func(fn func(*bbolt.Tx) error) error { return a.c.ViewCurrent(ctx, fn) }
	}
	var st *issuerState
	err := view(func(tx *bbolt.Tx) error {
		if o.issuer != "" {
			var status issuerStatus
			var err error
			st, status, err = a.stateOf(tx, o.issuer)
			if err == nil && !signsUnder(status, o.kind) {
				err = fmt.Errorf("%w: issuer %s is %s", ErrNoActiveIssuer, o.issuer, status)
			}
			return err
		}
		id, err := activeIssuerID(tx)
		if err == nil {
			st, _, err = a.stateOf(tx, id)
		}
		return err
	})
	return st, err
}

// prepare builds the TBSCertificate of o under the issuer st at now (truncated to
// the second) with serial, lints it unless lint is false (benchmarks), and returns
// it with what the intent records. It reads nothing but its arguments and writes
// nothing (st's linters are a cache), so the same inputs give the same
// TBSCertificate: the state, the clock and the random serial are the caller's.
func prepare(o order, st *issuerState, urls URLs, now time.Time, serial *big.Int, lint bool) (*signRequest, error) {
	if err := checkTemplate(o); err != nil {
		return nil, err
	}
	d := o.Decision
	now = now.UTC().Truncate(time.Second)
	notAfter := d.NotAfter.UTC().Truncate(time.Second)
	if o.lifetime > 0 {
		notAfter = now.Add(o.lifetime)
	}
	if notAfter.After(st.cert.NotAfter) {
		notAfter = st.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("%w: notAfter %s", ErrExpired, notAfter.Format(time.RFC3339))
	}
	ski, err := subjectKeyID(o.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTemplate, err)
	}
	t := *d.Template
	t.SerialNumber = serial
	t.NotBefore, t.NotAfter = now, notAfter
	t.SubjectKeyId = ski
	t.AuthorityKeyId = nil // from the issuer's subject key ID
	t.BasicConstraintsValid, t.IsCA, t.MaxPathLen, t.MaxPathLenZero = true, false, 0, false
	t.CRLDistributionPoints = []string{urls.CRLURL(st.id, crl.Shard(serial, st.shards))}
	t.OCSPServer = []string{urls.OCSP}
	t.IssuingCertificateURL = []string{urls.IssuerURL(st.id)}
	t.SignatureAlgorithm = x509.UnknownSignatureAlgorithm

	l, err := st.linter(d.SkipLints)
	if err != nil {
		return nil, err
	}
	var tbs []byte
	if lint {
		tbs, err = l.lint(&t, o.PublicKey)
	} else {
		tbs, err = l.build(&t, o.PublicKey)
	}
	if err != nil {
		return nil, err
	}
	sr := &signRequest{Issuer: st.id, Serial: serial.Bytes(), TBS: tbs, Profile: d.Profile,
		PolicyVersion: d.PolicyVersion, Link: o.Link, Person: o.Person, NotAfter: notAfter.UnixNano(),
		Kind: uint8(o.kind), Node: o.node, Actor: o.actor, MaxPerPerson: d.MaxPerPerson,
		PersonMode: uint8(o.PersonMode), NameBirth: o.NameBirth, Hint: o.Hint, NonceHash: o.NonceHash}
	if !o.NonceExpires.IsZero() {
		sr.NonceExpires = o.NonceExpires.UnixNano()
	}
	return sr, nil
}

// checkTemplate refuses a template that asks for what only the authority sets: a
// CA, certificate or CRL signing, an extension of reservedExtensions (a
// responder's ocsp-nocheck aside).
func checkTemplate(o order) error {
	tmpl := o.Decision.Template
	if tmpl.IsCA || tmpl.KeyUsage&(x509.KeyUsageCertSign|x509.KeyUsageCRLSign) != 0 {
		return fmt.Errorf("%w: a derived certificate cannot be a CA or sign certificates or CRLs", ErrTemplate)
	}
	for _, e := range tmpl.ExtraExtensions {
		if slices.ContainsFunc(reservedExtensions, e.Id.Equal) && !(o.kind == Responder && e.Id.Equal(oidOCSPNoCheck)) {
			return fmt.Errorf("%w: the template may not set extension %s", ErrTemplate, e.Id)
		}
	}
	return nil
}

// serialEpoch is the origin of the time prefix of serials.
var serialEpoch = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)

// newSerial makes a positive 16-byte serial: 4 bytes of seconds since 2020 (the top
// bit clear until 2088), then 96 bits of CSPRNG output. The prefix keeps serials
// roughly in issuance order, so the state's serial-keyed buckets grow at their end
// instead of rewriting random pages (a third of the Raft apply cost at high
// rates); the random part is what makes serials unpredictable and unique.
func newSerial(now time.Time) (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b[4:]); err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint32(b, uint32(max(now.Sub(serialEpoch)/time.Second, 1))&0x7fffffff)
	return new(big.Int).SetBytes(b), nil
}

// Extensions the authority sets itself; a template may not bring its own.
var reservedExtensions = []asn1.ObjectIdentifier{
	{2, 5, 29, 14},                  // subjectKeyIdentifier
	{2, 5, 29, 15},                  // keyUsage (Template.KeyUsage)
	{2, 5, 29, 19},                  // basicConstraints
	{2, 5, 29, 30},                  // nameConstraints
	{2, 5, 29, 31},                  // cRLDistributionPoints
	{2, 5, 29, 35},                  // authorityKeyIdentifier
	{1, 3, 6, 1, 5, 5, 7, 1, 1},     // authorityInfoAccess
	{1, 3, 6, 1, 5, 5, 7, 48, 1, 5}, // ocsp-nocheck: responder certificates only
}

// subjectKeyID is the RFC 7093 §2 method 1 key identifier: the leftmost 160 bits of
// the SHA-256 of the subjectPublicKey bits.
func subjectKeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	var spki struct {
		Algorithm asn1.RawValue
		Key       asn1.BitString
	}
	if _, err := asn1.Unmarshal(der, &spki); err != nil {
		return nil, err
	}
	h := sha256.Sum256(spki.Key.Bytes)
	return h[:20], nil
}

// linter returns the issuer's linter for a set of skipped lints (made once: an RSA
// throwaway key takes a while).
func (st *issuerState) linter(skip []string) (*linter, error) {
	skip = slices.Clone(skip)
	slices.Sort(skip)
	key := strings.Join(skip, ",")
	st.lintLock.Lock()
	defer st.lintLock.Unlock()
	if l, ok := st.linters[key]; ok {
		return l, nil
	}
	l, err := newLinter(st.cert, skip)
	if err != nil {
		return nil, err
	}
	st.linters[key] = l
	return l, nil
}
