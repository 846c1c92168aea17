package enroll

import (
	"context"

	"github.com/inkan-pki/inkan/ca"
)

// Issuer issues the certificate once everything is verified, decided and the nonce
// redeemed: *ca.Authority. The request carries the policy's template and the keyed
// hashes (ca.Request.Link, Person) under the cluster's link key, never the JPKI serial
// or the basic-4 information. An issuer's refusal that matches ErrRateLimited or
// ErrPolicyDenied (a per-person cap) reaches the client as that problem;
// ca.ErrNoCAKey and ca.ErrAbandoned as unavailable (ask again); any other error as
// issuance-failed, with no detail.
type Issuer interface {
	Issue(ctx context.Context, req ca.Request) (*ca.Issued, error)
}

// The Authority is the Issuer a node gives the API.
var _ Issuer = (*ca.Authority)(nil)
