package ocsp

import (
	"context"
	"crypto"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
)

// FollowConfig is how a node's OCSP service follows the CA's replicated state.
type FollowConfig struct {
	Cluster *cluster.Cluster
	// Authority issues this node's responder certificates (it forwards to the
	// leader).
	Authority *ca.Authority
	// Key is this node's responder key, in its own HSM.
	Key crypto.Signer
	// ResponderLifetime is a responder certificate's validity; it is renewed
	// once two thirds of it have passed.
	ResponderLifetime time.Duration
	// Archive is how long after the last of its certificates expired a retired
	// CA's certificates are still answered for (ocsp.archive_years); it is also
	// the pre-signer's Retention.
	Archive time.Duration
	// The pre-signer's tuning; zero values take the defaults in parentheses.
	// Validity is nextUpdate - thisUpdate (4 days); RefreshAfter is the age at
	// which a response is signed again (2 days), spread by up to a quarter with
	// jitter.
	Validity     time.Duration
	RefreshAfter time.Duration
	// Rate caps refresh signatures per second, to leave the HSM room for
	// issuance (0: no cap). Status changes are signed at once, outside the cap.
	Rate float64
	// Workers is how many responses are made at once (8).
	Workers int
	// ScanInterval is how often the cache is scanned for responses due (30s).
	ScanInterval time.Duration
	// StorePath is the node-local bbolt file of signed responses.
	StorePath string
	// Publisher, if not nil, serves from this follower's cache once Follow has
	// made it.
	Publisher  *Publisher
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Follower is a node's OCSP service over the CA's state: the pre-signer, which
// reads the state through a Source of its own; the keeper of this node's
// responder certificates; and the pump that tells the pre-signer of every
// status change as it is applied.
type Follower struct {
	c       *cluster.Cluster
	cache   *cache
	pre     *presigner
	src     caSource
	rm      *responderMaintainer
	sub     *cluster.Subscription
	archive time.Duration
	reg     prometheus.Registerer
	log     *slog.Logger
}

// Follow makes the pre-signer (loading its cache from StorePath) and
// subscribes to the state's changes, so that nothing applied from now on is
// missed; Run follows them.
func Follow(ctx context.Context, cfg FollowConfig) (*Follower, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	c := cfg.Cluster
	cache := newCache()
	src := caSource{c: c, node: c.ID(), key: cfg.Key.Public()}
	pcfg := presignerConfig{Key: cfg.Key, Validity: cfg.Validity, RefreshAfter: cfg.RefreshAfter, Rate: cfg.Rate,
		Workers: cfg.Workers, Retention: cfg.Archive, ScanInterval: cfg.ScanInterval, StorePath: cfg.StorePath,
		Logger: cfg.Logger, Registerer: cfg.Registerer}
	pre, err := newPresigner(ctx, cache, src, pcfg)
	if err != nil {
		return nil, err
	}
	if cfg.Publisher != nil {
		cfg.Publisher.serve(c, cache, pre)
	}
	return &Follower{
		c: c, cache: cache, pre: pre, src: src, archive: cfg.Archive, reg: cfg.Registerer, log: cfg.Logger,
		rm: &responderMaintainer{
			c: c, auth: cfg.Authority, key: cfg.Key.Public(), lifetime: cfg.ResponderLifetime,
			archive: cfg.Archive, log: cfg.Logger, poke: make(chan struct{}, 1),
		},
		sub: c.Subscribe(4096, ca.FollowedCommands()...),
	}, nil
}

// Health is how current the follower's cache is (its pre-signer's last scan).
func (f *Follower) Health() Health { return f.pre.Health() }

// Handler serves the OCSP listener: responses from the follower's cache, the
// published CRLs and the CA certificates (/ca/<issuer-id>.crt).
func (f *Follower) Handler() fasthttp.RequestHandler {
	history := newHistory(f.c.View, f.cache, func() bool { return f.Health().Reconciled }) // /status and /evidence
	return caCertificates(f.c.View, history.Wrap(newResponder(f.cache, newStateCRLs(f.c.View), f.reg).ServeFastHTTP))
}

// Run follows the state until ctx ends: it keeps the responder certificates
// current, tells the pre-signer of every change, and restarts the pre-signer
// if it stops on an error. It closes the pre-signer when it returns.
func (f *Follower) Run(ctx context.Context) {
	changes := make(chan change, 1024)
	var wg sync.WaitGroup
	goRun := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	goRun(func() { f.pump(ctx, changes) })
	goRun(func() {
		f.rm.run(ctx, func() {
			select {
			case changes <- change{Resync: true}:
			case <-ctx.Done():
			}
		})
	})
	goRun(func() {
		defer f.pre.Close()
		for {
			err := f.pre.Run(ctx, changes)
			if ctx.Err() != nil {
				return
			}
			f.log.Error("ocsp: the pre-signer stopped; restarting in 5s", "err", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
	})
	wg.Wait()
}

// pump turns the applied commands into the pre-signer's changes, and wakes the
// responder maintainer when the CA certificates change.
func (f *Follower) pump(ctx context.Context, changes chan<- change) {
	defer f.sub.Close()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-f.sub.C:
			var ch change
			switch {
			case ev.Resync:
				ch = change{Resync: true}
				f.rm.wake()
			default:
				c := ca.ChangeOf(ev.Entry, ev.Result)
				if c.Issuers() {
					f.rm.wake() // a new active CA wants a responder certificate from it
					continue
				}
				id, serials := c.Serials()
				if id == "" {
					continue
				}
				ch = change{IssuerID: id, Serials: serials}
			}
			select {
			case changes <- ch:
			case <-ctx.Done():
				return
			}
		}
	}
}

// caSource is the CA's state as this node's pre-signer reads it. It lists
// the CA certificates that have certified this node's responder key: a CA
// whose responder certificate has not been issued yet is not answered for (its
// serials get unauthorized) until the responder maintainer has one.
type caSource struct {
	c    *cluster.Cluster
	node string
	key  crypto.PublicKey
}

func (s caSource) Issuers(context.Context) ([]issuer, error) {
	var out []issuer
	now := time.Now()
	err := s.c.View(func(tx *bbolt.Tx) error {
		issuers, err := ca.Read(tx).Issuers()
		if err != nil {
			return err
		}
		// One responder certificate per issuer: after a rollover the retired
		// CA's certificates are answered under its own responder certificate.
		resp, err := ca.Read(tx).ResponderCertificates(s.node)
		if err != nil {
			return err
		}
		for _, is := range issuers {
			r := resp[is.ID]
			if is.Cert == nil || r == nil || !now.Before(r.NotAfter) {
				continue // none yet, or one no relying party accepts any more
			}
			if !samePublicKey(r.PublicKey, s.key) || r.CheckSignatureFrom(is.Cert) != nil {
				continue // made for a responder key this node no longer has
			}
			out = append(out, issuer{ID: is.ID, Cert: is.Cert, Responder: r})
		}
		return nil
	})
	return out, err
}

func (s caSource) Statuses(_ context.Context, issuerID string, fn func(certStatus) error) error {
	return s.c.View(func(tx *bbolt.Tx) error {
		return ca.Read(tx).Walk(issuerID, func(st ca.CertStatus) error { return fn(statusOf(st, st.Serial.Bytes())) })
	})
}

func (s caSource) Status(_ context.Context, issuerID string, serial []byte) (certStatus, bool, error) {
	var st ca.CertStatus
	err := s.c.View(func(tx *bbolt.Tx) error {
		var err error
		st, err = ca.Read(tx).StatusOfBytes(issuerID, serial)
		return err
	})
	switch {
	case errors.Is(err, ca.ErrNotFound):
		return certStatus{}, false, nil
	case err != nil:
		return certStatus{}, false, err
	}
	return statusOf(st, serial), true, nil
}

// statusOf is what a response says of a certificate, serial (big-endian
// bytes): a hold is revoked with reason certificateHold (RFC 6960 §2.2); a
// pending intent is good, as the certificate it may become would be (Boulder
// answers for a precertificate the same way). Its certificate may be signed,
// recorded and in its subscriber's hands while a node has applied the intent
// but not yet learnt that the issued record was committed (a leader that dies
// right after answering leaves the followers in that state until the next
// leader's first commit); if it was never recorded, the next leader resolves
// the intent as revoked (cessationOfOperation) and the answer turns revoked.
func statusOf(st ca.CertStatus, serial []byte) certStatus {
	out := certStatus{Serial: serial}
	switch st.Status {
	case ca.Good, ca.Pending:
		out.Status = statusGood
	case ca.Revoked, ca.Held:
		out.Status, out.RevokedAt, out.Reason = statusRevoked, st.RevokedAt, int(st.Reason)
	default:
		out.Status = unknown
	}
	return out
}

// Unanswered lists the CAs whose status is answered (ca.Issuer.Answered) that the
// pre-signer does not sign for (signs, from its Health): this node holds no
// valid responder certificate from them, or its pre-signer has not taken it
// in. A retired CA that no node holds a valid responder certificate from is
// left out: that is the whole cluster's condition (its key destroyed), not
// this node's, and every node would be taken out of the load balancer for it.
func (f *Follower) Unanswered(now time.Time, signs []string) []string {
	var missing []string
	err := f.c.View(func(tx *bbolt.Tx) error {
		all, err := ca.Read(tx).Issuers()
		if err != nil {
			return err
		}
		var held map[string]bool // the CAs some node holds a valid responder certificate from
		for _, is := range all {
			if !is.Answered(now, f.archive) || slices.Contains(signs, is.ID) {
				continue
			}
			if !is.Active() {
				if held == nil {
					if held, err = heldResponders(tx, now); err != nil {
						return err
					}
				}
				if !held[is.ID] {
					continue
				}
			}
			missing = append(missing, is.ID)
		}
		return nil
	})
	if err != nil {
		return []string{"(state: " + err.Error() + ")"}
	}
	return missing
}
