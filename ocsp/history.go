package ocsp

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"go.etcd.io/bbolt"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/crlreason"
)

// The status of a certificate at a past time T, from the replicated state: the
// certificate's record (issuance, and its revocation or hold with time and
// reason, which stay once made) and the CRLs of its shard, every one of which is
// kept. The record alone cannot say everything: a hold released leaves no trace
// in it, and revoking a held certificate replaces the hold's time. The CRLs can:
// the CRL current at T lists every hold and revocation in force at its
// thisUpdate, and shard CRLs follow every change within seconds. So the answer
// is the record's revocation or hold when it was made by T, else the entry the
// CRL current at T has for the serial, else good; the CRL current at T and the
// first one after it go with the answer as the CA-signed proof.

// Errors of a status question; each has its problem type (historyProblems).
var (
	// errUnknownCA: no CA certificate of the cluster has that ID.
	errUnknownCA = errors.New("ocsp: unknown CA")
	// errUnknownSerial: the CA never issued a certificate with that serial
	// (nor intended to), or has only an intent in flight for it.
	errUnknownSerial = errors.New("ocsp: unknown serial")
	// errFutureTime: T is after the node's clock; no one knows that status yet.
	errFutureTime = errors.New("ocsp: time in the future")
)

// StatusAt values.
const (
	atGood    = "good"
	atRevoked = "revoked"
	atHeld    = "held" // certificateHold: revoked, reason 6, until released
	atUnknown = "unknown"
)

// statusAt is the status of one certificate at T with what proves it.
type statusAt struct {
	issuer ca.Issuer
	serial *big.Int
	at     time.Time
	rec    ca.Record
	cert   *x509.Certificate // nil for a resolved intent (never delivered)

	status    string
	reason    int       // when revoked or held at T
	revokedAt time.Time // when revoked or held at T

	shard               int
	current, next       crl.Meta
	hasCurrent, hasNext bool
	currentDER, nextDER []byte
	fromCRL             bool // the hold or revocation comes from the CRL current at T
}

// issued is when the certificate came to exist: its issuance's commit, or for a
// resolved intent the intent's.
func (s *statusAt) issued() time.Time {
	if !s.rec.IssuedAt.IsZero() {
		return s.rec.IssuedAt
	}
	return s.rec.IntentAt
}

func (s *statusAt) expired() bool { return !s.at.Before(s.rec.NotAfter) }

// lookupStatusAt answers the status of the CA's serial at t, as of now.
func lookupStatusAt(tx *bbolt.Tx, caID string, serial *big.Int, t, now time.Time) (*statusAt, error) {
	if t.After(now) {
		return nil, fmt.Errorf("%w: %s is after %s", errFutureTime, t.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	is, err := ca.Read(tx).LookupIssuer(caID)
	if errors.Is(err, ca.ErrNotFound) || (err == nil && is.Cert == nil) {
		return nil, fmt.Errorf("%w: %q", errUnknownCA, caID)
	}
	if err != nil {
		return nil, err
	}
	rec, err := ca.Read(tx).Lookup(serial)
	if errors.Is(err, ca.ErrNotFound) || (err == nil && (rec.Issuer != caID || rec.Status == ca.Pending)) {
		return nil, fmt.Errorf("%w: %x under %s", errUnknownSerial, serial, caID)
	}
	if err != nil {
		return nil, err
	}
	s := &statusAt{issuer: is, serial: serial, at: t, rec: rec, shard: crl.Shard(serial, is.CRLShards)}
	if rec.DER != nil {
		if s.cert, err = x509.ParseCertificate(rec.DER); err != nil {
			return nil, fmt.Errorf("ocsp: certificate %x: %w", serial, err)
		}
	}
	s.current, s.next, s.hasCurrent, s.hasNext, err = crl.Read(tx).Around(caID, s.shard, t)
	if err != nil {
		return nil, err
	}
	if s.hasCurrent {
		if s.currentDER, err = crl.Read(tx).DER(s.current); err != nil {
			return nil, err
		}
	}
	if s.hasNext {
		if s.nextDER, err = crl.Read(tx).DER(s.next); err != nil {
			return nil, err
		}
	}
	return s, s.decide()
}

// decide sets the status at T.
func (s *statusAt) decide() error {
	switch {
	case s.at.Before(s.issued()):
		s.status = atUnknown
		return nil
	case (s.rec.Status == ca.Revoked || s.rec.Status == ca.Held) && !s.rec.RevokedAt.After(s.at):
		s.status, s.reason, s.revokedAt = atRevoked, int(s.rec.Reason), s.rec.RevokedAt
		if s.rec.Status == ca.Held {
			s.status = atHeld
		}
		return nil
	}
	s.status = atGood
	if !s.hasCurrent {
		return nil
	}
	e, found, err := crlEntry(s.currentDER, s.serial)
	if err != nil || !found || e.at.After(s.at) {
		return err
	}
	// Listed at T, and the record does not say so: a hold since released, or
	// one the certificate's revocation later replaced.
	s.status, s.reason, s.revokedAt, s.fromCRL = atRevoked, e.reason, e.at, true
	if e.reason == int(crlreason.CertificateHold) {
		s.status = atHeld
	}
	return nil
}

// crlEntry finds serial's entry in a CRL the state holds (signed by the CA,
// checked when it was published). A shard CRL at a million revocations has
// 62,500 entries: it is scanned in place, comparing each entry's serial bytes,
// and only the match is decoded (x509.ParseRevocationList took 250 ms for it,
// BenchmarkDecideMillion).
func crlEntry(der []byte, serial *big.Int) (revocation, bool, error) {
	var want cryptobyte.Builder
	want.AddASN1BigInt(serial)
	wantDER, err := want.Bytes()
	if err != nil {
		return revocation{}, false, err
	}
	bad := fmt.Errorf("%w: stored CRL does not parse", errStoredCRL)
	in := cryptobyte.String(der)
	var list, tbs cryptobyte.String
	if !in.ReadASN1(&list, cbasn1.SEQUENCE) || !list.ReadASN1(&tbs, cbasn1.SEQUENCE) ||
		!tbs.SkipOptionalASN1(cbasn1.INTEGER) || !tbs.SkipASN1(cbasn1.SEQUENCE) || !tbs.SkipASN1(cbasn1.SEQUENCE) ||
		!skipTime(&tbs) || (tbs.PeekASN1Tag(cbasn1.UTCTime) || tbs.PeekASN1Tag(cbasn1.GeneralizedTime)) && !skipTime(&tbs) {
		return revocation{}, false, bad
	}
	if !tbs.PeekASN1Tag(cbasn1.SEQUENCE) {
		return revocation{}, false, nil // no revokedCertificates
	}
	var entries cryptobyte.String
	if !tbs.ReadASN1(&entries, cbasn1.SEQUENCE) {
		return revocation{}, false, bad
	}
	for !entries.Empty() {
		var e cryptobyte.String
		if !entries.ReadASN1(&e, cbasn1.SEQUENCE) {
			return revocation{}, false, bad
		}
		if !bytes.HasPrefix(e, wantDER) {
			continue
		}
		e = e[len(wantDER):]
		r := revocation{reason: int(crlreason.Unspecified)}
		if !readTime(&e, &r.at) {
			return revocation{}, false, bad
		}
		var exts cryptobyte.String
		if !e.ReadOptionalASN1(&exts, nil, cbasn1.SEQUENCE) {
			return revocation{}, false, bad
		}
		for !exts.Empty() {
			var ext, oid, value cryptobyte.String
			if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) || !ext.ReadASN1(&oid, cbasn1.OBJECT_IDENTIFIER) ||
				!ext.SkipOptionalASN1(cbasn1.BOOLEAN) || !ext.ReadASN1(&value, cbasn1.OCTET_STRING) {
				return revocation{}, false, bad
			}
			if bytes.Equal(oid, oidReasonCode) {
				var code int
				if !value.ReadASN1Enum(&code) {
					return revocation{}, false, bad
				}
				r.reason = code
			}
		}
		return r, true, nil
	}
	return revocation{}, false, nil
}

// revocation is a CRL entry: when, and why.
type revocation struct {
	at     time.Time
	reason int
}

// errStoredCRL: a CRL in the state does not parse (it was checked when published).
var errStoredCRL = errors.New("ocsp: stored CRL")

// oidReasonCode is id-ce-cRLReasons (2.5.29.21), DER contents.
var oidReasonCode = []byte{0x55, 0x1d, 0x15}

func skipTime(s *cryptobyte.String) bool {
	var t time.Time
	return readTime(s, &t)
}

// readTime reads a CRL's Time (UTCTime or GeneralizedTime).
func readTime(s *cryptobyte.String, t *time.Time) bool {
	switch {
	case s.PeekASN1Tag(cbasn1.UTCTime):
		return s.ReadASN1UTCTime(t)
	case s.PeekASN1Tag(cbasn1.GeneralizedTime):
		return s.ReadASN1GeneralizedTime(t)
	}
	return false
}

// reasonNames are RFC 5280's CRLReason names.
var reasonNames = [...]string{"unspecified", "keyCompromise", "cACompromise", "affiliationChanged",
	"superseded", "cessationOfOperation", "certificateHold", "", "removeFromCRL", "privilegeWithdrawn", "aACompromise"}

func reasonName(code int) string {
	if code >= 0 && code < len(reasonNames) && reasonNames[code] != "" {
		return reasonNames[code]
	}
	return fmt.Sprintf("reason(%d)", code)
}
