package ocsp

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// certStatus is what a response says of one certificate.
type certStatus struct {
	Serial    []byte // big-endian magnitude
	Status    status
	RevokedAt time.Time // statusRevoked only
	Reason    int       // RFC 5280 CRLReason, statusRevoked only; -1 leaves it out
}

// builder signs responses for the certificates of one issuer with one responder key.
// Everything that is the same in every response — the issuer's name and key hashes,
// the responder ID, the signature algorithm, the responder certificate — is encoded
// once; a response costs the encoding of its serial, status and times, and one
// signature. That keeps a refresh of a million responses bound by the HSM alone.
type builder struct {
	key        crypto.Signer
	digest     crypto.Hash
	sigAlg     []byte // DER AlgorithmIdentifier
	responder  []byte // DER ResponderID: [2] EXPLICIT KeyHash
	certs      []byte // DER [0] EXPLICIT SEQUENCE OF Certificate, or nil
	issuerIDs  map[crypto.Hash][]byte
	archiveOld time.Duration // retention: archive cutoff = producedAt - archiveOld; 0 leaves it out
}

var (
	oidOCSPBasic     = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}
	oidArchiveCutoff = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 6}
	oidECDSASHA256   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSASHA384   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidRSASHA256     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	hashOIDs         = map[crypto.Hash]asn1.ObjectIdentifier{
		crypto.SHA1:   {1, 3, 14, 3, 2, 26},
		crypto.SHA256: {2, 16, 840, 1, 101, 3, 4, 2, 1},
		crypto.SHA384: {2, 16, 840, 1, 101, 3, 4, 2, 2},
		crypto.SHA512: {2, 16, 840, 1, 101, 3, 4, 2, 3},
	}
)

// newBuilder prepares signing for certificates issued by issuer. responderCert is the
// delegated responder's certificate (sent in every response); nil means key is the
// issuer's own key and no certificate is sent. retention, if not zero, puts an archive
// cutoff of producedAt-retention in every response (RFC 6960 §4.4.4).
func newBuilder(issuer, responderCert *x509.Certificate, key crypto.Signer, retention time.Duration) (*builder, error) {
	b := &builder{key: key, issuerIDs: map[crypto.Hash][]byte{}, archiveOld: retention}
	var alg cryptobyte.Builder
	switch pub := key.Public().(type) {
	case *ecdsa.PublicKey:
		oid := oidECDSASHA256
		b.digest = crypto.SHA256
		if pub.Curve == elliptic.P384() {
			oid, b.digest = oidECDSASHA384, crypto.SHA384
		}
		alg.AddASN1(cbasn1.SEQUENCE, func(a *cryptobyte.Builder) { a.AddASN1ObjectIdentifier(oid) })
	case *rsa.PublicKey:
		b.digest = crypto.SHA256
		alg.AddASN1(cbasn1.SEQUENCE, func(a *cryptobyte.Builder) {
			a.AddASN1ObjectIdentifier(oidRSASHA256)
			a.AddASN1NULL()
		})
	case ed25519.PublicKey:
		// Relying parties' OCSP clients (Go's x/crypto/ocsp among them) cannot verify
		// Ed25519 responses: a responder key must be one every client can check.
		return nil, fmt.Errorf("ocsp: responder key is Ed25519, which OCSP clients do not verify; use ECDSA P-256 or RSA")
	default:
		return nil, fmt.Errorf("ocsp: responder key type %T is not supported", pub)
	}
	b.sigAlg = alg.BytesOrPanic()

	signerCert := issuer
	if responderCert != nil {
		signerCert = responderCert
	}
	keyBits, err := publicKeyBits(signerCert)
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum(keyBits)
	var rid cryptobyte.Builder
	rid.AddASN1(cbasn1.Tag(2).Constructed().ContextSpecific(), func(r *cryptobyte.Builder) {
		r.AddASN1OctetString(sum[:])
	})
	b.responder = rid.BytesOrPanic()
	if responderCert != nil {
		var cb cryptobyte.Builder
		cb.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(c *cryptobyte.Builder) {
			c.AddASN1(cbasn1.SEQUENCE, func(s *cryptobyte.Builder) { s.AddBytes(responderCert.Raw) })
		})
		b.certs = cb.BytesOrPanic()
	}

	issuerKey, err := publicKeyBits(issuer)
	if err != nil {
		return nil, err
	}
	for h, oid := range hashOIDs {
		nh, kh := h.New(), h.New()
		nh.Write(issuer.RawSubject)
		kh.Write(issuerKey)
		var id cryptobyte.Builder // CertID without the serial and the closing SEQUENCE
		id.AddASN1(cbasn1.SEQUENCE, func(a *cryptobyte.Builder) {
			a.AddASN1ObjectIdentifier(oid)
			a.AddASN1NULL()
		})
		id.AddASN1OctetString(nh.Sum(nil))
		id.AddASN1OctetString(kh.Sum(nil))
		b.issuerIDs[h] = id.BytesOrPanic()
	}
	return b, nil
}

func publicKeyBits(c *x509.Certificate) ([]byte, error) {
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(c.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, fmt.Errorf("ocsp: public key of %s: %w", c.Subject, err)
	}
	return spki.PublicKey.RightAlign(), nil
}

// sign builds and signs the response for st with a CertID made with hash, valid
// from thisUpdate to nextUpdate and produced at producedAt.
//
// The encoding is written by hand into one buffer: a response has one shape, and
// the general-purpose builders spent more of a refresh's CPU on small allocations
// than on anything but the signature. TestSignMatchesReference holds it to a
// cryptobyte encoding of the same structure.
func (b *builder) sign(st certStatus, hash crypto.Hash, producedAt, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	issuerID, ok := b.issuerIDs[hash]
	if !ok {
		return nil, fmt.Errorf("ocsp: CertID hash %v is not supported", hash)
	}
	var buf [640]byte
	tbs, err := b.appendTBS(buf[:0], issuerID, st, producedAt, thisUpdate, nextUpdate)
	if err != nil {
		return nil, err
	}
	var digest []byte
	switch b.digest {
	case crypto.SHA256:
		sum := sha256.Sum256(tbs)
		digest = sum[:]
	case crypto.SHA384:
		sum := sha512.Sum384(tbs)
		digest = sum[:]
	default:
		return nil, fmt.Errorf("ocsp: digest %v is not supported", b.digest)
	}
	sig, err := b.key.Sign(rand.Reader, digest, b.digest)
	if err != nil {
		return nil, fmt.Errorf("ocsp: sign response: %w", err)
	}
	bodyLen := len(tbs) + len(b.sigAlg) + tlvLen(1+len(sig))
	n := wrappedLen(bodyLen + len(b.certs))
	// The spare capacity takes the response's HTTP headers (newResponse).
	der := make([]byte, 0, n+headersLen)
	der = appendWrapHeader(der, bodyLen+len(b.certs))
	der = append(der, tbs...)
	der = append(der, b.sigAlg...)
	der = appendHeader(der, 0x03, 1+len(sig)) // BIT STRING, no unused bits
	der = append(der, 0)
	der = append(der, sig...)
	return append(der, b.certs...), nil
}

// appendTBS appends the DER of ResponseData with its one SingleResponse.
func (b *builder) appendTBS(dst, issuerID []byte, st certStatus, producedAt, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	times := []time.Time{producedAt, thisUpdate, nextUpdate, producedAt.Add(-b.archiveOld)}
	if st.Status == statusRevoked {
		times = append(times, st.RevokedAt)
	}
	for _, t := range times {
		if y := t.UTC().Year(); y < 0 || y > 9999 {
			return nil, fmt.Errorf("ocsp: encode response: time %s out of range", t)
		}
	}
	if st.Status == statusRevoked && st.Reason > 127 {
		return nil, fmt.Errorf("ocsp: encode response: reason %d out of range", st.Reason)
	}
	mag := trimSerial(st.Serial)
	serialLen := len(mag)
	if serialLen == 0 || mag[0]&0x80 != 0 {
		serialLen++
	}
	certID := len(issuerID) + tlvLen(serialLen)
	status := 2 // [0] or [2] IMPLICIT NULL
	revoked := 0
	if st.Status == statusRevoked {
		revoked = timeLen
		if st.Reason >= 0 {
			revoked += 5 // [0] EXPLICIT ENUMERATED, one byte
		}
		status = tlvLen(revoked)
	}
	ext := 0 // [1] EXPLICIT Extensions: archive cutoff
	if b.archiveOld > 0 {
		ext = tlvLen(tlvLen(tlvLen(len(oidArchiveCutoffDER) + tlvLen(timeLen))))
	}
	single := tlvLen(certID) + status + timeLen + tlvLen(timeLen) + ext
	rd := len(b.responder) + timeLen + tlvLen(tlvLen(single))

	dst = appendHeader(dst, 0x30, rd) // ResponseData
	dst = append(dst, b.responder...)
	dst = appendTime(dst, producedAt)
	dst = appendHeader(dst, 0x30, tlvLen(single)) // responses
	dst = appendHeader(dst, 0x30, single)         // SingleResponse
	dst = appendHeader(dst, 0x30, certID)
	dst = append(dst, issuerID...)
	dst = appendHeader(dst, 0x02, serialLen)
	if serialLen > len(mag) {
		dst = append(dst, 0)
	}
	dst = append(dst, mag...)
	switch st.Status {
	case statusGood:
		dst = append(dst, 0x80, 0)
	case statusRevoked:
		dst = appendHeader(dst, 0xa1, revoked)
		dst = appendTime(dst, st.RevokedAt)
		if st.Reason >= 0 {
			dst = append(dst, 0xa0, 3, 0x0a, 1, byte(st.Reason))
		}
	default:
		dst = append(dst, 0x82, 0)
	}
	dst = appendTime(dst, thisUpdate)
	dst = appendHeader(dst, 0xa0, timeLen)
	dst = appendTime(dst, nextUpdate)
	if b.archiveOld > 0 {
		e := len(oidArchiveCutoffDER) + tlvLen(timeLen)
		dst = appendHeader(dst, 0xa1, tlvLen(tlvLen(e)))
		dst = appendHeader(dst, 0x30, tlvLen(e))
		dst = appendHeader(dst, 0x30, e)
		dst = append(dst, oidArchiveCutoffDER...)
		dst = appendHeader(dst, 0x04, timeLen)
		dst = appendTime(dst, producedAt.Add(-b.archiveOld))
	}
	return dst, nil
}

// wrap rebuilds a response from the content of its BasicOCSPResponse, without
// (body) and with the responder certificate field that ends it (certs); split
// takes one apart.
func wrap(body, certs []byte) []byte {
	der := make([]byte, 0, wrappedLen(len(body)+len(certs))+headersLen)
	der = appendWrapHeader(der, len(body)+len(certs))
	der = append(der, body...)
	return append(der, certs...)
}

// split finds in a response the content of its BasicOCSPResponse (body) and the
// certs field that ends it, if any; ok is false for a response wrap would not
// rebuild byte for byte.
func split(der []byte) (body, certs []byte, ok bool) {
	in := cryptobyte.String(der)
	var resp, rb, basic cryptobyte.String
	var status int
	var oid cryptobyte.String
	if !in.ReadASN1(&resp, cbasn1.SEQUENCE) || !in.Empty() ||
		!resp.ReadASN1Enum(&status) || status != 0 ||
		!resp.ReadASN1(&rb, cbasn1.Tag(0).Constructed().ContextSpecific()) || !resp.Empty() ||
		!rb.ReadASN1(&rb, cbasn1.SEQUENCE) ||
		!rb.ReadASN1Element(&oid, cbasn1.OBJECT_IDENTIFIER) || !bytes.Equal(oid, oidOCSPBasicDER) ||
		!rb.ReadASN1(&basic, cbasn1.OCTET_STRING) || !rb.Empty() ||
		!basic.ReadASN1(&basic, cbasn1.SEQUENCE) {
		return nil, nil, false
	}
	content := basic
	var skip cryptobyte.String
	// tbsResponseData, signatureAlgorithm, signature
	for _, tag := range []cbasn1.Tag{cbasn1.SEQUENCE, cbasn1.SEQUENCE, cbasn1.BIT_STRING} {
		if !basic.ReadASN1Element(&skip, tag) {
			return nil, nil, false
		}
	}
	if !basic.Empty() {
		certs = basic
		if !basic.ReadASN1Element(&skip, cbasn1.Tag(0).Constructed().ContextSpecific()) || !basic.Empty() {
			return nil, nil, false
		}
	}
	if wrappedLen(len(content)) != len(der) {
		return nil, nil, false // not minimally encoded: wrap would differ
	}
	return content[:len(content)-len(certs)], certs, true
}

// DER of the fixed parts.
var (
	oidOCSPBasicDER     = []byte{0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01}
	oidArchiveCutoffDER = []byte{0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x06}
	responseSuccessful  = []byte{0x0a, 0x01, 0x00}
	timeLen             = 17 // GeneralizedTime YYYYMMDDHHMMSSZ with its header
)

// appendWrapHeader appends everything of a successful OCSPResponse that comes
// before the content of its BasicOCSPResponse of n bytes.
func appendWrapHeader(dst []byte, n int) []byte {
	basic := tlvLen(n)
	octets := tlvLen(basic)
	rb := len(oidOCSPBasicDER) + octets
	dst = appendHeader(dst, 0x30, len(responseSuccessful)+tlvLen(tlvLen(rb))) // OCSPResponse
	dst = append(dst, responseSuccessful...)
	dst = appendHeader(dst, 0xa0, tlvLen(rb)) // responseBytes [0] EXPLICIT
	dst = appendHeader(dst, 0x30, rb)         // ResponseBytes
	dst = append(dst, oidOCSPBasicDER...)
	dst = appendHeader(dst, 0x04, basic) // response OCTET STRING
	return appendHeader(dst, 0x30, n)    // BasicOCSPResponse
}

// wrappedLen is the length of a response whose BasicOCSPResponse holds n bytes.
func wrappedLen(n int) int {
	return tlvLen(len(responseSuccessful) + tlvLen(tlvLen(len(oidOCSPBasicDER)+tlvLen(tlvLen(n)))))
}

// tlvLen is the length of a DER element with n bytes of content.
func tlvLen(n int) int { return 1 + lenLen(n) + n }

func lenLen(n int) int {
	switch {
	case n < 0x80:
		return 1
	case n < 0x100:
		return 2
	case n < 0x10000:
		return 3
	default:
		return 4
	}
}

// appendHeader appends a DER tag and definite length; n < 2^24.
func appendHeader(dst []byte, tag byte, n int) []byte {
	switch {
	case n < 0x80:
		return append(dst, tag, byte(n))
	case n < 0x100:
		return append(dst, tag, 0x81, byte(n))
	case n < 0x10000:
		return append(dst, tag, 0x82, byte(n>>8), byte(n))
	default:
		return append(dst, tag, 0x83, byte(n>>16), byte(n>>8), byte(n))
	}
}

// appendTime appends t as a GeneralizedTime in UTC, to the second; its year is
// in [0, 9999] (appendTBS checks).
func appendTime(dst []byte, t time.Time) []byte {
	t = t.UTC()
	y, mo, d := t.Date()
	h, mi, s := t.Clock()
	dst = append(dst, 0x18, 15)
	dst = append(dst, byte('0'+y/1000), byte('0'+y/100%10), byte('0'+y/10%10), byte('0'+y%10))
	for _, v := range [5]int{int(mo), d, h, mi, s} {
		dst = append(dst, byte('0'+v/10), byte('0'+v%10))
	}
	return append(dst, 'Z')
}
