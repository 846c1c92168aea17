package linkage

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/policies"
)

// Defaults of Config.
const (
	// defaultInterval: how often the leader refreshes the source and looks at new
	// entries. J-LIS publishes a CRL a day; a platform operator's feed may be newer.
	defaultInterval = 5 * time.Minute
	// defaultLookback: a pass between full passes reads the entries revoked this long
	// before it, so an entry that reaches a CRL late, or a certificate whose
	// issuance was in flight at the last pass, is still seen.
	defaultLookback = 7 * 24 * time.Hour
	// defaultFullScan: how often a pass reads every entry of the CRL (a leader's
	// first pass always does).
	defaultFullScan = 24 * time.Hour
)

// actor is who the job's commands name in the audit log.
const actor = "system"

// authority is what the job needs of the node's *ca.Authority.
type authority interface {
	Revoke(ctx context.Context, serial *big.Int, reason crlreason.Reason, actor string) error
	Hold(ctx context.Context, serial *big.Int, actor string) error
}

// feed is the JPKI revocation source the job follows: *jpki.CRLSource.
type feed interface {
	Refresh(ctx context.Context, at time.Time) error
	RevokedSince(ctx context.Context, since, at time.Time) ([]jpki.RevokedEntry, error)
}

// state reads the replicated state: *cluster.Cluster.
type state interface {
	View(fn func(tx *bbolt.Tx) error) error
}

// Config configures the job of a node.
type Config struct {
	State     state
	Authority authority
	Feed      feed
	// Profiles returns the active profiles (the rules of each certificate's
	// profile).
	Profiles func() *policies.Set
	// LinkKey is the cluster's link key, as enroll.Config.LinkKey.
	LinkKey []byte
	// Interval, Lookback and FullScan: DefaultInterval, DefaultLookback and
	// DefaultFullScan if 0.
	Interval, Lookback, FullScan time.Duration
	// Now is the clock (time.Now if nil).
	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Job is the linkage job of one node. Run it on the leader: cluster.OnLeader(job.Run).
type Job struct {
	cfg     Config
	log     *slog.Logger
	acts    *prometheus.CounterVec
	passes  *prometheus.CounterVec
	waiting prometheus.Gauge
}

// errNoProfiles: a pass before the node knows the active profiles acts on
// nothing.
var errNoProfiles = errors.New("linkage: no active profiles yet")

// New checks cfg and returns the job.
func New(cfg Config) (*Job, error) {
	var errs []error
	if cfg.State == nil {
		errs = append(errs, errors.New("no state"))
	}
	if cfg.Authority == nil {
		errs = append(errs, errors.New("no authority"))
	}
	if cfg.Feed == nil {
		errs = append(errs, errors.New("no revocation feed"))
	}
	if cfg.Profiles == nil {
		errs = append(errs, errors.New("no profiles"))
	}
	if len(cfg.LinkKey) < jpki.MinHashKeyLen {
		errs = append(errs, fmt.Errorf("link key shorter than %d bytes", jpki.MinHashKeyLen))
	}
	if cfg.Interval < 0 || cfg.Lookback < 0 || cfg.FullScan < 0 {
		errs = append(errs, errors.New("negative interval, lookback or full scan"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("linkage: config: %w", err)
	}
	if cfg.Interval == 0 {
		cfg.Interval = defaultInterval
	}
	if cfg.Lookback == 0 {
		cfg.Lookback = defaultLookback
	}
	if cfg.FullScan == 0 {
		cfg.FullScan = defaultFullScan
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	j := &Job{
		cfg: cfg,
		log: cfg.Logger.With("component", "linkage"),
		acts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inkan_linkage_actions_total",
			Help: "Derived certificates held or revoked because their JPKI certificate was revoked.",
		}, []string{"act"}),
		passes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "inkan_linkage_passes_total",
			Help: "Passes of the linkage job over the JPKI revocation source, by result.",
		}, []string{"result"}),
		waiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "inkan_linkage_waiting",
			Help: "Revoked JPKI certificates whose derived certificates wait for a re-bind or the end of a grace period.",
		}),
	}
	for _, a := range []string{"hold", "revoke"} {
		j.acts.WithLabelValues(a)
	}
	for _, r := range []string{"ok", "failed"} {
		j.passes.WithLabelValues(r)
	}
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{j.acts, j.passes, j.waiting} {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("linkage: metrics: %w", err)
			}
		}
	}
	return j, nil
}

// report is what one pass did.
type report struct {
	// Entries is how many revoked JPKI certificates the pass looked at, and Linked how
	// many derived certificates were linked to them.
	Entries, Linked int
	// Held and Revoked count the acts; Conflicts the acts the CA refused because the
	// certificate changed meanwhile (they are decided again at the next pass).
	Held, Revoked, Conflicts int
	// Waiting are the entries whose certificates wait for a re-bind or the end of a
	// grace period, with when to decide again.
	Waiting map[jpki.Hash]due
}

// due is an entry to decide again at At.
type due struct {
	Entry jpki.RevokedEntry
	At    time.Time
}

// Run is the leader's loop: at once and every Interval (sooner when a grace period
// ends), refresh the feed and act on what it lists. It returns when ctx ends (the
// node stopped leading). Register it with cluster.OnLeader.
func (j *Job) Run(ctx context.Context) {
	j.log.Info("linkage: following the JPKI revocation source")
	var lastFull time.Time
	waiting := map[jpki.Hash]due{}
	for {
		now := j.cfg.Now()
		since := time.Time{}
		if !lastFull.IsZero() && now.Sub(lastFull) < j.cfg.FullScan {
			since = now.Add(-j.cfg.Lookback)
		}
		rep, err := j.pass(ctx, since, now, waiting)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			j.log.Error("linkage: pass failed", "err", err)
		default:
			waiting = rep.Waiting
			if since.IsZero() {
				lastFull = now
			}
			if rep.Held+rep.Revoked+rep.Conflicts > 0 {
				j.log.Info("linkage: pass", "entries", rep.Entries, "linked", rep.Linked,
					"held", rep.Held, "revoked", rep.Revoked, "conflicts", rep.Conflicts, "waiting", len(rep.Waiting))
			}
		}
		wait := j.cfg.Interval
		for _, d := range waiting {
			if w := d.At.Sub(now); w < wait {
				wait = max(w, time.Second)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// Scan makes one pass at the clock's time: it refreshes the feed, reads the entries
// revoked at or after since (every entry if since is zero) and acts on their derived
// certificates. Run makes such passes; a test or an operator's trigger may too.
func (j *Job) Scan(ctx context.Context, since time.Time) error {
	_, err := j.scanReport(ctx, since)
	return err
}

// scanReport is Scan, with what the pass did.
func (j *Job) scanReport(ctx context.Context, since time.Time) (report, error) {
	return j.pass(ctx, since, j.cfg.Now(), nil)
}

// pass reads the entries and decides, besides, again on the waiting entries that are
// due. A failure to read the feed or the state fails the pass (and acts on nothing
// more); a refused act is a conflict, decided again next time.
func (j *Job) pass(ctx context.Context, since, now time.Time, waiting map[jpki.Hash]due) (report, error) {
	if err := j.cfg.Feed.Refresh(ctx, now); err != nil && ctx.Err() == nil {
		// The last verified CRL stays in use while it is fresh; reading it says if not.
		j.log.Warn("linkage: revocation source not refreshed", "err", err)
	}
	rep, err := j.scan(ctx, since, now, waiting)
	if err != nil {
		j.passes.WithLabelValues("failed").Inc()
		return rep, err
	}
	j.passes.WithLabelValues("ok").Inc()
	j.waiting.Set(float64(len(rep.Waiting)))
	return rep, nil
}

func (j *Job) scan(ctx context.Context, since, now time.Time, waiting map[jpki.Hash]due) (report, error) {
	rep := report{Waiting: map[jpki.Hash]due{}}
	entries, err := j.cfg.Feed.RevokedSince(ctx, since, now)
	if err != nil {
		return rep, fmt.Errorf("linkage: read the JPKI revocations: %w", err)
	}
	todo := map[jpki.Hash]jpki.RevokedEntry{}
	for _, e := range entries {
		todo[e.CertHash(j.cfg.LinkKey)] = e
	}
	for h, d := range waiting {
		if _, listed := todo[h]; listed {
			continue
		}
		if now.Before(d.At) {
			rep.Waiting[h] = d // not due: keep waiting without a look
			continue
		}
		todo[h] = d.Entry
	}
	set := j.cfg.Profiles()
	if set == nil {
		// Without the rules every certificate would look like one of an unknown
		// profile, and be revoked: act on nothing until the profiles are known.
		return rep, errNoProfiles
	}
	for h, e := range todo {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		rep.Entries++
		targets, err := j.linked(h)
		if err != nil {
			return rep, err
		}
		for _, t := range targets {
			rep.Linked++
			until, err := j.act(ctx, set, e, t, now, &rep)
			if err != nil {
				return rep, err
			}
			if !until.IsZero() {
				if d, ok := rep.Waiting[h]; !ok || until.Before(d.At) {
					rep.Waiting[h] = due{Entry: e, At: until}
				}
			}
		}
	}
	return rep, nil
}

// target is a derived certificate linked to a revoked JPKI certificate.
type target struct {
	serial   *big.Int
	profile  string
	status   ca.Status
	notAfter time.Time
}

func (j *Job) linked(h jpki.Hash) ([]target, error) {
	var out []target
	err := j.cfg.State.View(func(tx *bbolt.Tx) error {
		for _, s := range ca.Read(tx).ByLink(h[:]) {
			rec, err := ca.Read(tx).Lookup(s)
			if err != nil {
				return err
			}
			if rec.Kind != ca.Derived {
				continue
			}
			out = append(out, target{serial: s, profile: rec.Profile, status: rec.Status, notAfter: rec.NotAfter})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("linkage: read the linked certificates: %w", err)
	}
	return out, nil
}

// act decides on one certificate and does what the decision says. It returns when to
// decide again (zero: nothing more will happen).
func (j *Job) act(ctx context.Context, set *policies.Set, e jpki.RevokedEntry, t target, now time.Time, rep *report) (time.Time, error) {
	switch t.status {
	case ca.Good, ca.Held, ca.Revoked:
	default:
		// An issuance in flight: look again at the next pass.
		return now.Add(j.cfg.Interval), nil
	}
	d := set.DecideLinkage(t.profile, e,
		policies.Derived{Held: t.status == ca.Held, Revoked: t.status == ca.Revoked, NotAfter: t.notAfter}, now)
	var err error
	switch {
	case d.Holds():
		if err = j.cfg.Authority.Hold(ctx, t.serial, actor); err == nil {
			rep.Held++
			j.acts.WithLabelValues("hold").Inc()
		}
	case d.Revokes():
		if err = j.cfg.Authority.Revoke(ctx, t.serial, crlreason.Reason(d.Reason), actor); err == nil {
			rep.Revoked++
			j.acts.WithLabelValues("revoke").Inc()
		}
	default:
		return d.Until, nil
	}
	switch {
	case err == nil:
		j.log.Info("linkage: "+d.Act.String(), "serial", certserial.Format(t.serial), "why", d.Why)
		return d.Until, nil
	case errors.Is(err, ca.ErrStatus), errors.Is(err, ca.ErrNotFound):
		// The certificate changed since it was read (revoked by an operator, re-bound):
		// decide again at the next pass, on what the state says then.
		rep.Conflicts++
		return now.Add(j.cfg.Interval), nil
	}
	return time.Time{}, fmt.Errorf("linkage: %s %s: %w", d.Act, certserial.Format(t.serial), err)
}
