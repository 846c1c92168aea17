package policies

import (
	"testing"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/jpki"
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
		hold   = actHold
		revoke = actRevoke
	)
	type step struct {
		after  time.Duration // since the JPKI revocation
		held   bool          // else good
		act    act
		reason crlreason.Reason // when act is revoke
		until  time.Duration    // since the JPKI revocation; 0 for none
	}
	revokeNow := func(r crlreason.Reason) []step {
		return []step{{0, false, revoke, r, 0}, {grace + time.Hour, false, revoke, r, 0}}
	}
	table := map[crlreason.Reason][]step{
		crlreason.KeyCompromise: revokeNow(crlreason.KeyCompromise),
		crlreason.AffiliationChanged: {
			{0, false, hold, 0, grace},
			{time.Hour, true, none, 0, grace}, // already held: wait
			{grace - time.Second, true, none, 0, grace},
			{grace, true, revoke, crlreason.AffiliationChanged, 0},
			{grace, false, revoke, crlreason.AffiliationChanged, 0}, // job late: straight to revoke
		},
		crlreason.Superseded: {
			{0, false, none, 0, grace},
			{grace - time.Second, false, none, 0, grace},
			{grace, false, revoke, crlreason.Superseded, 0},
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
				got := decideLinkage(p, jpki.RevokedEntry{Reason: reason, RevokedAt: revokedAt}, Derived{Held: st.held, NotAfter: notAfter}, now)
				var wantUntil time.Time
				if st.until != 0 {
					wantUntil = revokedAt.Add(st.until)
				}
				if got.Act != st.act || (st.act == actRevoke && got.Reason != st.reason) || !got.Until.Equal(wantUntil) {
					t.Errorf("%s, JPKI %s, %s after, held %v: %s %s until %v (%s); want %s %s until %v",
						profile, reason, st.after, st.held, got.Act, got.Reason, got.Until, got.Why, st.act, st.reason, wantUntil)
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
	move := jpki.RevokedEntry{Reason: crlreason.AffiliationChanged, RevokedAt: at}
	tests := []struct {
		name  string
		e     jpki.RevokedEntry
		d     Derived
		now   time.Time
		act   act
		until time.Time
	}{
		{"already revoked", jpki.RevokedEntry{Reason: crlreason.KeyCompromise, RevokedAt: at}, Derived{Revoked: true, NotAfter: at.Add(time.Hour)}, at, actNone, time.Time{}},
		{"expired", jpki.RevokedEntry{Reason: crlreason.KeyCompromise, RevokedAt: at}, Derived{NotAfter: at}, at, actNone, time.Time{}},
		{"expires before the grace ends", move, Derived{NotAfter: at.Add(48 * time.Hour)}, at, actHold, at.Add(48 * time.Hour)},
		{"CRL read late, grace counted from the revocation", move, Derived{NotAfter: at.Add(9000 * time.Hour)}, at.Add(700 * time.Hour), actHold, at.Add(720 * time.Hour)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := decideLinkage(p, tc.e, tc.d, tc.now)
			if got.Act != tc.act || !got.Until.Equal(tc.until) {
				t.Errorf("%s until %v (%s); want %s until %v", got.Act, got.Until, got.Why, tc.act, tc.until)
			}
		})
	}
}

// TestDecideLinkageUnknownProfile: a certificate whose profile is not in the
// set is revoked at once, keyCompromise if the JPKI key was compromised, else
// cessationOfOperation; one already revoked or expired is left alone.
func TestDecideLinkageUnknownProfile(t *testing.T) {
	s := shippedSet(t)
	at := time.Date(2026, 4, 1, 9, 0, 0, 0, time.UTC)
	live := Derived{NotAfter: at.Add(time.Hour)}
	for _, c := range []struct {
		name   string
		reason crlreason.Reason
		d      Derived
		act    act
		want   crlreason.Reason
	}{
		{"key compromised", crlreason.KeyCompromise, live, actRevoke, crlreason.KeyCompromise},
		{"moved", crlreason.AffiliationChanged, live, actRevoke, crlreason.CessationOfOperation},
		{"held", crlreason.Superseded, Derived{Held: true, NotAfter: at.Add(time.Hour)}, actRevoke, crlreason.CessationOfOperation},
		{"already revoked", crlreason.KeyCompromise, Derived{Revoked: true, NotAfter: at.Add(time.Hour)}, actNone, 0},
		{"expired", crlreason.KeyCompromise, Derived{NotAfter: at}, actNone, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := s.DecideLinkage("tls", jpki.RevokedEntry{Reason: c.reason, RevokedAt: at}, c.d, at)
			if got.Act != c.act || (c.act == actRevoke && got.Reason != c.want) || !got.Until.IsZero() || got.Why == "" {
				t.Errorf("%s %s until %v (%q); want %s %s", got.Act, got.Reason, got.Until, got.Why, c.act, c.want)
			}
		})
	}
}
