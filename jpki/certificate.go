package jpki

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"strings"
)

// The certificate policies JPKI uses (JPKI.md).
const (
	// PolicyProduction is the policy of signature certificates on real cards.
	PolicyProduction = "1.2.392.200149.8.5.1.1.20"
	// PolicyTest is the policy of JPKI test cards. Accept it only where configured.
	PolicyTest = "1.2.392.200149.8.5.1.0.20"
)

// maxCertificateSize bounds what the parser reads: a JPKI signature certificate is
// about 1.5 KB.
const maxCertificateSize = 16 << 10

// jpkiPolicyArc is the arc JPKI's certificate policies live under.
const jpkiPolicyArc = "1.2.392.200149.8.5.1"

var (
	oidExtSubjectAltName        = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidExtCRLDistributionPoints = asn1.ObjectIdentifier{2, 5, 29, 31}
)

// SignatureCertificate is a parsed JPKI signature certificate (署名用電子証明書).
// Printing or logging it never shows the personal data: Identity redacts itself, and
// the crypto/x509 form (whose raw bytes hold the basic-4 information, and which fmt
// would dump with %s) is reachable only through X509.
type SignatureCertificate struct {
	// Identity is the basic-4 information from the subjectAltName.
	Identity Identity
	// Policy is the first certificatePolicies OID under the JPKI arc
	// 1.2.392.200149.8.5.1 (PolicyProduction on real cards), or "" if there is none.
	Policy string

	cert func() *x509.Certificate
}

// X509 returns the certificate as crypto/x509 parsed it: public key, serial, validity,
// KeyUsage, Policies. It is personal data as a whole (its Raw bytes hold the
// basic-4 information and its notAfter follows the holder's birthday): never print or
// log it.
func (sc *SignatureCertificate) X509() *x509.Certificate { return sc.cert() }

// ParseSignatureCertificate parses the DER of a JPKI signature certificate and its
// basic-4 information. It checks the form only (see the package documentation for what
// it refuses); trust, validity, key usage, policy and revocation are Verifier's job.
// Every error matches ErrMalformed.
func ParseSignatureCertificate(der []byte) (*SignatureCertificate, error) {
	if len(der) > maxCertificateSize {
		return nil, malformed("certificate of %d bytes, at most %d accepted", len(der), maxCertificateSize)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, malformed("%v", err)
	}
	var san []byte
	for _, e := range cert.Extensions {
		if e.Id.Equal(oidExtSubjectAltName) {
			san = e.Value
		}
	}
	if san == nil {
		return nil, malformed("no subjectAltName (a user-authentication certificate?)")
	}
	id, err := parseSubjectAltName(san)
	if err != nil {
		return nil, err
	}
	sc := &SignatureCertificate{Identity: id, cert: func() *x509.Certificate { return cert }}
	for _, p := range cert.Policies {
		if s := p.String(); strings.HasPrefix(s, jpkiPolicyArc+".") {
			sc.Policy = s
			break
		}
	}
	return sc, nil
}

// CertHash is HMAC-SHA256 under key over the certificate's issuer name and serial
// number: what other packages store to refer to this JPKI certificate (for example in a
// derived-certificate link) instead of its serial. RevokedEntry.CertHash yields the
// same value for the CRL entry that revokes it. It panics on a key shorter than
// MinHashKeyLen.
func (sc *SignatureCertificate) CertHash(key []byte) Hash {
	c := sc.X509()
	return certHash(key, c.RawIssuer, c.SerialNumber)
}

// canonicalName renders a DER-encoded Name as its RFC 4514 string, so that two
// encodings of the same name (PrintableString vs UTF8String) compare equal. A name that
// does not parse is kept as hex of its bytes, prefixed so it cannot collide with a
// parsed one.
func canonicalName(raw []byte) string {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(raw, &rdns); err != nil || len(rest) != 0 {
		return "#raw:" + hex.EncodeToString(raw)
	}
	return rdns.String()
}
