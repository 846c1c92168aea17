package jpkisim

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The names and extensions of the JPKI profile (JPKI.md). Names are built one
// attribute per RDN, in order, as J-LIS writes them: crypto/x509's pkix.Name would fold
// the two OUs of the CA's DN into one multi-valued RDN.

var (
	oidAttrC  = asn1.ObjectIdentifier{2, 5, 4, 6}
	oidAttrO  = asn1.ObjectIdentifier{2, 5, 4, 10}
	oidAttrOU = asn1.ObjectIdentifier{2, 5, 4, 11}
	oidAttrL  = asn1.ObjectIdentifier{2, 5, 4, 7}
	oidAttrCN = asn1.ObjectIdentifier{2, 5, 4, 3}

	oidExtSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidExtIssuerAltName  = asn1.ObjectIdentifier{2, 5, 29, 18}
	oidExtCRLDP          = asn1.ObjectIdentifier{2, 5, 29, 31}
	oidExtCertPolicies   = asn1.ObjectIdentifier{2, 5, 29, 32}

	// The basic-4 otherName type-ids.
	oidName       = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 1}
	oidNameMap    = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 2}
	oidGender     = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 3}
	oidBirth      = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 4}
	oidAddress    = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 5}
	oidAddressMap = asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 5, 6}
)

// rdnAttr is one attribute of a name, in order.
type rdnAttr struct {
	oid   asn1.ObjectIdentifier
	value string
}

// marshalName encodes attrs as an RDNSequence with one attribute per RDN. C is a
// PrintableString; everything else a UTF8String (the Japanese names need it, and
// J-LIS's ASCII names are the same text either way: jpki compares names
// canonically).
func marshalName(attrs ...rdnAttr) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, a := range attrs {
			b.AddASN1(cbasn1.SET, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(a.oid)
					tag := cbasn1.UTF8String
					if a.oid.Equal(oidAttrC) {
						tag = cbasn1.PrintableString
					}
					b.AddASN1(tag, func(b *cryptobyte.Builder) { b.AddBytes([]byte(a.value)) })
				})
			})
		}
	})
	return b.BytesOrPanic()
}

// rootDN is the J-LIS signature CA's DN; every generation has this one.
func rootDN() []byte {
	return marshalName(
		rdnAttr{oidAttrC, "JP"},
		rdnAttr{oidAttrO, "JPKI"},
		rdnAttr{oidAttrOU, "JPKI for digital signature"},
		rdnAttr{oidAttrOU, "Japan Agency for Local Authority Information Systems"},
	)
}

// jlisAltName is the directoryName C=JP, O=公的個人認証サービス the CA carries as its
// subjectAltName and cards as their issuerAltName.
func jlisAltName() []byte {
	return generalNamesDirectory(marshalName(rdnAttr{oidAttrC, "JP"}, rdnAttr{oidAttrO, "公的個人認証サービス"}))
}

// cardSubject is C=JP, L=<prefecture>, L=<municipality>, CN=<opaque>.
func cardSubject(prefecture, municipality, cn string) []byte {
	return marshalName(
		rdnAttr{oidAttrC, "JP"},
		rdnAttr{oidAttrL, prefecture},
		rdnAttr{oidAttrL, municipality},
		rdnAttr{oidAttrCN, cn},
	)
}

// crlDistributionPoint is the DER of the directoryName a card of municipality in
// prefecture names as its CRL distribution point:
// C=JP, O=JPKI, OU=JPKI for digital signature, OU=CRL Distribution Points,
// OU=<prefecture>, CN=<municipality> CRLDP.
func crlDistributionPoint(prefecture, municipality string) []byte {
	return marshalName(
		rdnAttr{oidAttrC, "JP"},
		rdnAttr{oidAttrO, "JPKI"},
		rdnAttr{oidAttrOU, "JPKI for digital signature"},
		rdnAttr{oidAttrOU, "CRL Distribution Points"},
		rdnAttr{oidAttrOU, prefecture},
		rdnAttr{oidAttrCN, municipality + " CRLDP"},
	)
}

// generalNamesDirectory is GeneralNames holding one directoryName ([4] EXPLICIT Name).
func generalNamesDirectory(name []byte) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(4).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(name) })
	})
	return b.BytesOrPanic()
}

// crldpExtension is CRLDistributionPoints with one DistributionPoint whose
// distributionPoint is fullName { directoryName }.
func crldpExtension(name []byte) []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.Tag(4).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(name) })
				})
			})
		})
	})
	return b.BytesOrPanic()
}

// policiesExtension is a critical certificatePolicies with one policy and no
// qualifiers.
func policiesExtension(policy string) (pkix.Extension, error) {
	oid, err := parseOID(policy)
	if err != nil {
		return pkix.Extension{}, err
	}
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oid) })
	})
	return pkix.Extension{Id: oidExtCertPolicies, Critical: true, Value: b.BytesOrPanic()}, nil
}

func parseOID(s string) (asn1.ObjectIdentifier, error) {
	var oid asn1.ObjectIdentifier
	n, digits := 0, 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if digits == 0 {
				return nil, fmt.Errorf("jpkisim: policy %q is not a dotted OID", s)
			}
			oid = append(oid, n)
			n, digits = 0, 0
			continue
		}
		c := s[i]
		if c < '0' || c > '9' || n > 1<<28 {
			return nil, fmt.Errorf("jpkisim: policy %q is not a dotted OID", s)
		}
		n, digits = n*10+int(c-'0'), digits+1
	}
	if len(oid) < 2 {
		return nil, fmt.Errorf("jpkisim: policy %q is not a dotted OID", s)
	}
	return oid, nil
}

// otherName is one subjectAltName otherName: its type-id and a UTF8String value.
type otherName struct {
	oid   asn1.ObjectIdentifier
	value string
}

// sanExtension is the subjectAltName of a signature certificate: only otherNames,
// each [0] { type-id, [0] EXPLICIT UTF8String }. Real cards mark it non-critical.
func sanExtension(names []otherName) pkix.Extension {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		for _, n := range names {
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(n.oid)
				b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
					b.AddASN1(cbasn1.UTF8String, func(b *cryptobyte.Builder) { b.AddBytes([]byte(n.value)) })
				})
			})
		}
	})
	return pkix.Extension{Id: oidExtSubjectAltName, Value: b.BytesOrPanic()}
}
