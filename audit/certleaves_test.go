package audit

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"
)

// personalKey turns personal data into keyed hashes (HMAC-SHA256) for the log. An
// auditor can check that two leaves are about the same value, and the operator can
// show which value a hash stands for, but without the key nobody can recover a name
// or a birth date from the log, not even by trying every date.
type personalKey struct {
	key []byte
}

// newPersonalKey wraps a secret of at least 32 bytes (it is copied).
func newPersonalKey(secret []byte) (personalKey, error) {
	if len(secret) < 32 {
		return personalKey{}, fmt.Errorf("audit: personal-data key: %d bytes, want at least 32", len(secret))
	}
	return personalKey{key: append([]byte(nil), secret...)}, nil
}

// Hash is the keyed hash of one attribute's value. The attribute name ("name",
// "birth", "address", "jpki-serial"…) is part of the input, so equal values of
// different attributes do not hash alike.
func (k personalKey) Hash(attribute, value string) []byte {
	m := hmac.New(sha256.New, k.key)
	m.Write([]byte(attribute))
	m.Write([]byte{0})
	m.Write([]byte(value))
	return m.Sum(nil)
}

// issuedCert is an issued derived certificate, as the CA hands it to the log.
type issuedCert struct {
	Cert    []byte // the certificate's DER: the log keeps only its SHA-256
	Profile string // the issuance profile's name
	// Personal holds the attributes that identify the person (name, birth date,
	// address, the JPKI certificate's serial…) by attribute name. The log keeps only
	// their keyed hashes.
	Personal map[string]string
}

// issuedData is the data of a cert.issued leaf.
type issuedData struct {
	CertSHA256  []byte            `cbor:"cert_sha256"`
	IssuerKeyID []byte            `cbor:"issuer_key_id,omitempty"`
	NotBefore   time.Time         `cbor:"not_before"`
	NotAfter    time.Time         `cbor:"not_after"`
	Profile     string            `cbor:"profile"`
	Personal    map[string][]byte `cbor:"personal,omitempty"`
}

// newIssuedLeaf builds the leaf of an issuance. The serial is read from the
// certificate, so the leaf cannot name another one; the certificate itself, whose
// subject names the person, appears only as its SHA-256.
func newIssuedLeaf(m Meta, k personalKey, iss issuedCert) (Leaf, error) {
	cert, err := x509.ParseCertificate(iss.Cert)
	if err != nil {
		return Leaf{}, fmt.Errorf("audit: issued leaf: %w", err)
	}
	if len(iss.Personal) > 0 && len(k.key) == 0 {
		return Leaf{}, errors.New("audit: issued leaf: personal data but no personal-data key")
	}
	d := issuedData{
		CertSHA256:  certHash(iss.Cert),
		IssuerKeyID: cert.AuthorityKeyId,
		NotBefore:   cert.NotBefore.UTC(),
		NotAfter:    cert.NotAfter.UTC(),
		Profile:     iss.Profile,
	}
	if len(iss.Personal) > 0 {
		d.Personal = make(map[string][]byte, len(iss.Personal))
		for attr, v := range iss.Personal {
			d.Personal[attr] = k.Hash(attr, v)
		}
	}
	return NewLeaf(m, typeIssued, cert.SerialNumber, d)
}

// revoked is a revocation (or a hold: reason 6, certificateHold).
type revoked struct {
	Serial *big.Int
	Reason int // RFC 5280 CRLReason code
}

type revokedData struct {
	Reason int `cbor:"reason"`
}

// newRevokedLeaf builds the leaf of a revocation.
func newRevokedLeaf(m Meta, r revoked) (Leaf, error) {
	if r.Serial == nil || r.Serial.Sign() <= 0 {
		return Leaf{}, errors.New("audit: revoked leaf: serial must be positive")
	}
	if r.Reason < 0 || r.Reason > 10 || r.Reason == 7 {
		return Leaf{}, fmt.Errorf("audit: revoked leaf: reason %d is not an RFC 5280 CRLReason", r.Reason)
	}
	return NewLeaf(m, typeRevoked, r.Serial, revokedData{Reason: r.Reason})
}
