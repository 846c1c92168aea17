package ocsp

import (
	"bytes"
	"encoding/asn1"
	"slices"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The evidence bundle's encoding: a CMS ContentInfo (RFC 5652) of a SignedData
// with no content and no signer, the "certs-only" shape every CMS and PKCS #7
// reader takes, carrying its evidence in certificates and crls:
//
//	SignedData ::= SEQUENCE {
//	  version            5 (crls holds an "other" choice) or 1,
//	  digestAlgorithms   SET {},
//	  encapContentInfo   SEQUENCE { id-data },        -- no eContent
//	  certificates   [0] IMPLICIT SET OF Certificate,
//	  crls           [1] IMPLICIT SET OF RevocationInfoChoice,
//	  signerInfos        SET {} }
//
// where a RevocationInfoChoice is a CertificateList, or for an OCSP response
// (RFC 5940 §3) other [1] IMPLICIT SEQUENCE { id-ri-ocsp-response,
// OCSPResponse }. The sets are in DER order (sorted by encoding).

var (
	oidCMSSignedData    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidCMSData          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidRIOCSPResponse   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 16, 2}
	tagCertificates     = cbasn1.Tag(0).ContextSpecific().Constructed()
	tagRevocationInfo   = cbasn1.Tag(1).ContextSpecific().Constructed()
	tagOtherRevInfo     = cbasn1.Tag(1).ContextSpecific().Constructed()
	tagExplicitContent0 = cbasn1.Tag(0).ContextSpecific().Constructed()
)

// bundle is what goes into an evidence bundle, each a DER encoding.
type bundle struct {
	certs [][]byte // certificates
	crls  [][]byte // CertificateLists
	ocsp  [][]byte // OCSPResponses
}

// marshal encodes the bundle; duplicates are dropped.
func (b *bundle) marshal() ([]byte, error) {
	var others [][]byte
	for _, r := range b.ocsp {
		var o cryptobyte.Builder
		o.AddASN1(tagOtherRevInfo, func(o *cryptobyte.Builder) {
			o.AddASN1ObjectIdentifier(oidRIOCSPResponse)
			o.AddBytes(r)
		})
		enc, err := o.Bytes()
		if err != nil {
			return nil, err
		}
		others = append(others, enc)
	}
	certs := derSet(b.certs)
	revs := derSet(append(slices.Clone(b.crls), others...))
	version := int64(1)
	if len(others) > 0 {
		version = 5
	}
	var out cryptobyte.Builder
	out.AddASN1(cbasn1.SEQUENCE, func(ci *cryptobyte.Builder) {
		ci.AddASN1ObjectIdentifier(oidCMSSignedData)
		ci.AddASN1(tagExplicitContent0, func(c *cryptobyte.Builder) {
			c.AddASN1(cbasn1.SEQUENCE, func(sd *cryptobyte.Builder) {
				sd.AddASN1Int64(version)
				sd.AddASN1(cbasn1.SET, func(*cryptobyte.Builder) {})
				sd.AddASN1(cbasn1.SEQUENCE, func(e *cryptobyte.Builder) { e.AddASN1ObjectIdentifier(oidCMSData) })
				if len(certs) > 0 {
					sd.AddASN1(tagCertificates, func(s *cryptobyte.Builder) {
						for _, c := range certs {
							s.AddBytes(c)
						}
					})
				}
				if len(revs) > 0 {
					sd.AddASN1(tagRevocationInfo, func(s *cryptobyte.Builder) {
						for _, r := range revs {
							s.AddBytes(r)
						}
					})
				}
				sd.AddASN1(cbasn1.SET, func(*cryptobyte.Builder) {})
			})
		})
	})
	return out.Bytes()
}

// derSet orders a SET OF's elements as DER does, by their encodings, without
// duplicates.
func derSet(elems [][]byte) [][]byte {
	s := slices.Clone(elems)
	slices.SortFunc(s, bytes.Compare)
	return slices.CompactFunc(s, bytes.Equal)
}
