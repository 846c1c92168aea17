package ocsp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
)

// Publisher is the authority's ca.Publisher on a node: the node's pre-signer
// signs a new serial's first responses, and a status change's, when it leads,
// installs the leader's as it applies an intents entry or a status change
// (Hook), and Await waits until this node's cache serves what its state says
// of a serial. It exists before the cluster opens
// (the hook is registered then) and serves once Follow has made the
// pre-signer; until then it has nothing to sign or install, and the
// pre-signer's first reconcile signs what it missed.
type Publisher struct {
	c     atomic.Pointer[cluster.Cluster]
	pre   atomic.Pointer[presigner]
	cache atomic.Pointer[cache]
	log   *slog.Logger
}

// NewPublisher returns a Publisher that serves once a Follow names it.
func NewPublisher(log *slog.Logger) *Publisher {
	if log == nil {
		log = slog.Default()
	}
	return &Publisher{log: log}
}

func (p *Publisher) serve(c *cluster.Cluster, cache *cache, pre *presigner) {
	p.c.Store(c)
	p.cache.Store(cache)
	p.pre.Store(pre)
}

// FirstResponses implements ca.Publisher: good, under every CertID hash.
func (p *Publisher) FirstResponses(issuerID string, serial []byte) ([]byte, error) {
	pre := p.pre.Load()
	if pre == nil {
		return nil, errors.New("ocsp: the pre-signer has not started")
	}
	return pre.FirstResponses(issuerID, certStatus{Serial: serial, Status: statusGood, Reason: -1})
}

// StatusResponses implements ca.Publisher: the responses stating st, the status
// a change sets, under every CertID hash.
func (p *Publisher) StatusResponses(issuerID string, serial []byte, st ca.CertStatus) ([]byte, error) {
	pre := p.pre.Load()
	if pre == nil {
		return nil, errors.New("ocsp: the pre-signer has not started")
	}
	return pre.FirstResponses(issuerID, statusOf(st, serial))
}

// Hook is a cluster.Hook: it installs the responses an applied intents entry
// (first responses) or status change carries. It never fails the apply: a
// bundle it cannot install is signed by this node's pre-signer instead, which
// it learns of from its subscription.
func (p *Publisher) Hook(tx *bbolt.Tx, e cluster.Entry, result []byte) error {
	pre := p.pre.Load()
	if pre == nil {
		return nil
	}
	ch := ca.ChangeOf(e, result)
	issuer, serials, bundles := ch.Responses()
	if len(bundles) == 0 {
		return nil
	}
	if ch.SetsStatus() {
		p.installStatus(tx, pre, issuer, serials[0], bundles[0])
		return nil
	}
	for i, s := range serials {
		st := certStatus{Serial: s, Status: statusGood, Reason: -1}
		if err := pre.Install(issuer, s, st, bundles[i]); err != nil && !errors.Is(err, errUnknownIssuer) {
			p.log.Warn("ocsp: first responses not installed; this node signs its own", "issuer", issuer,
				"serial", fmt.Sprintf("%x", s), "err", err)
		}
	}
	return nil
}

// installStatus installs the responses a status change's entry carries, for
// the status the entry set, as this node's state (in the apply's transaction)
// holds it. They replace whatever the cache held that says another status.
func (p *Publisher) installStatus(tx *bbolt.Tx, pre *presigner, issuer string, serial, bundle []byte) {
	rec, err := ca.Read(tx).LookupBytes(serial)
	if err == nil {
		st := statusOf(ca.CertStatus{Status: rec.Status, Reason: rec.Reason, RevokedAt: rec.RevokedAt}, serial)
		err = pre.installChange(issuer, serial, st, bundle)
	}
	if err != nil && !errors.Is(err, errUnknownIssuer) {
		p.log.Warn("ocsp: status change's responses not installed; this node signs its own", "issuer", issuer,
			"serial", fmt.Sprintf("%x", serial), "err", err)
	}
}

// awaitRound bounds one wait on the cache: then the state is read again, in case
// the serial's status changed meanwhile (a revocation right after an issuance).
const awaitRound = 250 * time.Millisecond

// Await implements ca.Publisher: it returns once this node's cache serves, under
// every CertID hash, the status this node's state holds for serial. A serial the
// state does not hold yet (an issuance answered by a follower that has not yet
// applied its intent) is waited for. A node that does not answer for the
// serial's issuer at all (no responder certificate from it yet) does not wait:
// its /readyz/ocsp says it is not ready.
func (p *Publisher) Await(ctx context.Context, serial []byte) error {
	c, cache := p.c.Load(), p.cache.Load()
	if c == nil || cache == nil {
		return nil
	}
	for {
		var rec ca.Record
		err := c.View(func(tx *bbolt.Tx) error {
			var err error
			rec, err = ca.Read(tx).LookupBytes(serial)
			return err
		})
		switch {
		case errors.Is(err, ca.ErrNotFound):
			select {
			case <-ctx.Done():
				return fmt.Errorf("ocsp: serial %x not applied here: %w", serial, ctx.Err())
			case <-time.After(2 * time.Millisecond):
			}
			continue
		case err != nil:
			return err
		}
		st := statusOf(ca.CertStatus{Status: rec.Status, Reason: rec.Reason, RevokedAt: rec.RevokedAt}, serial)
		round, cancel := context.WithTimeout(ctx, awaitRound)
		err = cache.Await(round, rec.Issuer, serial, st)
		cancel()
		switch {
		case err == nil, errors.Is(err, errUnknownIssuer):
			return nil
		case ctx.Err() != nil:
			return err
		}
	}
}
