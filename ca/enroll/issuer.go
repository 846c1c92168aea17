package enroll

import (
	"context"

	"github.com/inkan-pki/inkan/ca"
)

// issuer issues the certificate once everything is verified and decided:
// *ca.Authority. The request carries the policy's Decision, the person record,
// the keyed hashes under the cluster's link key (never the JPKI serial or the
// basic-4 information) and the nonce, whose use the intent records. Its refusals
// reach the client as their problems: ca.ErrNonceUsed as nonce-replayed,
// ca.ErrPersonLimit as person-limit-reached, ca.ErrPersonChanged after one
// retry, ca.ErrNoCAKey and ca.ErrAbandoned as unavailable (ask again); any other
// error as issuance-failed, with no detail.
type issuer interface {
	Issue(ctx context.Context, req ca.Request) (*ca.Issued, error)
}

// The Authority is the Issuer a node gives the API.
var _ issuer = (*ca.Authority)(nil)
