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
	"github.com/inkan-pki/inkan/crlreason"
)

// Entry is one revoked certificate as a CRL lists it.
type Entry struct {
	Serial    *big.Int
	RevokedAt time.Time
	Reason    crlreason.Reason // 0 (unspecified) is left out of the entry
}

// Shard returns the shard of a serial among n shards. Serials are at least 64 bits
// of CSPRNG output, so their low bits spread certificates evenly.
func Shard(serial *big.Int, n int) int {
	if n <= 1 {
		return 0
	}
	return int(new(big.Int).Mod(serial, big.NewInt(int64(n))).Int64())
}

// Full marks a build of the full CRL rather than of one shard; Delta a delta CRL
// of the full CRL (RFC 5280 §5.2.4): what changed since a full CRL, its base.
// The full CRL and its deltas share one sequence of CRL numbers (§5.2.3).
const (
	Full  = -1
	Delta = -2
)

// reasonRemoveFromCRL is the reason a delta CRL gives a serial its base lists
// that is no longer revoked (a hold released).
const reasonRemoveFromCRL = crlreason.RemoveFromCRL

// buildSpec says which CRL to build.
type buildSpec struct {
	Shard      int    // a shard number, Full or Delta
	URL        string // the shard's distribution point URL (the IDP); empty for Full and Delta
	Number     *big.Int
	ThisUpdate time.Time
	NextUpdate time.Time
	// Base is a delta CRL's base: the number of the full CRL it completes
	// (its delta CRL indicator). Delta only.
	Base *big.Int
	// Freshest is where the deltas of a full CRL are (its freshest CRL
	// extension, which tells relying parties, and OpenSSL, to look for one).
	// Full only; optional.
	Freshest string
}

var (
	oidIssuingDistributionPoint = asn1.ObjectIdentifier{2, 5, 29, 28}
	oidDeltaCRLIndicator        = asn1.ObjectIdentifier{2, 5, 29, 27}
	oidFreshestCRL              = asn1.ObjectIdentifier{2, 5, 29, 46}
)

// errSpec: build was given a spec or entries that make no valid CRL (a
// caller's error; the message says which).
var errSpec = errors.New("crl: CRL refused")

// build signs the CRL spec describes over entries with key, as issuer. Entries
// belonging to other shards are a caller's error: a shard CRL claims by its IDP to
// cover its shard only, and listing another shard's serial there would be harmless
// but a sign the sharding is wrong, so it is refused.
func build(issuer *x509.Certificate, key crypto.Signer, spec buildSpec, shards int, entries []Entry) ([]byte, error) {
	if spec.Number == nil || spec.Number.Sign() < 0 {
		return nil, fmt.Errorf("%w: a CRL number is required", errSpec)
	}
	if !spec.NextUpdate.After(spec.ThisUpdate) {
		return nil, fmt.Errorf("%w: nextUpdate must be after thisUpdate", errSpec)
	}
	tmpl := &x509.RevocationList{
		Number:                    spec.Number,
		ThisUpdate:                spec.ThisUpdate,
		NextUpdate:                spec.NextUpdate,
		RevokedCertificateEntries: make([]x509.RevocationListEntry, len(entries)),
	}
	switch {
	case spec.Shard == Delta && (spec.Base == nil || spec.Base.Sign() <= 0 || spec.Base.Cmp(spec.Number) >= 0):
		return nil, fmt.Errorf("%w: a delta CRL needs a base CRL number below its own", errSpec)
	case spec.Shard != Delta && spec.Base != nil:
		return nil, fmt.Errorf("%w: only a delta CRL has a base", errSpec)
	case spec.Shard != Full && spec.Freshest != "":
		return nil, fmt.Errorf("%w: only the full CRL points at its deltas", errSpec)
	}
	for i, e := range entries {
		if e.Reason == reasonRemoveFromCRL && spec.Shard != Delta {
			return nil, fmt.Errorf("%w: serial %s: removeFromCRL belongs in a delta CRL only", errSpec, certserial.Format(e.Serial))
		}
		if spec.Shard >= 0 && Shard(e.Serial, shards) != spec.Shard {
			return nil, fmt.Errorf("%w: serial %s belongs to shard %d, not %d", errSpec, certserial.Format(e.Serial), Shard(e.Serial, shards), spec.Shard)
		}
		tmpl.RevokedCertificateEntries[i] = x509.RevocationListEntry{
			SerialNumber: e.Serial, RevocationTime: e.RevokedAt, ReasonCode: int(e.Reason),
		}
	}
	switch spec.Shard {
	case Delta:
		base, err := asn1.Marshal(spec.Base)
		if err != nil {
			return nil, err
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: oidDeltaCRLIndicator, Critical: true, Value: base}}
	case Full:
		if spec.Freshest != "" {
			v, err := freshestCRL(spec.Freshest)
			if err != nil {
				return nil, err
			}
			tmpl.ExtraExtensions = []pkix.Extension{{Id: oidFreshestCRL, Value: v}}
		}
	default:
		if spec.URL == "" {
			return nil, fmt.Errorf("%w: a shard CRL needs its distribution point URL", errSpec)
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

// freshestCRL encodes FreshestCRL ::= CRLDistributionPoints: SEQUENCE OF
// DistributionPoint { distributionPoint [0] { fullName [0] { uniformResourceIdentifier
// [6] url } } }.
func freshestCRL(url string) ([]byte, error) {
	uri := asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(url)}
	fullName, err := asn1.Marshal(uri)
	if err != nil {
		return nil, err
	}
	dpName, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: fullName})
	if err != nil {
		return nil, err
	}
	dp, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: dpName})
	if err != nil {
		return nil, err
	}
	point, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: dp})
	if err != nil {
		return nil, err
	}
	return asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: asn1.TagSequence, IsCompound: true, Bytes: point})
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
