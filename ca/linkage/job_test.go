package linkage

import (
	"context"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/policies"
)

var reasons = []crlreason.Reason{
	crlreason.Unspecified, crlreason.KeyCompromise, crlreason.CACompromise, crlreason.AffiliationChanged,
	crlreason.Superseded, crlreason.CessationOfOperation, crlreason.CertificateHold,
}

// want is a derived certificate's expected state: its status and, when revoked, the
// reason.
type want struct {
	status ca.Status
	reason crlreason.Reason
}

func (w want) check(t *testing.T, what string, serial *big.Int) ca.CertStatus {
	t.Helper()
	st := status(t, serial)
	if st.Status != w.status || (w.status == ca.Revoked && st.Reason != w.reason) {
		t.Errorf("%s: %s (reason %d), want %s (reason %d)", what, st.Status, st.Reason, w.status, w.reason)
	}
	return st
}

// TestLinkageByReason revokes a JPKI certificate with each J-LIS reason, publishes
// the CRL and runs the job: every derived certificate linked to it, of each shipped
// profile, reaches the state the profile's rule says — at once, and when the grace
// period has passed (a fake clock, and a CRL published then). Passes again, and a
// new leader's job, change nothing; already revoked and expired certificates are
// left alone.
func TestLinkageByReason(t *testing.T) {
	start := time.Now()
	j := newJLIS(t, start)
	revokedAt := start.Add(-time.Minute)
	yearOn := start.Add(365 * 24 * time.Hour)

	type linked struct {
		what          string
		serial        *big.Int
		atOnce, after want
	}
	var certs []linked
	var operatorRevoked, expiring *big.Int
	for _, profile := range []string{"authentication", "signing"} {
		for _, r := range reasons {
			c, sc := j.card(t, newPerson())
			now, later := map[crlreason.Reason]want{
				crlreason.KeyCompromise:      {ca.Revoked, crlreason.KeyCompromise},
				crlreason.AffiliationChanged: {ca.Held, 0},
				crlreason.Superseded:         {ca.Good, 0},
			}[r], map[crlreason.Reason]want{
				crlreason.KeyCompromise:      {ca.Revoked, crlreason.KeyCompromise},
				crlreason.AffiliationChanged: {ca.Revoked, crlreason.AffiliationChanged},
				crlreason.Superseded:         {ca.Revoked, crlreason.Superseded},
			}[r]
			if now.status == 0 && later.status == 0 { // Pending is 0: no rule above
				now = want{ca.Revoked, crlreason.CessationOfOperation}
				later = now
			}
			for i := range 2 { // two derived certificates per JPKI certificate
				what := profile + " " + r.String() + " #" + string(rune('1'+i))
				certs = append(certs, linked{what, derive(t, sc, profile, yearOn), now, later})
			}
			if profile == "authentication" && r == crlreason.CessationOfOperation {
				operatorRevoked = derive(t, sc, profile, yearOn)
				if err := fx.authority.Revoke(context.Background(), operatorRevoked, crlreason.Unspecified, "system"); err != nil {
					t.Fatal(err)
				}
			}
			if profile == "authentication" && r == crlreason.Superseded {
				expiring = derive(t, sc, profile, start.Add(48*time.Hour)) // gone before the grace ends
			}
			if err := j.sim.Revoke(c.Serial, r, revokedAt); err != nil {
				t.Fatal(err)
			}
		}
	}
	j.publish(t, start)

	clk := &clock{now: start}
	job := newJob(t, j, clk.Now)
	rep, err := job.scanReport(context.Background(), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range certs {
		c.atOnce.check(t, c.what+", at once", c.serial)
	}
	// 2 profiles × 7 reasons, 2 certificates each; and the operator's and the expiring one.
	if rep.Entries != 14 || rep.Linked != 30 || rep.Held != 4 || rep.Revoked != 20 || rep.Conflicts != 0 {
		t.Errorf("first pass: %+v", rep)
	}
	if len(rep.Waiting) != 4 { // affiliationChanged and superseded, per profile
		t.Errorf("%d entries waiting, want 4", len(rep.Waiting))
	}
	opBefore := want{ca.Revoked, crlreason.Unspecified}.check(t, "revoked by an operator before", operatorRevoked)
	want{ca.Good, 0}.check(t, "expiring, superseded", expiring)

	// Again, and as a new leader would: nothing more happens.
	for _, again := range []*Job{job, newJob(t, j, clk.Now)} {
		rep, err := again.scanReport(context.Background(), time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if rep.Held+rep.Revoked+rep.Conflicts != 0 || rep.Linked != 30 {
			t.Errorf("a pass after the first acted: %+v", rep)
		}
	}

	// The grace period (720h) counts from the JPKI revocation: an hour before its end
	// nothing changes; after it, held and kept certificates are revoked.
	for _, step := range []struct {
		at    time.Time
		after bool
	}{
		{revokedAt.Add(719 * time.Hour), false},
		{revokedAt.Add(720*time.Hour + time.Second), true},
	} {
		clk.Set(step.at)
		j.publish(t, step.at) // J-LIS publishes daily: the job reads a fresh CRL
		if err := job.Scan(context.Background(), time.Time{}); err != nil {
			t.Fatal(err)
		}
		for _, c := range certs {
			w := c.atOnce
			if step.after {
				w = c.after
			}
			w.check(t, c.what+" at "+step.at.Sub(revokedAt).String(), c.serial)
		}
	}
	opAfter := want{ca.Revoked, crlreason.Unspecified}.check(t, "revoked by an operator before", operatorRevoked)
	if !opAfter.RevokedAt.Equal(opBefore.RevokedAt) {
		t.Error("the operator's revocation was changed")
	}
	want{ca.Good, 0}.check(t, "expired before the grace ended", expiring)
}

// TestLinkageRunsOnLeader: registered with cluster.OnLeader, the job follows the
// source by itself: a revocation published after it started reaches the derived
// certificate within a few intervals.
func TestLinkageRunsOnLeader(t *testing.T) {
	start := time.Now()
	j := newJLIS(t, start)
	c, sc := j.card(t, newPerson())
	serial := derive(t, sc, "signing", start.Add(24*time.Hour))
	j.publish(t, start)
	job := newJob(t, j, time.Now, func(c *Config) { c.Interval = 20 * time.Millisecond })

	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	fx.cluster.OnLeader(func(lead context.Context) {
		if ctx.Err() != nil {
			return
		}
		run, stop := context.WithCancel(lead)
		defer stop()
		defer context.AfterFunc(ctx, stop)()
		job.Run(run)
		close(stopped)
	})
	time.Sleep(100 * time.Millisecond)
	want{ca.Good, 0}.check(t, "before the JPKI revocation", serial)

	if err := j.sim.Revoke(c.Serial, crlreason.KeyCompromise, time.Now()); err != nil {
		t.Fatal(err)
	}
	j.publish(t, time.Now())
	deadline := time.Now().Add(10 * time.Second)
	for status(t, serial).Status != ca.Revoked && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	want{ca.Revoked, crlreason.KeyCompromise}.check(t, "after the JPKI revocation", serial)
	cancel()
	select {
	case <-stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("the job did not stop with its context")
	}
}

// TestLinkageUnknownProfile: a certificate whose profile is not in the active set is
// revoked (cessationOfOperation), whatever the J-LIS reason, rather than kept.
func TestLinkageUnknownProfile(t *testing.T) {
	start := time.Now()
	j := newJLIS(t, start)
	c, sc := j.card(t, newPerson())
	serial := derive(t, sc, "authentication", start.Add(24*time.Hour))
	if err := j.sim.Revoke(c.Serial, crlreason.AffiliationChanged, start.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	j.publish(t, start)
	signingOnly := restricted(t, "signing")
	job := newJob(t, j, func() time.Time { return start }, func(c *Config) {
		c.Profiles = func() *policies.Set { return signingOnly }
	})
	if err := job.Scan(context.Background(), time.Time{}); err != nil {
		t.Fatal(err)
	}
	want{ca.Revoked, crlreason.CessationOfOperation}.check(t, "profile gone", serial)
}

// TestLinkageStaleSource: a stale CRL fails the pass and acts on nothing.
func TestLinkageStaleSource(t *testing.T) {
	start := time.Now()
	j := newJLIS(t, start)
	c, sc := j.card(t, newPerson())
	serial := derive(t, sc, "authentication", start.Add(24*time.Hour))
	if err := j.sim.Revoke(c.Serial, crlreason.KeyCompromise, start.Add(-72*time.Hour)); err != nil {
		t.Fatal(err)
	}
	j.publish(t, start.Add(-71*time.Hour)) // past its nextUpdate
	job := newJob(t, j, func() time.Time { return start })
	if err := job.Scan(context.Background(), time.Time{}); !errors.Is(err, jpki.ErrRevocationStale) {
		t.Fatalf("pass over a stale CRL: %v", err)
	}
	want{ca.Good, 0}.check(t, "stale source", serial)
}

// restricted is the fixture's profile set with only the named profiles.
func restricted(t *testing.T, names ...string) *policies.Set {
	t.Helper()
	fsys := map[string][]byte{}
	for _, n := range names {
		p, _ := fx.set.Profile(n)
		if p == nil {
			t.Fatalf("no profile %s", n)
		}
		fsys[n+".yaml"] = shippedFile(t, n)
	}
	set, err := policies.Load(mapFS(fsys), fx.linkKey, names[0])
	if err != nil {
		t.Fatal(err)
	}
	return set
}

func TestNewRefusesBadConfig(t *testing.T) {
	_, err := New(Config{LinkKey: []byte("short"), Interval: -1})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range []string{"state", "authority", "feed", "profiles", "link key", "negative"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not mention %s: %v", w, err)
		}
	}
}

// TestLinkageWithoutProfiles: before the node knows the active profiles (a store not
// followed yet), a pass fails and acts on nothing, rather than treat every
// certificate as one of an unknown profile and revoke it.
func TestLinkageWithoutProfiles(t *testing.T) {
	start := time.Now()
	j := newJLIS(t, start)
	c, sc := j.card(t, newPerson())
	serial := derive(t, sc, "authentication", start.Add(24*time.Hour))
	if err := j.sim.Revoke(c.Serial, crlreason.AffiliationChanged, start.Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	j.publish(t, start)
	job := newJob(t, j, func() time.Time { return start }, func(c *Config) {
		c.Profiles = func() *policies.Set { return nil }
	})
	if err := job.Scan(context.Background(), time.Time{}); !errors.Is(err, errNoProfiles) {
		t.Fatalf("a pass without profiles: err = %v, want errNoProfiles", err)
	}
	want{ca.Good, 0}.check(t, "no profiles", serial)
}
