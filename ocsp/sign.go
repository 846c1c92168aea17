package ocsp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// CertStatus is what a response says of one certificate.
type CertStatus struct {
	Serial    []byte // big-endian magnitude
	Status    Status
	RevokedAt time.Time // Revoked only
	Reason    int       // RFC 5280 CRLReason, Revoked only; -1 leaves it out
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
func (b *builder) sign(st CertStatus, hash crypto.Hash, producedAt, thisUpdate, nextUpdate time.Time) ([]byte, error) {
	issuerID, ok := b.issuerIDs[hash]
	if !ok {
		return nil, fmt.Errorf("ocsp: CertID hash %v is not supported", hash)
	}
	tbs := cryptobyte.NewBuilder(make([]byte, 0, 256))
	tbs.AddASN1(cbasn1.SEQUENCE, func(rd *cryptobyte.Builder) { // ResponseData
		rd.AddBytes(b.responder)
		rd.AddASN1GeneralizedTime(producedAt.UTC())
		rd.AddASN1(cbasn1.SEQUENCE, func(list *cryptobyte.Builder) {
			list.AddASN1(cbasn1.SEQUENCE, func(sr *cryptobyte.Builder) { // SingleResponse
				sr.AddASN1(cbasn1.SEQUENCE, func(id *cryptobyte.Builder) {
					id.AddBytes(issuerID)
					addSerial(id, st.Serial)
				})
				switch st.Status {
				case Good:
					sr.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(*cryptobyte.Builder) {})
				case Revoked:
					sr.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(ri *cryptobyte.Builder) {
						ri.AddASN1GeneralizedTime(st.RevokedAt.UTC())
						if st.Reason >= 0 {
							ri.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(r *cryptobyte.Builder) {
								r.AddASN1Enum(int64(st.Reason))
							})
						}
					})
				default:
					sr.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(*cryptobyte.Builder) {})
				}
				sr.AddASN1GeneralizedTime(thisUpdate.UTC())
				sr.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(n *cryptobyte.Builder) {
					n.AddASN1GeneralizedTime(nextUpdate.UTC())
				})
				if b.archiveOld > 0 {
					sr.AddASN1(cbasn1.Tag(1).Constructed().ContextSpecific(), func(exts *cryptobyte.Builder) {
						exts.AddASN1(cbasn1.SEQUENCE, func(l *cryptobyte.Builder) {
							l.AddASN1(cbasn1.SEQUENCE, func(e *cryptobyte.Builder) {
								e.AddASN1ObjectIdentifier(oidArchiveCutoff)
								e.AddASN1(cbasn1.OCTET_STRING, func(v *cryptobyte.Builder) {
									v.AddASN1GeneralizedTime(producedAt.Add(-b.archiveOld).UTC())
								})
							})
						})
					})
				}
			})
		})
	})
	tbsDER, err := tbs.Bytes()
	if err != nil {
		return nil, fmt.Errorf("ocsp: encode response: %w", err)
	}
	h := b.digest.New()
	h.Write(tbsDER)
	sig, err := b.key.Sign(rand.Reader, h.Sum(nil), b.digest)
	if err != nil {
		return nil, fmt.Errorf("ocsp: sign response: %w", err)
	}
	out := cryptobyte.NewBuilder(make([]byte, 0, len(tbsDER)+len(sig)+len(b.certs)+64))
	out.AddASN1(cbasn1.SEQUENCE, func(r *cryptobyte.Builder) { // OCSPResponse
		r.AddASN1Enum(0) // successful
		r.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(rb *cryptobyte.Builder) {
			rb.AddASN1(cbasn1.SEQUENCE, func(rb *cryptobyte.Builder) { // ResponseBytes
				rb.AddASN1ObjectIdentifier(oidOCSPBasic)
				rb.AddASN1(cbasn1.OCTET_STRING, func(o *cryptobyte.Builder) {
					o.AddASN1(cbasn1.SEQUENCE, func(basic *cryptobyte.Builder) {
						basic.AddBytes(tbsDER)
						basic.AddBytes(b.sigAlg)
						basic.AddASN1BitString(sig)
						if b.certs != nil {
							basic.AddBytes(b.certs)
						}
					})
				})
			})
		})
	})
	return out.Bytes()
}

// addSerial writes a positive INTEGER from a big-endian magnitude.
func addSerial(b *cryptobyte.Builder, mag []byte) {
	mag = trimSerial(mag)
	b.AddASN1(cbasn1.INTEGER, func(i *cryptobyte.Builder) {
		if len(mag) == 0 {
			i.AddUint8(0)
			return
		}
		if mag[0]&0x80 != 0 {
			i.AddUint8(0)
		}
		i.AddBytes(mag)
	})
}
