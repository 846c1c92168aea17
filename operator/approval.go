package operator

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"
)

// Rule says that an action needs approval: M operators of Role, other than the
// proposer, must approve it within TTL of its proposal. Over, if not zero, makes
// it a counting rule: a request needs approval when the items it touches, added
// to those the same operator acted on without approval within the last Within
// (DefaultWithin if zero), pass Over — so revoking 10 and then 5 certificates
// within the window needs approval for the second request, as 15 at once would.
type Rule struct {
	M      int
	Role   Role
	TTL    time.Duration
	Over   int
	Within time.Duration
}

// validate checks a rule of the configuration.
func (r Rule) validate(action string) error {
	if _, ok := matrix[action]; !ok {
		return fmt.Errorf("operator: rules.%s: unknown action", action)
	}
	return r.check(action)
}

// check checks a rule's shape; the state machine runs it on every proposal, so
// it must not depend on what this version of the code knows (the actions).
func (r Rule) check(action string) error {
	var errs []error
	if !validAction(action) {
		errs = append(errs, fmt.Errorf("operator: action %q: want 1-64 of a-z, 0-9, '.', '-'", action))
	}
	if r.M < 1 || r.M > 16 {
		errs = append(errs, fmt.Errorf("operator: rules.%s.m: %d: want 1-16", action, r.M))
	}
	if r.Role != Admin && r.Role != Officer {
		// Only they may decide ("approval.decide").
		errs = append(errs, fmt.Errorf("operator: rules.%s.role: %q: want admin or officer", action, r.Role))
	}
	if r.TTL < time.Second || r.TTL > 30*24*time.Hour {
		errs = append(errs, fmt.Errorf("operator: rules.%s.ttl: %s: want 1s-720h", action, r.TTL))
	}
	if r.Over < 0 {
		errs = append(errs, fmt.Errorf("operator: rules.%s.over: %d: want 0 or more", action, r.Over))
	}
	if r.Within < 0 || r.Within > maxWithin || (r.Within != 0 && r.Over == 0) {
		errs = append(errs, fmt.Errorf("operator: rules.%s.within: %s: want 0s-720h, and only with over", action, r.Within))
	}
	return errors.Join(errs...)
}

// defaultBulkRevocation is the Over of the default rules for "cert.revoke" and
// "cert.hold": revoking, or putting on hold, more than this many certificates
// within the window needs approval. A hold is answered "revoked" (reason
// certificateHold) until released, so a bulk hold takes certificates out of
// use as a bulk revocation does.
const defaultBulkRevocation = 10

// defaultRules are the rules of dual control a new cluster starts with when the
// configuration names none: CA key generation, import and transfer, policy
// changes (the rules of dual control among them), adding or removing operators,
// voters or nonvoters need 2 admins besides the proposer; an officer revoking,
// or putting on hold, more than defaultBulkRevocation certificates within an
// hour (defaultWithin) needs 2 officers besides the proposer. Requests expire
// after a day.
func defaultRules() map[string]Rule {
	admin := Rule{M: 2, Role: Admin, TTL: 24 * time.Hour}
	return map[string]Rule{
		actionCAKeyGenerate:     admin,
		actionCAKeyImport:       admin,
		actionCAKeyTransfer:     admin,
		actionCACeremony:        admin,
		actionPolicyApply:       admin,
		actionOperatorManage:    admin,
		actionClusterMembership: admin,
		actionCertRevoke:        {M: 2, Role: Officer, TTL: 24 * time.Hour, Over: defaultBulkRevocation, Within: defaultWithin},
		actionCertHold:          {M: 2, Role: Officer, TTL: 24 * time.Hour, Over: defaultBulkRevocation, Within: defaultWithin},
	}
}

// Decision is an approver's answer.
type Decision string

// The decisions.
const (
	Approve Decision = "approve"
	Reject  Decision = "reject"
)

// Digest is the SHA-256 a request is known by:
//
//	SHA-256("inkan-request-v1\n" || action || "\n" || body)
//
// where body is the request's canonical body (Request.Body), byte for byte.
func Digest(action string, body []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("inkan-request-v1\n" + action + "\n"))
	h.Write(body)
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// approvalMessage is what an approver signs:
//
//	"inkan-approval-v1\n" || request ID || "\n" || lower-case hex of the digest || "\n" || "approve" or "reject"
//
// with no trailing newline. The ID binds the approval to one request (two
// requests of the same body have the same digest), the digest to its action and
// body, the last line to the decision.
func approvalMessage(id string, digest [32]byte, d Decision) []byte {
	return []byte("inkan-approval-v1\n" + id + "\n" + hex.EncodeToString(digest[:]) + "\n" + string(d))
}

// approvalAlgorithm is how an approval made with a key of pub is signed:
// ECDSA P-256 with SHA-256, P-384 with SHA-384, Ed25519 over the message itself,
// RSA (2048 bits or more) PKCS #1 v1.5 with SHA-256.
func approvalAlgorithm(pub crypto.PublicKey) (x509.SignatureAlgorithm, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256():
			return x509.ECDSAWithSHA256, nil
		case elliptic.P384():
			return x509.ECDSAWithSHA384, nil
		}
		return 0, fmt.Errorf("%w: ECDSA curve %s: want P-256 or P-384", errKeyType, k.Curve.Params().Name)
	case ed25519.PublicKey:
		return x509.PureEd25519, nil
	case *rsa.PublicKey:
		if k.N.BitLen() < 2048 {
			return 0, fmt.Errorf("%w: RSA key of %d bits: want 2048 or more", errKeyType, k.N.BitLen())
		}
		return x509.SHA256WithRSA, nil
	}
	return 0, fmt.Errorf("%w: %T: want ECDSA P-256/P-384, Ed25519 or RSA", errKeyType, pub)
}

// errKeyType: a key an approval cannot be signed with (approvalAlgorithm).
var errKeyType = errors.New("key type not accepted")

// SignApproval signs the approval message of request id with digest and decision
// d with the operator's key (a file key or a PKCS#11 token's crypto.Signer), as
// approvalAlgorithm says for its type. The node checks it against the operator's
// certificate.
func SignApproval(key crypto.Signer, id string, digest [32]byte, d Decision) ([]byte, error) {
	alg, err := approvalAlgorithm(key.Public())
	if err != nil {
		return nil, fmt.Errorf("operator: sign approval: %w", err)
	}
	msg := approvalMessage(id, digest, d)
	var sig []byte
	switch alg {
	case x509.PureEd25519:
		sig, err = key.Sign(rand.Reader, msg, crypto.Hash(0))
	case x509.ECDSAWithSHA384:
		h := sha512.Sum384(msg)
		sig, err = key.Sign(rand.Reader, h[:], crypto.SHA384)
	default:
		h := sha256.Sum256(msg)
		sig, err = key.Sign(rand.Reader, h[:], crypto.SHA256)
	}
	if err != nil {
		return nil, fmt.Errorf("operator: sign approval: %w", err)
	}
	return sig, nil
}

// checkApproval verifies an approval signature against the approver's
// certificate. It is deterministic, so the state machine runs it.
func checkApproval(cert *x509.Certificate, id string, digest [32]byte, d Decision, sig []byte) error {
	alg, err := approvalAlgorithm(cert.PublicKey)
	if err != nil {
		return err
	}
	return cert.CheckSignature(alg, approvalMessage(id, digest, d), sig)
}

func validAction(a string) bool {
	if len(a) < 1 || len(a) > 64 {
		return false
	}
	for _, c := range a {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}
