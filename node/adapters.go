package node

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"time"

	"github.com/valyala/fasthttp"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/audit"
	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/ca/policy"
	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/ocsp"
	"github.com/inkan-pki/inkan/operator"
)

// crlSource is the authority's state as the CRL publisher reads it.
type crlSource struct {
	c    *cluster.Cluster
	auth *ca.Authority
	urls ca.URLs
}

func (s crlSource) CAs(context.Context) ([]crl.CA, error) {
	var out []crl.CA
	err := s.c.View(func(tx *bbolt.Tx) error {
		issuers, err := ca.Issuers(tx)
		for _, is := range issuers {
			if is.Cert == nil {
				continue
			}
			id := is.ID
			out = append(out, crl.CA{ID: id, Cert: is.Cert, Shards: is.CRLShards,
				URL: func(shard int) string { return s.urls.CRLURL(id, shard) }})
		}
		return err
	})
	return out, err
}

func (s crlSource) Revoked(_ context.Context, caID string, fn func(crl.Entry) error) error {
	return s.c.View(func(tx *bbolt.Tx) error {
		return ca.Walk(tx, caID, func(st ca.CertStatus) error {
			if st.Status != ca.Revoked && st.Status != ca.Held {
				return nil
			}
			return fn(crl.Entry{Serial: st.Serial, RevokedAt: st.RevokedAt, Reason: st.Reason})
		})
	})
}

func (s crlSource) Signer(ctx context.Context, caID string) (crypto.Signer, error) {
	key, _, err := s.auth.Signer(ctx, caID)
	return key, err
}

// ocspSource is the authority's state as this node's OCSP pre-signer reads it.
// It lists the CA certificates that have certified this node's responder key:
// a CA whose responder certificate has not been issued yet is not answered for
// (its serials get unauthorized) until the responder maintainer has one.
type ocspSource struct {
	c    *cluster.Cluster
	node string
	key  crypto.PublicKey
}

func (s ocspSource) Issuers(context.Context) ([]ocsp.Issuer, error) {
	var out []ocsp.Issuer
	now := time.Now()
	err := s.c.View(func(tx *bbolt.Tx) error {
		issuers, err := ca.Issuers(tx)
		if err != nil {
			return err
		}
		// One responder certificate per issuer: after a rollover the retired
		// CA's certificates are answered under its own responder certificate.
		resp, err := ca.ResponderCertificates(tx, s.node)
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
			out = append(out, ocsp.Issuer{ID: is.ID, Cert: is.Cert, Responder: r})
		}
		return nil
	})
	return out, err
}

func (s ocspSource) Statuses(_ context.Context, issuerID string, fn func(ocsp.CertStatus) error) error {
	return s.c.View(func(tx *bbolt.Tx) error {
		return ca.Walk(tx, issuerID, func(st ca.CertStatus) error { return fn(ocspStatus(st)) })
	})
}

func (s ocspSource) Status(_ context.Context, issuerID string, serial []byte) (ocsp.CertStatus, bool, error) {
	var st ca.CertStatus
	err := s.c.View(func(tx *bbolt.Tx) error {
		var err error
		st, err = ca.StatusOf(tx, issuerID, new(big.Int).SetBytes(serial))
		return err
	})
	switch {
	case errors.Is(err, ca.ErrNotFound):
		return ocsp.CertStatus{}, false, nil
	case err != nil:
		return ocsp.CertStatus{}, false, err
	}
	return ocspStatus(st), true, nil
}

// ocspStatus is what a response says of a certificate: a hold is revoked with
// reason certificateHold (RFC 6960 §2.2); an intent whose certificate has not
// been recorded is unknown (it was never delivered; should its leader die, the
// next one resolves it as revoked).
func ocspStatus(st ca.CertStatus) ocsp.CertStatus {
	out := ocsp.CertStatus{Serial: st.Serial.Bytes()}
	switch st.Status {
	case ca.Good:
		out.Status = ocsp.Good
	case ca.Revoked, ca.Held:
		out.Status, out.RevokedAt, out.Reason = ocsp.Revoked, st.RevokedAt, st.Reason
	default:
		out.Status = ocsp.Unknown
	}
	return out
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ka, err1 := x509.MarshalPKIXPublicKey(a)
	kb, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(ka, kb)
}

// responderMaintainer keeps this node's delegated responder certificates
// current: one from every CA whose certificates' status is wanted — the active
// one, and each retired one until all its derived certificates have expired —
// for the node's responder key, each renewed once two thirds of its life have
// passed. It asks the authority (which forwards to
// the leader) and tells the pre-signer when a new certificate is in.
type responderMaintainer struct {
	c        *cluster.Cluster
	auth     *ca.Authority
	key      crypto.PublicKey
	lifetime time.Duration
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
			m.log.Warn("node: OCSP responder certificate: will retry", "in", backoff, "err", err)
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
		if issuers, err = ca.Issuers(tx); err != nil {
			return err
		}
		cur, err = ca.ResponderCertificates(tx, m.c.ID())
		return err
	})
	if err != nil {
		return false, err
	}
	now := time.Now()
	did := false
	var errs []error
	for _, is := range issuers {
		switch {
		case is.Cert == nil || !now.Before(is.Cert.NotAfter):
			continue // pending, or expired with everything it issued
		case is.Status == ca.IssuerRetired && !now.Before(is.LastNotAfter):
			continue // retired, and all its certificates have expired
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
		m.log.Info("node: OCSP responder certificate issued", "issuer", is.ID,
			"serial", certserial.Format(cert.SerialNumber), "not_after", cert.NotAfter)
	}
	return did, errors.Join(errs...)
}

// caCertificates serves GET /ca/<issuer-id>.crt (the caIssuers URL of every
// certificate: the CA certificate, DER) and hands every other request to next.
func caCertificates(view func(func(*bbolt.Tx) error) error, next fasthttp.RequestHandler) fasthttp.RequestHandler {
	prefix, suffix := []byte("/ca/"), []byte(".crt")
	return func(ctx *fasthttp.RequestCtx) {
		p := ctx.Path()
		if !bytes.HasPrefix(p, prefix) || !(ctx.IsGet() || ctx.IsHead()) {
			next(ctx)
			return
		}
		id, ok := bytes.CutSuffix(p[len(prefix):], suffix)
		var der []byte
		if ok && len(id) > 0 {
			_ = view(func(tx *bbolt.Tx) error {
				if is, err := ca.LookupIssuer(tx, string(id)); err == nil && is.Cert != nil {
					der = is.Cert.Raw
				}
				return nil
			})
		}
		if der == nil {
			ctx.SetStatusCode(fasthttp.StatusNotFound)
			ctx.SetContentType("text/plain; charset=utf-8")
			ctx.SetBodyString("no such CA certificate\n")
			return
		}
		ctx.SetContentType("application/pkix-cert")
		ctx.Response.Header.Set("Cache-Control", "max-age=3600, public")
		ctx.SetBody(der)
	}
}

// describers tell the audit log what the authority's and the CRL publisher's
// commands changed. Every command type of ca's handlers is described by
// ca.DescribeCommand, so a command ca adds is audited without a change here.
func describers() map[string]audit.Describer {
	m := map[string]audit.Describer{}
	describeCA := fromDescriptions(ca.DescribeCommand)
	for _, h := range ca.Handlers() {
		m[h.Type()] = describeCA
	}
	m[policy.CommandApply] = fromDescriptions(policy.DescribeCommand)
	describeOperator := func(e cluster.Entry, result []byte) ([]audit.Record, error) {
		ds, err := operator.DescribeCommand(e, result)
		if err != nil {
			return nil, err
		}
		out := make([]audit.Record, len(ds))
		for i, d := range ds {
			out[i] = audit.Record{Type: d.Type, Actor: d.Actor, Data: d.Data}
		}
		return out, nil
	}
	for _, t := range operator.Commands() {
		m[t] = describeOperator
	}
	m[crl.TypePublish] = describeCRLPublish
	return m
}

// fromDescriptions adapts a describer of ca's shape (ca.Description has
// audit.Record's fields) to the audit log's.
func fromDescriptions(describe func(cluster.Entry, []byte) ([]ca.Description, error)) audit.Describer {
	return func(e cluster.Entry, result []byte) ([]audit.Record, error) {
		ds, err := describe(e, result)
		if err != nil {
			return nil, err
		}
		out := make([]audit.Record, len(ds))
		for i, d := range ds {
			out[i] = audit.Record{Type: d.Type, Actor: d.Actor, Serial: d.Serial, Data: d.Data}
		}
		return out, nil
	}
}

// describeCRLPublish records a published CRL by its identity and hash.
func describeCRLPublish(e cluster.Entry, _ []byte) ([]audit.Record, error) {
	var meta crl.Meta
	if err := e.Command.Decode(&meta); err != nil {
		return nil, fmt.Errorf("node: describe %s: %w", e.Command.Type, err)
	}
	return []audit.Record{{
		Type:  "crl.published",
		Actor: audit.ActorSystem,
		Data: map[string]any{
			"ca": meta.CA, "shard": meta.Shard, "number": meta.Number,
			"sha256": meta.SHA256, "entries": meta.Entries,
			"this_update": meta.ThisUpdate.UTC().Format(time.RFC3339),
			"next_update": meta.NextUpdate.UTC().Format(time.RFC3339),
		},
	}}, nil
}
