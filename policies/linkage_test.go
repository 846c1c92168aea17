package policies

import (
	"testing"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
)

// TestDecideLinkage covers every reason J-LIS uses, for every shipped profile, at
// the moment of the JPKI revocation, inside the grace period and after it.
func TestDecideLinkage(t *testing.T) {
	s := shippedSet(t)
	revokedAt := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	notAfter := revokedAt.Add(300 * 24 * time.Hour)
	grace := 720 * time.Hour
	const (
		none   = actNone
		hold   = ActHold
		revoke = ActRevoke
	)
	type step struct {
		after  time.Duration // since the JPKI revocation
		state  DerivedState
		act    act
		reason crlreason.Reason // when act is revoke
		until  time.Duration    // since the JPKI revocation; 0 for none
	}
	revokeNow := func(r crlreason.Reason) []step {
		return []step{{0, DerivedGood, revoke, r, 0}, {grace + time.Hour, DerivedGood, revoke, r, 0}}
	}
	table := map[crlreason.Reason][]step{
		crlreason.KeyCompromise: revokeNow(crlreason.KeyCompromise),
		crlreason.AffiliationChanged: {
			{0, DerivedGood, hold, 0, grace},
			{time.Hour, DerivedHeld, none, 0, grace}, // already held: wait
			{grace - time.Second, DerivedHeld, none, 0, grace},
			{grace, DerivedHeld, revoke, crlreason.AffiliationChanged, 0},
			{grace, DerivedGood, revoke, crlreason.AffiliationChanged, 0}, // job late: straight to revoke
		},
		crlreason.Superseded: {
			{0, DerivedGood, none, 0, grace},
			{grace - time.Second, DerivedGood, none, 0, grace},
			{grace, DerivedGood, revoke, crlreason.Superseded, 0},
		},
		crlreason.Unspecified:          revokeNow(crlreason.CessationOfOperation),
		crlreason.CACompromise:         revokeNow(crlreason.CessationOfOperation),
		crlreason.CessationOfOperation: revokeNow(crlreason.CessationOfOperation),
		crlreason.CertificateHold:      revokeNow(crlreason.CessationOfOperation),
	}
	for _, profile := range []string{"signing", "authentication"} {
		p, _ := s.Profile(profile)
		for reason, steps := range table {
			for _, st := range steps {
				now := revokedAt.Add(st.after)
				got := DecideLinkage(p, JPKIRevocation{Reason: reason, RevokedAt: revokedAt}, Derived{State: st.state, NotAfter: notAfter}, now)
				var wantUntil time.Time
				if st.until != 0 {
					wantUntil = revokedAt.Add(st.until)
				}
				if got.Act != st.act || (st.act == ActRevoke && got.Reason != st.reason) || !got.Until.Equal(wantUntil) {
					t.Errorf("%s, JPKI %s, %s after, derived %d: %s %s until %v (%s); want %s %s until %v",
						profile, reason, st.after, st.state, got.Act, got.Reason, got.Until, got.Why, st.act, st.reason, wantUntil)
				}
				if got.Why == "" {
					t.Errorf("%s, JPKI %s: no reason given", profile, reason)
				}
			}
		}
	}
}

func TestDecideLinkageEdges(t *testing.T) {
	s := shippedSet(t)
	p, _ := s.Profile("signing")
	at := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	move := JPKIRevocation{Reason: crlreason.AffiliationChanged, RevokedAt: at}
	tests := []struct {
		name  string
		e     JPKIRevocation
		d     Derived
		now   time.Time
		act   act
		until time.Time
	}{
		{"already revoked", JPKIRevocation{Reason: crlreason.KeyCompromise, RevokedAt: at}, Derived{DerivedRevoked, at.Add(time.Hour)}, at, actNone, time.Time{}},
		{"expired", JPKIRevocation{Reason: crlreason.KeyCompromise, RevokedAt: at}, Derived{DerivedGood, at}, at, actNone, time.Time{}},
		{"expires before the grace ends", move, Derived{DerivedGood, at.Add(48 * time.Hour)}, at, ActHold, at.Add(48 * time.Hour)},
		{"CRL read late, grace counted from the revocation", move, Derived{DerivedGood, at.Add(9000 * time.Hour)}, at.Add(700 * time.Hour), ActHold, at.Add(720 * time.Hour)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := DecideLinkage(p, tc.e, tc.d, tc.now)
			if got.Act != tc.act || !got.Until.Equal(tc.until) {
				t.Errorf("%s until %v (%s); want %s until %v", got.Act, got.Until, got.Why, tc.act, tc.until)
			}
		})
	}
}
