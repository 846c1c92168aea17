package tsa

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The encoding of a time-stamp token (RFC 3161 §2.4.2, RFC 5652, RFC 5816): a
// CMS ContentInfo of SignedData whose content is the TSTInfo, signed by one
// SignerInfo with the signed attributes content-type (id-ct-TSTInfo),
// message-digest and signingCertificateV2 (ESSCertIDv2 with SHA-256, so its
// hashAlgorithm is omitted as DEFAULT, and the issuer and serial). Everything
// a token shares with the others of its certificate is encoded once
// (newTokenSigner); a token costs its TSTInfo, two hashes and the HSM's
// signature.

var (
	oidSignedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidTSTInfo       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 4}
	oidContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidSigningCertV2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 47}
	oidDigestSHA256  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidDigestSHA384  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidECDSASHA256   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidECDSASHA384   = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	oidRSASHA256     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
)

// tokenSigner makes the tokens of one TSA certificate and key.
type tokenSigner struct {
	key       crypto.Signer
	hash      crypto.Hash // of the signed attributes and the TSTInfo
	cert      *x509.Certificate
	digestAlg []byte // AlgorithmIdentifier of hash
	sigAlg    []byte // AlgorithmIdentifier of the signature
	sid       []byte // IssuerAndSerialNumber of cert
	ctAttr    []byte // the content-type attribute
	essAttr   []byte // the signingCertificateV2 attribute
	certs     []byte // the certificates field's content: cert, then the chain
	tsaName   []byte // TSTInfo's tsa field: [0] { directoryName [4] { cert's subject } }
	policy    []byte // the policy OID, DER
	accuracy  []byte // the Accuracy, DER, or nil
}

// contextSigner is a key that takes a context for each signature (hsm.Signer).
type contextSigner interface {
	SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error)
}

// errKeyType: the TSA key is of a type tokens are not signed with here.
var errKeyType = errors.New("tsa: key type not supported: use ECDSA P-256 or P-384, or RSA")

// newTokenSigner prepares the tokens of cert, whose key is key. chain are the
// certificates (DER) a token carries after cert, when the request asks for it.
func newTokenSigner(key crypto.Signer, cert *x509.Certificate, chain [][]byte, policy asn1.ObjectIdentifier, accuracy time.Duration) (*tokenSigner, error) {
	if !publicKeysEqual(key.Public(), cert.PublicKey) {
		return nil, errors.New("tsa: the certificate is not for the key")
	}
	ts := &tokenSigner{key: key, cert: cert}
	var digestOID, sigOID asn1.ObjectIdentifier
	nullParams := false
	switch k := key.Public().(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			ts.hash, digestOID, sigOID = crypto.SHA256, oidDigestSHA256, oidECDSASHA256
		case elliptic.P384():
			ts.hash, digestOID, sigOID = crypto.SHA384, oidDigestSHA384, oidECDSASHA384
		default:
			return nil, errKeyType
		}
	case *rsa.PublicKey:
		ts.hash, digestOID, sigOID, nullParams = crypto.SHA256, oidDigestSHA256, oidRSASHA256, true
	default:
		return nil, errKeyType
	}
	var err error
	if ts.digestAlg, err = encode(func(b *cryptobyte.Builder) { addAlgorithm(b, digestOID, false) }); err != nil {
		return nil, err
	}
	if ts.sigAlg, err = encode(func(b *cryptobyte.Builder) { addAlgorithm(b, sigOID, nullParams) }); err != nil {
		return nil, err
	}
	if ts.sid, err = encode(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddBytes(cert.RawIssuer)
			b.AddASN1BigInt(cert.SerialNumber)
		})
	}); err != nil {
		return nil, err
	}
	if ts.ctAttr, err = encode(func(b *cryptobyte.Builder) {
		addAttribute(b, oidContentType, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidTSTInfo) })
	}); err != nil {
		return nil, err
	}
	certHash := sha256.Sum256(cert.Raw)
	if ts.essAttr, err = encode(func(b *cryptobyte.Builder) {
		addAttribute(b, oidSigningCertV2, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // SigningCertificateV2
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // certs
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // ESSCertIDv2
						b.AddASN1OctetString(certHash[:])
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // IssuerSerial
							b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // GeneralNames
								b.AddASN1(cbasn1.Tag(4).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
									b.AddBytes(cert.RawIssuer)
								})
							})
							b.AddASN1BigInt(cert.SerialNumber)
						})
					})
				})
			})
		})
	}); err != nil {
		return nil, err
	}
	ts.certs = slices.Concat(append([][]byte{cert.Raw}, chain...)...)
	if ts.tsaName, err = encode(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(4).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddBytes(cert.RawSubject)
			})
		})
	}); err != nil {
		return nil, err
	}
	if ts.policy, err = encode(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(policy) }); err != nil {
		return nil, fmt.Errorf("tsa: policy %s: %w", policy, err)
	}
	if ts.accuracy, err = encodeAccuracy(accuracy); err != nil {
		return nil, err
	}
	return ts, nil
}

// encodeAccuracy is the TSTInfo's Accuracy for d: seconds, millis [0] and
// micros [1], each present only when not zero; nil for less than 1µs.
func encodeAccuracy(d time.Duration) ([]byte, error) {
	secs := int64(d / time.Second)
	millis := int64(d % time.Second / time.Millisecond)
	micros := int64(d % time.Millisecond / time.Microsecond)
	if secs == 0 && millis == 0 && micros == 0 {
		return nil, nil
	}
	return encode(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			if secs > 0 {
				b.AddASN1Int64(secs)
			}
			if millis > 0 {
				b.AddASN1Int64WithTag(millis, cbasn1.Tag(0).ContextSpecific())
			}
			if micros > 0 {
				b.AddASN1Int64WithTag(micros, cbasn1.Tag(1).ContextSpecific())
			}
		})
	})
}

// sign makes the token for req at genTime with serial (a positive INTEGER's
// minimal content octets). It returns the ContentInfo's DER.
func (ts *tokenSigner) sign(ctx context.Context, req *timeStampReq, genTime time.Time, serial []byte) ([]byte, error) {
	info, err := encode(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1Int64(1)
			b.AddBytes(ts.policy)
			b.AddBytes(req.Imprint)
			b.AddASN1(cbasn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes(serial) })
			b.AddASN1(cbasn1.GeneralizedTime, func(b *cryptobyte.Builder) { b.AddBytes(generalizedTime(genTime)) })
			if ts.accuracy != nil {
				b.AddBytes(ts.accuracy)
			}
			if req.Nonce != nil {
				b.AddASN1(cbasn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes(req.Nonce) })
			}
			b.AddBytes(ts.tsaName)
		})
	})
	if err != nil {
		return nil, err
	}
	h := ts.hash.New()
	h.Write(info)
	mdAttr, err := encode(func(b *cryptobyte.Builder) {
		addAttribute(b, oidMessageDigest, func(b *cryptobyte.Builder) { b.AddASN1OctetString(h.Sum(nil)) })
	})
	if err != nil {
		return nil, err
	}
	// DER orders a SET OF by the encodings of its elements.
	attrs := [][]byte{ts.ctAttr, mdAttr, ts.essAttr}
	slices.SortFunc(attrs, bytes.Compare)
	signedAttrs := slices.Concat(attrs...)
	toSign, err := encode(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(signedAttrs) })
	})
	if err != nil {
		return nil, err
	}
	h = ts.hash.New()
	h.Write(toSign)
	var sig []byte
	if cs, ok := ts.key.(contextSigner); ok {
		sig, err = cs.SignContext(ctx, h.Sum(nil), ts.hash)
	} else {
		sig, err = ts.key.Sign(rand.Reader, h.Sum(nil), ts.hash)
	}
	if err != nil {
		return nil, fmt.Errorf("tsa: sign: %w", err)
	}
	return encode(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // ContentInfo
			b.AddASN1ObjectIdentifier(oidSignedData)
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignedData
					b.AddASN1Int64(3)
					b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) { b.AddBytes(ts.digestAlg) })
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // EncapsulatedContentInfo
						b.AddASN1ObjectIdentifier(oidTSTInfo)
						b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
							b.AddASN1OctetString(info)
						})
					})
					if req.CertReq {
						b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
							b.AddBytes(ts.certs)
						})
					}
					b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { // SignerInfo
							b.AddASN1Int64(1)
							b.AddBytes(ts.sid)
							b.AddBytes(ts.digestAlg)
							b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
								b.AddBytes(signedAttrs)
							})
							b.AddBytes(ts.sigAlg)
							b.AddASN1OctetString(sig)
						})
					})
				})
			})
		})
	})
}

// generalizedTime is t in UTC as RFC 3161 wants genTime: seconds, then the
// milliseconds without trailing zeros (none at all when zero), then Z.
func generalizedTime(t time.Time) []byte {
	t = t.UTC()
	out := t.AppendFormat(make([]byte, 0, 19), "20060102150405")
	if ms := t.Nanosecond() / int(time.Millisecond); ms > 0 {
		frac := strconv.AppendInt(nil, int64(1000+ms), 10)[1:] // three digits
		out = append(out, '.')
		out = append(out, bytes.TrimRight(frac, "0")...)
	}
	return append(out, 'Z')
}

func addAlgorithm(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, nullParams bool) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if nullParams {
			b.AddASN1NULL()
		}
	})
}

// addAttribute adds a CMS Attribute with one value.
func addAttribute(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, value func(*cryptobyte.Builder)) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		b.AddASN1(cbasn1.SET, value)
	})
}

func encode(fn func(*cryptobyte.Builder)) ([]byte, error) {
	b := cryptobyte.NewBuilder(nil)
	fn(b)
	return b.Bytes()
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}
