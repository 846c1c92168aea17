package policies

import (
	"fmt"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/jpki"
)

// Derived is a derived certificate as the linkage and re-bind rules read it
// (from the CA's record). A certificate neither Revoked nor Held is good; the
// CA's other states (an issuance in flight) are the caller's to leave alone or
// to count as Revoked.
type Derived struct {
	Revoked  bool
	Held     bool
	NotAfter time.Time
	// HeldBySystem says, for a re-bind, that its hold, if it is held, is the
	// linkage job's (across a move); a hold by anyone else, or by no one known,
	// is an operator's.
	HeldBySystem bool
	// Bound says, for a re-bind, that it is bound to the new JPKI certificate
	// already.
	Bound bool
}

// act is what to do to a derived certificate.
type act uint8

// The acts.
const (
	// actNone: nothing now. If Decision.Until is set, decide again then.
	actNone act = iota
	// actHold: put the certificate on hold (certificateHold) until Decision.Until,
	// when deciding again revokes it.
	actHold
	// actRevoke: revoke it with Decision.Reason.
	actRevoke
)

func (a act) String() string {
	switch a {
	case actHold:
		return "hold"
	case actRevoke:
		return "revoke"
	}
	return "none"
}

// LinkageDecision is the linkage rule's verdict: an act, the revocation reason for
// actRevoke, the time to decide again (zero when nothing more will happen), and
// why, in words safe for logs (no personal data; nothing that identifies the JPKI
// certificate).
type LinkageDecision struct {
	Act    act
	Reason crlreason.Reason
	Until  time.Time
	Why    string
}

// Holds tells whether the decision is to put the certificate on hold.
func (d LinkageDecision) Holds() bool { return d.Act == actHold }

// Revokes tells whether the decision is to revoke the certificate with Reason.
func (d LinkageDecision) Revokes() bool { return d.Act == actRevoke }

// DecideLinkage applies the linkage rule of profile (the profile the
// derived certificate d was issued under) to e, a JPKI revocation it is linked
// to (matched through its CertHash), at now. A profile not in the set revokes:
// keyCompromise if the JPKI key was compromised, else cessationOfOperation.
func (s *Set) DecideLinkage(profile string, e jpki.RevokedEntry, d Derived, now time.Time) LinkageDecision {
	if p, ok := s.Profile(profile); ok {
		return decideLinkage(p, e, d, now)
	}
	why := fmt.Sprintf("profile %s not in the active set: JPKI %s → revoke", profile, e.Reason)
	if d.Revoked || !now.Before(d.NotAfter) {
		return LinkageDecision{Why: why + "; already revoked or expired"}
	}
	reason := crlreason.CessationOfOperation
	if e.Reason == crlreason.KeyCompromise {
		reason = crlreason.KeyCompromise
	}
	return LinkageDecision{Act: actRevoke, Reason: reason, Why: why}
}

// decideLinkage applies p's linkage rule for a JPKI revocation to one linked derived
// certificate at now. It is pure: the leader's job calls it for each link of each new
// CRL entry and again at each Until, and every leader reaches the same answer since
// the grace period counts from the JPKI revocation time, not from when the job ran.
// A re-bind (DecideRebind) in the grace period ends it: the job drops the link then.
func decideLinkage(p *Profile, e jpki.RevokedEntry, d Derived, now time.Time) LinkageDecision {
	r := p.Linkage.Rule(e.Reason)
	why := fmt.Sprintf("profile %s v%d: JPKI %s → %s", p.Name, p.Version, e.Reason, r.Action)
	switch {
	case d.Revoked:
		return LinkageDecision{Why: why + "; already revoked"}
	case !now.Before(d.NotAfter):
		return LinkageDecision{Why: why + "; expired"}
	}
	reason, _ := revocationReason(r.Reason)
	switch r.Action {
	case actionRevoke:
		return LinkageDecision{Act: actRevoke, Reason: reason, Why: why + " " + r.Reason}
	case actionHold, actionNone:
		if r.Action == actionNone && r.Grace == 0 {
			return LinkageDecision{Why: why}
		}
		deadline := e.RevokedAt.Add(r.Grace)
		if !now.Before(deadline) {
			return LinkageDecision{Act: actRevoke, Reason: reason, Why: fmt.Sprintf("%s; not re-bound within %s, revoke %s", why, r.Grace, r.Reason)}
		}
		if d.NotAfter.Before(deadline) {
			deadline = d.NotAfter // expiry ends it first: nothing to do then
		}
		if r.Action == actionHold && !d.Held {
			return LinkageDecision{Act: actHold, Until: deadline, Why: fmt.Sprintf("%s until re-bound or %s", why, r.Grace)}
		}
		return LinkageDecision{Until: deadline, Why: fmt.Sprintf("%s; waiting for a re-bind until the grace of %s ends", why, r.Grace)}
	}
	// Parse refuses other actions; fail towards revocation.
	return LinkageDecision{Act: actRevoke, Reason: crlreason.Unspecified, Why: why + "; unknown action"}
}
