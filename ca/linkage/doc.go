// Package linkage is the leader's linkage job: it follows the JPKI revocation
// source (a J-LIS CRL, jpki.CRLSource) and acts on the derived certificates linked
// to each revoked JPKI signature certificate, as the profile they were issued under
// says (policies.Set.DecideLinkage): revoke at once with the rule's reason, hold
// (certificateHold) and revoke when the grace period has passed without a re-bind,
// or keep the certificate and revoke it when the grace period has passed.
//
// A CRL entry is matched to derived certificates by its keyed hash
// (jpki.RevokedEntry.CertHash under the cluster's link key, the hash the enrolment
// API gave the CA as ca.Request.Link; ca.State.ByLink); the JPKI serial is never stored,
// logged or compared in clear. Every act is a command of the authority (ca.Revoke,
// ca.Hold, actor "system") with its audit leaf.
//
// Invariants: the job runs on the leader only (Run takes the leader's context from
// cluster.OnLeader) and keeps nothing that matters: a new leader derives every
// decision again from the CRL and the CA's state, and reaches the same one, since a
// grace period counts from the JPKI revocation time and not from when the job ran.
// It is idempotent: a held certificate is not held again, revoked and expired ones
// are left alone, and a certificate re-bound to a new JPKI certificate (ca.Relink)
// is no longer found by the old link. It fails towards revocation: a certificate
// whose profile is not in the active set is revoked, never kept.
package linkage
