package enroll

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/policies"
)

// Errors of re-binding, each its own problem type.
var (
	errSerialMismatch     = sentinel("the proof names another certificate")
	errRebindNotFound     = sentinel("no derived certificate with that serial")
	errRebindNotSame      = sentinel("the new JPKI certificate is not the same person's")
	errRebindNotPossible  = sentinel("the certificate cannot be re-bound")
	errRebindSameJPKICert = sentinel("the certificate is bound to this JPKI certificate already")
	// errRebindHeldByOperator: the certificate is on hold by an operator (e.g. on a
	// report of misuse), not by the linkage job across a move; a re-bind does not
	// lift it, only an operator does. It is a case of errRebindNotPossible with a
	// problem type of its own.
	errRebindHeldByOperator = refuse(errRebindNotPossible, "it is on hold by an operator")
)

// rebinder is what re-binding needs of the CA besides Issuer: *ca.Authority.
// UseNonce records the nonce's use before anything changes (ca.ErrNonceUsed for
// every use but the first).
type rebinder interface {
	UseNonce(ctx context.Context, hash []byte, expires time.Time) error
	Relink(ctx context.Context, serial *big.Int, link []byte, actor string) error
	Release(ctx context.Context, serial *big.Int, actor string) error
	Revoke(ctx context.Context, serial *big.Int, reason crlreason.Reason, actor string) error
}

// The Authority is the Rebinder a node gives the API.
var _ rebinder = (*ca.Authority)(nil)

// parseSerial reads a serial as the API writes it: certserial's printed form
// only, since the proof binds the serial's spelling, not only its value.
func parseSerial(s string) (*big.Int, error) {
	n, err := certserial.Parse(s)
	if err != nil {
		return nil, refuse(errRequestInvalid, "serial %w", err)
	}
	if certserial.Format(n) != s {
		return nil, refuse(errRequestInvalid, "serial %q: write it as %s (lower-case hex, two digits a byte, no leading zero byte)", clip(s), certserial.Format(n))
	}
	return n, nil
}

// rebindTarget is a verified re-binding: both proofs checked, the new JPKI
// certificate verified, the certificate found, of the same name and birth date,
// and its key's holder's, and the policy's decision.
type rebindTarget struct {
	claims       *claims
	nonceExpires time.Time
	serial       *big.Int
	record       ca.Record
	hasPerson    bool // record.Person names a person record (not a legacy value)
	old          *x509.Certificate
	chain        [][]byte // the CA certificates above the old certificate
	jpki         *jpki.Result
	link         jpki.Hash
	decision     policies.RebindDecision
	limits       policyRequest // the keys of the rate limits
}

func (h *handler) serveRebind(w http.ResponseWriter, r *http.Request) {
	body, ok := h.intake(w, r)
	if !ok {
		return
	}
	req, err := decodeRebindRequest(body)
	if err != nil {
		h.refuse(w, err)
		return
	}
	t, err := h.verifyRebind(r.Context(), req, h.clientKey(r))
	if err != nil {
		h.refuse(w, err)
		return
	}
	done, ok := h.inflight.claim(t.claims.nonce)
	if !ok {
		h.refuse(w, refuse(errNonceReplayed, "a request with this nonce is in progress"))
		return
	}
	defer done()
	// As for an enrolment: every check passed, so the rate limits take their
	// tokens now, then the nonce's use is recorded, and only then does anything
	// change. A refusal from here on gives the tokens back.
	release, err := h.cfg.Policy.admit(t.record.Profile, t.limits)
	if err != nil {
		h.refuse(w, err)
		return
	}
	if err := h.cfg.Rebinder.UseNonce(r.Context(), nonceHash(t.claims.nonce), t.nonceExpires); err != nil {
		release()
		switch {
		case errors.Is(err, ca.ErrNonceUsed):
			h.refuse(w, errNonceReplayed)
		case errors.Is(err, ca.ErrNonceExpired):
			h.refuse(w, refuse(errNonceUnknown, "the nonce expired before the CA recorded it"))
		default:
			h.log.Error("enroll: nonce not recorded", "err", err)
			h.refuseAs(w, probUnavailable, "the certificate was not re-bound; fetch a new challenge and try again")
		}
		return
	}
	resp, status, err := h.rebind(r.Context(), t)
	if err != nil {
		release()
		switch {
		case errors.Is(err, errRebindHeldByOperator):
			// An operator held it between the checks and the release.
			h.log.Warn("enroll: re-binding refused: held by an operator", "serial", req.Serial)
			h.refuse(w, err)
		case errors.Is(err, ca.ErrNoCAKey), errors.Is(err, ca.ErrAbandoned), errors.Is(err, context.DeadlineExceeded),
			errors.Is(err, ca.ErrStatus), errors.Is(err, ca.ErrExpired):
			h.log.Warn("enroll: re-binding did not complete", "serial", req.Serial, "err", err)
			h.refuseAs(w, probUnavailable, "the certificate was not re-bound; fetch a new challenge and try again")
		default:
			h.log.Error("enroll: re-binding failed", "serial", req.Serial, "err", err)
			h.refuseAs(w, probIssuanceFailure, probIssuanceFailure.title)
		}
		return
	}
	h.log.Info("enroll: certificate re-bound", "serial", req.Serial, "action", resp.Action, "now", resp.Serial)
	writeJSON(w, status, resp)
}

// verifyRebind runs every check of a re-binding that changes nothing, cheap and
// local ones first: the card proof's form and claims, the audience, the times,
// the serial it binds, its signature, the nonce's MAC and an early look for its
// use, the new JPKI certificate (jpki.Verifier), then the certificate's record: a
// derived certificate, signed for by its own key (the key proof, bound to this
// nonce, serial and card), of the same name and birth date as its person record
// (never proof: a precondition), good or held and unexpired, if held then by the
// linkage job ("system", not an operator), bound to another JPKI certificate;
// last the policy.
func (h *handler) verifyRebind(ctx context.Context, req *enrollapi.RebindRequest, client string) (*rebindTarget, error) {
	serial, err := parseSerial(req.Serial)
	if err != nil {
		return nil, err
	}
	proof, err := parseJWS(req.Proof)
	if err != nil {
		return nil, err
	}
	c, err := parseRebindClaims(proof.payload)
	if err != nil {
		return nil, err
	}
	audience := h.cfg.Audience + "/rebind"
	if subtle.ConstantTimeCompare([]byte(c.aud), []byte(audience)) != 1 {
		return nil, refuse(errAudienceMismatch, "aud is not this endpoint's URL")
	}
	now := h.cfg.Now()
	if err := h.checkTimes(c, now); err != nil {
		return nil, err
	}
	if c.serial != req.Serial {
		return nil, refuse(errSerialMismatch, "the proof's serial claim is not the serial sent")
	}
	leaf, err := x509.ParseCertificate(proof.x5c[0])
	if err != nil {
		return nil, fmt.Errorf("%w: x5c[0] is not a certificate", jpki.ErrMalformed)
	}
	if err := proof.verify(leaf.PublicKey); err != nil {
		return nil, err
	}
	nonceExpires, err := h.nonces.check(c.nonce, now)
	if err != nil {
		return nil, err
	}
	if nonceUsed(h.cfg.Cluster, c.nonce) {
		return nil, errNonceReplayed
	}
	res, err := h.cfg.Verifier.Verify(ctx, proof.x5c, now)
	if err != nil {
		return nil, err
	}
	t := &rebindTarget{claims: c, nonceExpires: nonceExpires, serial: serial, jpki: res, link: res.Certificate.CertHash(h.cfg.LinkKey)}
	var nameBirth []byte // of the certificate's person record
	var migrated bool
	err = h.cfg.Cluster.View(func(tx *bbolt.Tx) error {
		rec, err := ca.Read(tx).Lookup(serial)
		if errors.Is(err, ca.ErrNotFound) || err == nil && (rec.Kind != ca.Derived || len(rec.Person) == 0) {
			return errRebindNotFound
		}
		if err != nil {
			return err
		}
		t.record = rec
		switch p, err := ca.Read(tx).LookupPerson(rec.Person); {
		case err == nil:
			t.hasPerson, nameBirth, migrated = true, p.NameBirth, p.Migrated
		case errors.Is(err, ca.ErrNoPerson):
			// Issued before person records and not migrated yet: it names the
			// keyed name-and-birth hash itself.
			nameBirth = rec.Person
		default:
			return err
		}
		if rec.Status != ca.Good && rec.Status != ca.Held {
			return nil // said below, after the key proof and the person match
		}
		is, err := ca.Read(tx).LookupIssuer(rec.Issuer)
		if err != nil {
			return err
		}
		if is.Cert == nil {
			return fmt.Errorf("issuer %s has no certificate", rec.Issuer)
		}
		t.chain = append([][]byte{is.Cert.Raw}, is.Chain...)
		return nil
	})
	switch {
	case errors.Is(err, errRebindNotFound):
		return nil, err
	case err != nil:
		return nil, refuse(errUnavailable, "read the certificate: %v", err)
	}
	if t.record.DER == nil {
		return nil, refuse(errRebindNotPossible, "it is %s", statusWord(t.record.Status))
	}
	if t.old, err = x509.ParseCertificate(t.record.DER); err != nil {
		return nil, fmt.Errorf("enroll: the CA's record of %s does not parse: %w", certserial.Format(serial), err)
	}
	// Only the holder of the certificate's key learns anything of it: the key
	// proof first, then the name and birth date. In the other order a namesake's
	// card without the key would be told apart from a stranger's, and anyone
	// holding a card could learn whether a login pseudonym is of their name and
	// birth date.
	if err := h.checkKeyProof(req, t, proof.x5c[0], audience, now); err != nil {
		return nil, err
	}
	nb := res.Certificate.Identity.NameBirthHash(h.cfg.LinkKey)
	if subtle.ConstantTimeCompare(nb[:], nameBirth) != 1 {
		return nil, errRebindNotSame
	}
	// Only the linkage job's hold (across a move) is the re-bind's to lift; a
	// hold whose actor is unknown is treated as an operator's.
	cert := policies.Derived{
		Held: t.record.Status == ca.Held,
		// A status other than good or held re-binds no more than a revoked one.
		Revoked:      t.record.Status != ca.Good && t.record.Status != ca.Held,
		NotAfter:     t.record.NotAfter,
		HeldBySystem: t.record.HeldBy == actorSystem,
		Bound:        subtle.ConstantTimeCompare(t.link[:], t.record.Link) == 1,
	}
	if err := cert.Rebindable(now); err != nil {
		return nil, fromPolicies(err)
	}
	if t.decision, err = h.cfg.Policy.rebind(policies.RebindRequest{
		Old: t.old, Profile: t.record.Profile, JPKI: res.Certificate,
		Revocation: res.Revocation, RevocationSource: h.source,
		Person: t.record.Person, Legacy: migrated || !t.hasPerson, At: now,
	}); err != nil {
		return nil, err
	}
	t.limits = policyRequest{LimitKey: limitKey(t.record.Person), Client: client, At: now}
	if t.decision.Reissues() {
		d := &t.decision.Decision
		if d.Template == nil {
			return nil, errors.New("enroll: policy returned no template")
		}
		if jna := res.Certificate.X509().NotAfter; d.NotAfter.IsZero() || d.NotAfter.After(jna) {
			d.NotAfter = jna
		}
	}
	return t, nil
}

// checkKeyProof checks the second half of a re-bind: a key proof (missing:
// errKeyProofMissing; malformed or out of time: errKeyProofInvalid) signed by the
// derived certificate's own key (errKeyMismatch) for this very request: the card
// proof's nonce, the serial, the new card's certificate and this endpoint
// (errKeyProofReplayed).
func (h *handler) checkKeyProof(req *enrollapi.RebindRequest, t *rebindTarget, card []byte, audience string, now time.Time) error {
	if req.KeyProof == "" {
		return errKeyProofMissing
	}
	kp, err := parseKeyProof(req.KeyProof)
	if err != nil {
		return err
	}
	if err := kp.verify(t.old.PublicKey); err != nil {
		return err
	}
	kc := kp.claims
	cardSum := sha256.Sum256(card)
	switch {
	case subtle.ConstantTimeCompare(kc.nonce, t.claims.nonce) != 1:
		return refuse(errKeyProofReplayed, "it names another nonce")
	case kc.serial != req.Serial:
		return refuse(errKeyProofReplayed, "it names another certificate")
	case subtle.ConstantTimeCompare(kc.jpkiSHA256, cardSum[:]) != 1:
		return refuse(errKeyProofReplayed, "it names another JPKI certificate")
	case subtle.ConstantTimeCompare([]byte(kc.aud), []byte(audience)) != 1:
		return refuse(errKeyProofReplayed, "it was made for another endpoint")
	}
	if err := h.checkTimes(&claims{iat: kc.iat, exp: kc.exp}, now); err != nil {
		return refuse(errKeyProofInvalid, "%s", detailOf(err, errProofInvalid))
	}
	return nil
}

func statusWord(s ca.Status) string {
	switch s {
	case ca.Revoked:
		return "revoked"
	case ca.Pending:
		return "not issued yet"
	}
	return s.String()
}

// rebind does what was decided. Release (of the linkage job's hold only: the
// authority refuses the API's release of an operator's, ca.ErrHeldByOperator,
// which is errRebindHeldByOperator here): the hold is lifted first, then the link
// moved, so that a failure in between leaves a good certificate still bound to the
// revoked JPKI certificate — which the linkage job holds again, and a retry re-binds
// — rather than a held one bound to the new card, which no retry could tell from an
// operator's hold; a hold the job put back in between is lifted after the relink. Reissue: the new certificate first, then the old one revoked as
// superseded; if that revocation fails the old one stays bound to the revoked JPKI
// certificate, and the linkage job ends it as its profile says.
func (h *handler) rebind(ctx context.Context, t *rebindTarget) (*enrollapi.RebindResponse, int, error) {
	serialHex := certserial.Format(t.serial)
	if t.decision.Releases() {
		action := enrollapi.RebindRelinked
		if t.record.Status == ca.Held {
			action = enrollapi.RebindReleased
			if err := h.cfg.Rebinder.Release(ctx, t.serial, actorEnrollment); err != nil {
				return nil, 0, heldByOperator(fmt.Errorf("enroll: release %s: %w", serialHex, err))
			}
		}
		if err := h.cfg.Rebinder.Relink(ctx, t.serial, t.link[:], actorEnrollment); err != nil {
			return nil, 0, fmt.Errorf("enroll: relink %s: %w", serialHex, err)
		}
		if action == enrollapi.RebindReleased {
			// The linkage job may have held it again between the two commands, while it
			// was good and still bound to the revoked card: release that hold too.
			// An operator's hold put meanwhile stays (the authority refuses to
			// release it): the certificate is bound to the new card, and held.
			var rec ca.Record
			err := h.cfg.Cluster.View(func(tx *bbolt.Tx) error {
				var err error
				rec, err = ca.Read(tx).Lookup(t.serial)
				return err
			})
			if err == nil && rec.Status == ca.Held {
				err = h.cfg.Rebinder.Release(ctx, t.serial, actorEnrollment)
			}
			if err != nil {
				return nil, 0, heldByOperator(fmt.Errorf("enroll: release %s after the relink: %w", serialHex, err))
			}
		}
		resp := &enrollapi.RebindResponse{Action: action, Serial: serialHex, Profile: t.record.Profile}
		for _, der := range append([][]byte{t.record.DER}, t.chain...) {
			resp.Chain = append(resp.Chain, base64.StdEncoding.EncodeToString(der))
		}
		return resp, http.StatusOK, nil
	}
	d := t.decision.Decision
	hint := t.jpki.Certificate.Identity.Basic4Hint(h.cfg.LinkKey)
	req := ca.Request{
		Decision:  d,
		PublicKey: t.old.PublicKey,
		Link:      t.link[:],
		Person:    t.record.Person,
		Hint:      hint[:],
	}
	if t.hasPerson {
		// The new JPKI certificate joins the person record: the re-bind proved both
		// halves.
		req.PersonMode = ca.PersonJoin
	}
	issued, err := h.cfg.Issuer.Issue(ctx, req)
	if err != nil {
		return nil, 0, fmt.Errorf("enroll: reissue %s: %w", serialHex, err)
	}
	h.issued.Inc()
	if err := h.cfg.Rebinder.Revoke(ctx, t.serial, crlreason.Superseded, actorEnrollment); err != nil {
		h.log.Error("enroll: re-issued, but the old certificate was not revoked; the linkage job will end it",
			"serial", serialHex, "err", err)
	}
	resp := &enrollapi.RebindResponse{Action: enrollapi.RebindReissued, Serial: certserial.Format(issued.Serial), Profile: d.Profile, Replaced: serialHex}
	for _, der := range append([][]byte{issued.DER}, issued.Chain...) {
		resp.Chain = append(resp.Chain, base64.StdEncoding.EncodeToString(der))
	}
	return resp, http.StatusCreated, nil
}

// actorEnrollment is the actor of the API's commands in the audit log.
const actorEnrollment = "enrollment"

// actorSystem is the actor of the linkage job's holds (ca.Record.HeldBy).
const actorSystem = "system"

// heldByOperator makes the authority's refusal to release an operator's hold
// errRebindHeldByOperator, keeping the cause.
func heldByOperator(err error) error {
	if errors.Is(err, ca.ErrHeldByOperator) {
		return fmt.Errorf("%w (%w)", errRebindHeldByOperator, err)
	}
	return err
}

// decodeRebindRequest decodes the JSON body: an object with proof and serial
// (strings) and key_proof (a string; its absence is errKeyProofMissing, once the
// certificate is found); no other member, none twice.
func decodeRebindRequest(body []byte) (*enrollapi.RebindRequest, error) {
	m, err := decodeObject(body)
	if err != nil {
		return nil, refuse(errRequestInvalid, "body: %v", err)
	}
	req := &enrollapi.RebindRequest{}
	fields := map[string]*string{"proof": &req.Proof, "serial": &req.Serial, "key_proof": &req.KeyProof}
	for name, raw := range m {
		dst, ok := fields[name]
		if !ok {
			return nil, refuse(errRequestInvalid, "unknown member %q", clip(name))
		}
		if err := json.Unmarshal(raw, dst); err != nil || bytes.Equal(raw, []byte("null")) {
			return nil, refuse(errRequestInvalid, "%s is not a string", name)
		}
	}
	switch {
	case req.Proof == "":
		return nil, refuse(errRequestInvalid, "no proof")
	case req.Serial == "":
		return nil, refuse(errRequestInvalid, "no serial")
	}
	return req, nil
}
