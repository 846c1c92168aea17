package ocsp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/cluster"
)

// responderMaintainer keeps this node's delegated responder certificates
// current: one from every CA whose certificates' status is wanted — the active
// one, and each retired one until the archive period (ocsp.archive_years) has
// passed since the last of its certificates expired — for the node's responder
// key, each renewed once two thirds of its life have passed. A responder
// certificate cannot outlive its CA's certificate, so none is issued once that
// has expired; nor once the CA key is gone (destroyed on every voter): the
// leader cannot sign one, the node retries once a minute and logs it, and the
// CA's responses run out at their nextUpdate (then tryLater; the published
// CRLs stay as evidence). It asks the authority (which forwards to the
// leader) and tells the pre-signer when a new certificate is in.
type responderMaintainer struct {
	c        *cluster.Cluster
	auth     *ca.Authority
	key      crypto.PublicKey
	lifetime time.Duration
	archive  time.Duration // ocsp.archive_years
	log      *slog.Logger
	poke     chan struct{}
}

// wake asks for a check soon (the CAs changed).
func (m *responderMaintainer) wake() {
	select {
	case m.poke <- struct{}{}:
	default:
	}
}

func (m *responderMaintainer) run(ctx context.Context, renewed func()) {
	const (
		every    = time.Minute
		retry    = 2 * time.Second
		maxRetry = every
	)
	wait, backoff := time.Duration(0), retry
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		case <-m.poke:
		}
		did, err := m.check(ctx)
		if ctx.Err() != nil {
			return
		}
		if did {
			renewed() // those issued count, even if another CA failed
		}
		if err != nil {
			m.log.Warn("ocsp: responder certificate: will retry", "in", backoff, "err", err)
			// A CA that keeps failing (a retired key gone from the HSMs) is
			// retried less and less often, up to once a minute.
			wait, backoff = backoff, min(2*backoff, maxRetry)
			continue
		}
		wait, backoff = every, retry
	}
}

// check issues the responder certificates the node needs, and reports whether it
// issued any. It goes on past a CA that fails, and returns the failures joined.
func (m *responderMaintainer) check(ctx context.Context) (bool, error) {
	var issuers []ca.Issuer
	var cur map[string]*x509.Certificate
	err := m.c.View(func(tx *bbolt.Tx) error {
		var err error
		if issuers, err = ca.Read(tx).Issuers(); err != nil {
			return err
		}
		cur, err = ca.Read(tx).ResponderCertificates(m.c.ID())
		return err
	})
	if err != nil {
		return false, err
	}
	now := time.Now()
	did := false
	var errs []error
	for _, is := range issuers {
		if !is.Answered(now, m.archive) {
			continue
		}
		if c := cur[is.ID]; c != nil && samePublicKey(c.PublicKey, m.key) && c.CheckSignatureFrom(is.Cert) == nil {
			renewAt := c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
			if now.Before(renewAt) {
				continue
			}
		}
		cert, err := m.auth.IssueResponderFrom(ctx, is.ID, m.c.ID(), m.key, m.lifetime)
		if err != nil {
			errs = append(errs, fmt.Errorf("from %s: %w", is.ID, err))
			continue
		}
		did = true
		m.log.Info("ocsp: responder certificate issued", "issuer", is.ID,
			"serial", certserial.Format(cert.SerialNumber), "not_after", cert.NotAfter)
	}
	return did, errors.Join(errs...)
}

// heldResponders lists the CAs that some node holds a valid responder
// certificate from.
func heldResponders(tx *bbolt.Tx, now time.Time) (map[string]bool, error) {
	nodes, err := ca.Read(tx).ResponderNodes()
	if err != nil {
		return nil, err
	}
	held := map[string]bool{}
	for _, n := range nodes {
		certs, err := ca.Read(tx).ResponderCertificates(n)
		if err != nil {
			return nil, err
		}
		for id, c := range certs {
			if now.Before(c.NotAfter) {
				held[id] = true
			}
		}
	}
	return held, nil
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ka, err1 := x509.MarshalPKIXPublicKey(a)
	kb, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(ka, kb)
}
