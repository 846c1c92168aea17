package enroll

import (
	"context"
	"crypto"
	"crypto/x509"
	"math/big"
	"time"
)

// Issuer issues the certificate once everything is verified, decided and the nonce
// redeemed: ca.Authority in a node. A refusal by the issuer (a per-person cap) should
// match ErrRateLimited or ErrPolicyDenied to reach the client as that problem; any
// other error is an issuance failure, and the client gets no detail of it.
type Issuer interface {
	Issue(ctx context.Context, req IssueRequest) (*Issued, error)
}

// IssueRequest is what the enrollment API asks the CA to issue. It mirrors the
// agreed ca.Request field for field, so that a node adapts ca.Authority to Issuer
// by copying.
type IssueRequest struct {
	Profile       string
	PolicyVersion uint64
	// Template is the policy's certificate contents (subject, SANs, key usage, EKU,
	// policy OIDs, extra extensions).
	Template *x509.Certificate
	// PublicKey is the CSR's key (its signature checked).
	PublicKey crypto.PublicKey
	// NotAfter is the upper bound of validity (the JPKI certificate's notAfter, the
	// profile's validity).
	NotAfter time.Time
	// Link is the keyed hash of the JPKI certificate (jpki CertHash under the
	// cluster's link key): what ties the derived certificate to it, never the JPKI
	// serial in clear.
	Link []byte
	// Person is the keyed hash of the person (jpki PersonHash under the same key),
	// for per-person limits.
	Person    []byte
	SkipLints []string
}

// Issued is an issued certificate with the chain above it (issuer first).
type Issued struct {
	Serial *big.Int
	DER    []byte
	Chain  [][]byte
}
