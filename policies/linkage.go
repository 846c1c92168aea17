package policies

import (
	"fmt"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
)

// DerivedState is a derived certificate's state as the linkage job reads it (from
// ca.CertStatus and the record's profile).
type DerivedState uint8

// The states of a derived certificate.
const (
	DerivedGood DerivedState = iota + 1
	DerivedHeld
	DerivedRevoked
)

// JPKIRevocation is one revoked JPKI certificate a derived certificate is linked to
// (a jpki.RevokedEntry, matched through its CertHash).
type JPKIRevocation struct {
	Reason    crlreason.Reason
	RevokedAt time.Time
}

// Derived is the derived certificate the linkage decision is about.
type Derived struct {
	State    DerivedState
	NotAfter time.Time
}

// act is what to do to a derived certificate.
type act uint8

// The acts.
const (
	// actNone: nothing now. If Decision.Until is set, decide again then.
	actNone act = iota
	// ActHold: put the certificate on hold (certificateHold) until Decision.Until,
	// when deciding again revokes it.
	ActHold
	// ActRevoke: revoke it with Decision.Reason.
	ActRevoke
)

func (a act) String() string {
	switch a {
	case ActHold:
		return "hold"
	case ActRevoke:
		return "revoke"
	}
	return "none"
}

// LinkageDecision is the linkage rule's verdict: an act, the revocation reason for
// ActRevoke, the time to decide again (zero when nothing more will happen), and
// why, in words safe for logs (no personal data; nothing that identifies the JPKI
// certificate).
type LinkageDecision struct {
	Act    act
	Reason crlreason.Reason
	Until  time.Time
	Why    string
}

// DecideLinkage applies p's linkage rule for a JPKI revocation to one linked derived
// certificate at now. It is pure: the leader's job calls it for each link of each new
// CRL entry and again at each Until, and every leader reaches the same answer since
// the grace period counts from the JPKI revocation time, not from when the job ran.
// A re-bind (DecideRebind) in the grace period ends it: the job drops the link then.
func DecideLinkage(p *Profile, e JPKIRevocation, d Derived, now time.Time) LinkageDecision {
	r := p.Linkage.Rule(e.Reason)
	why := fmt.Sprintf("profile %s v%d: JPKI %s → %s", p.Name, p.Version, e.Reason, r.Action)
	switch {
	case d.State == DerivedRevoked:
		return LinkageDecision{Why: why + "; already revoked"}
	case !now.Before(d.NotAfter):
		return LinkageDecision{Why: why + "; expired"}
	}
	reason, _ := revocationReason(r.Reason)
	switch r.Action {
	case actionRevoke:
		return LinkageDecision{Act: ActRevoke, Reason: reason, Why: why + " " + r.Reason}
	case actionHold, actionNone:
		if r.Action == actionNone && r.Grace == 0 {
			return LinkageDecision{Why: why}
		}
		deadline := e.RevokedAt.Add(r.Grace)
		if !now.Before(deadline) {
			return LinkageDecision{Act: ActRevoke, Reason: reason, Why: fmt.Sprintf("%s; not re-bound within %s, revoke %s", why, r.Grace, r.Reason)}
		}
		if d.NotAfter.Before(deadline) {
			deadline = d.NotAfter // expiry ends it first: nothing to do then
		}
		if r.Action == actionHold && d.State != DerivedHeld {
			return LinkageDecision{Act: ActHold, Until: deadline, Why: fmt.Sprintf("%s until re-bound or %s", why, r.Grace)}
		}
		return LinkageDecision{Until: deadline, Why: fmt.Sprintf("%s; waiting for a re-bind until the grace of %s ends", why, r.Grace)}
	}
	// Parse refuses other actions; fail towards revocation.
	return LinkageDecision{Act: ActRevoke, Reason: crlreason.Unspecified, Why: why + "; unknown action"}
}
