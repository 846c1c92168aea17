package crl

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/inkan-pki/inkan/certserial"
)

// Entry is one revoked certificate as a CRL lists it.
type Entry struct {
	Serial    *big.Int
	RevokedAt time.Time
	Reason    int // RFC 5280 CRLReason; 0 (unspecified) is left out of the entry
}

// Shard returns the shard of a serial among n shards. Serials are at least 64 bits
// of CSPRNG output, so their low bits spread certificates evenly.
func Shard(serial *big.Int, n int) int {
	if n <= 1 {
		return 0
	}
	return int(new(big.Int).Mod(serial, big.NewInt(int64(n))).Int64())
}

// Full marks a build of the full CRL rather than of one shard.
const Full = -1

// Spec says which CRL to build.
type Spec struct {
	Shard      int    // a shard number, or Full
	URL        string // the shard's distribution point URL (the IDP); empty for Full
	Number     *big.Int
	ThisUpdate time.Time
	NextUpdate time.Time
}

var oidIssuingDistributionPoint = asn1.ObjectIdentifier{2, 5, 29, 28}

// Build signs the CRL spec describes over entries with key, as issuer. Entries
// belonging to other shards are a caller's error: a shard CRL claims by its IDP to
// cover its shard only, and listing another shard's serial there would be harmless
// but a sign the sharding is wrong, so it is refused.
func Build(issuer *x509.Certificate, key crypto.Signer, spec Spec, shards int, entries []Entry) ([]byte, error) {
	if spec.Number == nil || spec.Number.Sign() < 0 {
		return nil, errors.New("crl: a CRL number is required")
	}
	if !spec.NextUpdate.After(spec.ThisUpdate) {
		return nil, errors.New("crl: nextUpdate must be after thisUpdate")
	}
	tmpl := &x509.RevocationList{
		Number:                    spec.Number,
		ThisUpdate:                spec.ThisUpdate,
		NextUpdate:                spec.NextUpdate,
		RevokedCertificateEntries: make([]x509.RevocationListEntry, len(entries)),
	}
	for i, e := range entries {
		if spec.Shard != Full && Shard(e.Serial, shards) != spec.Shard {
			return nil, fmt.Errorf("crl: serial %s belongs to shard %d, not %d", certserial.Format(e.Serial), Shard(e.Serial, shards), spec.Shard)
		}
		tmpl.RevokedCertificateEntries[i] = x509.RevocationListEntry{
			SerialNumber: e.Serial, RevocationTime: e.RevokedAt, ReasonCode: e.Reason,
		}
	}
	if spec.Shard != Full {
		if spec.URL == "" {
			return nil, errors.New("crl: a shard CRL needs its distribution point URL")
		}
		idp, err := issuingDistributionPoint(spec.URL)
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: oidIssuingDistributionPoint, Critical: true, Value: idp}}
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, issuer, key)
	if err != nil {
		return nil, fmt.Errorf("crl: sign shard %d number %s: %w", spec.Shard, spec.Number, err)
	}
	return der, nil
}

// issuingDistributionPoint encodes IssuingDistributionPoint { distributionPoint
// [0] { fullName [0] { uniformResourceIdentifier [6] url } }, onlyContainsUserCerts
// [1] TRUE }: the shard holds end-entity certificates only.
func issuingDistributionPoint(url string) ([]byte, error) {
	uri := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(url)}
	type idp struct {
		DistributionPoint     asn1.RawValue `asn1:"optional,tag:0"`
		OnlyContainsUserCerts bool          `asn1:"optional,tag:1"`
	}
	fullName, err := asn1.Marshal(uri)
	if err != nil {
		return nil, err
	}
	dpName := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: fullName}
	dpNameDER, err := asn1.Marshal(dpName)
	if err != nil {
		return nil, err
	}
	v, err := asn1.Marshal(idp{
		DistributionPoint:     asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: dpNameDER},
		OnlyContainsUserCerts: true,
	})
	if err != nil {
		return nil, fmt.Errorf("crl: encode issuing distribution point: %w", err)
	}
	return v, nil
}
