package ca

import (
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"strings"
	"time"

	"github.com/inkan-pki/inkan/policies"
)

// Time-stamping certificates.
const (
	timeStampingProfile = "time-stamping"
	// MaxTimeStampingLifetime bounds a time-stamping certificate's validity.
	// Tokens are verified long after they were made, so the certificate is
	// long-lived; its key is replaced (a new certificate for a new key) well
	// before it ends.
	MaxTimeStampingLifetime = 10 * 365 * 24 * time.Hour
)

var (
	oidExtKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidKPTimeStamping = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 8}
)

// TimeStampingRequest asks for the certificate of a time-stamping authority's key.
type TimeStampingRequest struct {
	// Subject names the TSA; it needs a common name.
	Subject pkix.Name
	// PublicKey is the TSA key's public half (the key is in the HSMs).
	PublicKey crypto.PublicKey
	// Lifetime is the validity, at most MaxTimeStampingLifetime and never past
	// the issuer's certificate.
	Lifetime time.Duration
	// Actor is who asks (the operator's actor string, for the audit log).
	Actor string
}

// IssueTimeStamping issues a time-stamping authority's certificate (RFC 3161
// §2.3) from the active issuer: keyUsage digitalSignature, and an extended key
// usage extension, critical, with id-kp-timeStamping alone. It goes through the
// same pipeline as every certificate (intent, lint, HSM signature, issued
// record, audit), so the cluster's OCSP and CRLs answer for it; it is recorded
// as Kind TimeStamping under profile "time-stamping".
func (a *Authority) IssueTimeStamping(ctx context.Context, req TimeStampingRequest) (*Issued, error) {
	if req.Lifetime <= 0 || req.Lifetime > MaxTimeStampingLifetime {
		return nil, fmt.Errorf("%w: time-stamping lifetime %s: want up to %s", ErrTemplate, req.Lifetime, MaxTimeStampingLifetime)
	}
	if req.PublicKey == nil || strings.TrimSpace(req.Subject.CommonName) == "" {
		return nil, fmt.Errorf("%w: a public key and a subject common name are required", ErrTemplate)
	}
	if req.Actor == "" {
		req.Actor = actorSystem
	}
	if !validActor(req.Actor) {
		return nil, fmt.Errorf("%w, not %q", ErrActor, req.Actor)
	}
	eku, err := asn1.Marshal([]asn1.ObjectIdentifier{oidKPTimeStamping})
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		Subject:         req.Subject,
		KeyUsage:        x509.KeyUsageDigitalSignature,
		ExtraExtensions: []pkix.Extension{{Id: oidExtKeyUsage, Critical: true, Value: eku}},
	}
	return a.issue(ctx, order{Request: Request{Decision: policies.Decision{Profile: timeStampingProfile, Template: tmpl}, PublicKey: req.PublicKey},
		lifetime: req.Lifetime, kind: TimeStamping, actor: req.Actor})
}
