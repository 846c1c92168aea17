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
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/audit"
	auditlog "github.com/inkan-pki/inkan/audit/log"
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
// reason certificateHold (RFC 6960 §2.2); a pending intent is good, as the
// certificate it may become would be (Boulder answers for a precertificate the
// same way). Its certificate may be signed, recorded and in its subscriber's
// hands while a node has applied the intent but not yet learnt that the issued
// record was committed (a leader that dies right after answering leaves the
// followers in that state until the next leader's first commit); if it was
// never recorded, the next leader resolves the intent as revoked
// (cessationOfOperation) and the answer turns revoked.
func ocspStatus(st ca.CertStatus) ocsp.CertStatus {
	out := ocsp.CertStatus{Serial: st.Serial.Bytes()}
	switch st.Status {
	case ca.Good, ca.Pending:
		out.Status = ocsp.Good
	case ca.Revoked, ca.Held:
		out.Status, out.RevokedAt, out.Reason = ocsp.Revoked, st.RevokedAt, st.Reason
	default:
		out.Status = ocsp.Unknown
	}
	return out
}

// ocspPublisher is the authority's ca.Publisher: the OCSP pre-signer of this
// node signs a new serial's first responses when it leads, installs the
// leader's as it applies an intents entry (hook), and Await waits until this
// node's cache serves what its state says of a serial. It exists before the
// cluster opens (the hook is registered then) and serves once startOCSP has
// made the pre-signer; until then it has nothing to sign or install, and the
// pre-signer's first reconcile signs what it missed.
type ocspPublisher struct {
	c     atomic.Pointer[cluster.Cluster]
	pre   atomic.Pointer[ocsp.Presigner]
	cache atomic.Pointer[ocsp.Cache]
	log   *slog.Logger
}

// FirstResponses implements ca.Publisher: good, under every CertID hash.
func (p *ocspPublisher) FirstResponses(issuerID string, serial []byte) ([]byte, error) {
	pre := p.pre.Load()
	if pre == nil {
		return nil, errors.New("node: the OCSP pre-signer has not started")
	}
	return pre.FirstResponses(issuerID, ocsp.CertStatus{Serial: serial, Status: ocsp.Good, Reason: -1})
}

// hook installs the first responses an applied intents entry carries. It never
// fails the apply: a bundle it cannot install is signed by this node's
// pre-signer instead, which it learns of from its subscription.
func (p *ocspPublisher) hook(_ *bbolt.Tx, e cluster.Entry, result []byte) error {
	if e.Command.Type != ca.CommandIntents {
		return nil
	}
	pre := p.pre.Load()
	if pre == nil {
		return nil
	}
	issuer, serials, bundles := ca.IntentResponses(e, result)
	for i, s := range serials {
		st := ocsp.CertStatus{Serial: s, Status: ocsp.Good, Reason: -1}
		if err := pre.Install(issuer, s, st, bundles[i]); err != nil && !errors.Is(err, ocsp.ErrUnknownIssuer) {
			p.log.Warn("node: first OCSP responses not installed; this node signs its own", "issuer", issuer,
				"serial", fmt.Sprintf("%x", s), "err", err)
		}
	}
	return nil
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
func (p *ocspPublisher) Await(ctx context.Context, serial []byte) error {
	c, cache := p.c.Load(), p.cache.Load()
	if c == nil || cache == nil {
		return nil
	}
	for {
		var rec ca.Record
		err := c.View(func(tx *bbolt.Tx) error {
			var err error
			rec, err = ca.Lookup(tx, new(big.Int).SetBytes(serial))
			return err
		})
		switch {
		case errors.Is(err, ca.ErrNotFound):
			select {
			case <-ctx.Done():
				return fmt.Errorf("node: serial %x not applied here: %w", serial, ctx.Err())
			case <-time.After(2 * time.Millisecond):
			}
			continue
		case err != nil:
			return err
		}
		st := ocspStatus(ca.CertStatus{Serial: rec.Serial, Status: rec.Status, Reason: rec.Reason, RevokedAt: rec.RevokedAt})
		round, cancel := context.WithTimeout(ctx, awaitRound)
		err = cache.Await(round, rec.Issuer, serial, st)
		cancel()
		switch {
		case err == nil, errors.Is(err, ocsp.ErrUnknownIssuer):
			return nil
		case ctx.Err() != nil:
			return err
		}
	}
}

func samePublicKey(a, b crypto.PublicKey) bool {
	ka, err1 := x509.MarshalPKIXPublicKey(a)
	kb, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(ka, kb)
}

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
			m.log.Warn("node: OCSP responder certificate: will retry", "in", backoff, "err", err)
			// A CA that keeps failing (a retired key gone from the HSMs) is
			// retried less and less often, up to once a minute.
			wait, backoff = backoff, min(2*backoff, maxRetry)
			continue
		}
		wait, backoff = every, retry
	}
}

// answeredFor tells whether the status of an issuer's certificates is answered
// at now, and so whether every node needs a responder certificate from it: it
// has its certificate, which has not expired (a responder certificate cannot
// outlive it), and it is active, or retired with certificates that expired less
// than the archive period ago (expired or not, their status stays answerable).
func answeredFor(is ca.Issuer, now time.Time, archive time.Duration) bool {
	switch {
	case is.Cert == nil || !now.Before(is.Cert.NotAfter):
		return false // pending, or its certificate expired
	case is.Status == ca.IssuerRetired:
		return !is.LastNotAfter.IsZero() && now.Before(is.LastNotAfter.Add(archive))
	}
	return true
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
		if !answeredFor(is, now, m.archive) {
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
func describers() map[string]auditlog.Describer {
	m := map[string]auditlog.Describer{}
	describeCA := fromDescriptions(ca.DescribeCommand)
	for _, h := range ca.Handlers() {
		m[h.Type()] = describeCA
	}
	m[policy.CommandApply] = fromDescriptions(policy.DescribeCommand)
	describeOperator := func(e cluster.Entry, result []byte) ([]auditlog.Record, error) {
		ds, err := operator.DescribeCommand(e, result)
		if err != nil {
			return nil, err
		}
		out := make([]auditlog.Record, len(ds))
		for i, d := range ds {
			out[i] = auditlog.Record{Type: d.Type, Actor: d.Actor, Data: d.Data}
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
func fromDescriptions(describe func(cluster.Entry, []byte) ([]ca.Description, error)) auditlog.Describer {
	return func(e cluster.Entry, result []byte) ([]auditlog.Record, error) {
		ds, err := describe(e, result)
		if err != nil {
			return nil, err
		}
		out := make([]auditlog.Record, len(ds))
		for i, d := range ds {
			out[i] = auditlog.Record{Type: d.Type, Actor: d.Actor, Serial: d.Serial, Data: d.Data}
		}
		return out, nil
	}
}

// describeCRLPublish records a published CRL by its identity and hash.
func describeCRLPublish(e cluster.Entry, _ []byte) ([]auditlog.Record, error) {
	var meta crl.Meta
	if err := e.Command.Decode(&meta); err != nil {
		return nil, fmt.Errorf("node: describe %s: %w", e.Command.Type, err)
	}
	return []auditlog.Record{{
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
