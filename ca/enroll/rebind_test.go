package enroll

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/linkage"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
	"github.com/inkan-pki/inkan/subscriber"
)

// tokenCard makes a SoftHSM token a jpkisim card: issue (IssueCard or Reissue) puts
// the key and certificate on it; the card is opened through PKCS#11 as a client does.
func tokenCard(t *testing.T, issue func(hsm.Config) (*jpkisim.Card, error)) (*subscriber.PKCS11Card, *jpkisim.Card) {
	t.Helper()
	tok := softhsm.NewToken(t)
	cfg := tok.Config()
	cfg.Logger = testenv.Logger()
	sc, err := issue(cfg)
	if err != nil {
		t.Fatal(err)
	}
	card, err := subscriber.OpenCard(context.Background(), subscriber.CardConfig{
		Module: tok.Module, Key: hsm.URI{Token: tok.Label}, PIN: hsm.PINFile(tok.PINFile), Logger: testenv.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { card.Close() })
	return card, sc
}

// record is the CA's record of serial.
func record(t testing.TB, serial *big.Int) ca.Record {
	t.Helper()
	var rec ca.Record
	err := fx.cluster.View(func(tx *bbolt.Tx) (err error) {
		rec, err = ca.Read(tx).Lookup(serial)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return rec
}

func linkOf(t testing.TB, der []byte) []byte {
	t.Helper()
	sc, err := jpki.ParseSignatureCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	h := sc.CertHash(fx.linkKey)
	return h[:]
}

func linked(t testing.TB, link []byte) []*big.Int {
	t.Helper()
	var out []*big.Int
	if err := fx.cluster.View(func(tx *bbolt.Tx) error { out = ca.Read(tx).ByLink(link); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

func has(serials []*big.Int, s *big.Int) bool {
	return slices.ContainsFunc(serials, func(x *big.Int) bool { return x.Cmp(s) == 0 })
}

// rebindEnv is an API that re-binds, with the engine's policy (the shipped profiles,
// for test cards) and the authority as Rebinder, and the linkage job over the same
// CRL and profiles.
func rebindEnv(t *testing.T) (*env, *ProfilePolicy, *linkage.Job) {
	t.Helper()
	e, pol := profileEnv(t, testProfiles(t, nil), func(c *Config) { c.Rebinder = fx.authority })
	feed, err := crlFeed()
	if err != nil {
		t.Fatal(err)
	}
	job, err := linkage.New(linkage.Config{
		State: fx.cluster, Authority: fx.authority, Feed: feed, Profiles: pol.Profiles,
		LinkKey: fx.linkKey, Logger: testenv.Logger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return e, pol, job
}

// TestMoveStory is the move, end to end: enrol with card A (an authentication and a
// signing certificate); J-LIS revokes A as affiliationChanged (a move) and issues the
// same person card B with the new address; the linkage job holds both certificates;
// re-binding with card B releases the authentication certificate, good again and
// bound to B, which a new pass of the job leaves alone; after a profile change, the
// signing certificate's contents differ, so re-binding issues a new one for the same
// key and revokes the old one as superseded.
func TestMoveStory(t *testing.T) {
	e, pol, job := rebindEnv(t)
	ctx := context.Background()
	person := newPerson()
	cardA, simA := tokenCard(t, func(cfg hsm.Config) (*jpkisim.Card, error) {
		return fx.sim.IssueCard(ctx, cfg, jpkisim.CardSpec{Person: person})
	})
	auth, err := e.client().Enroll(ctx, cardA, fx.subKeys[1], "authentication")
	if err != nil {
		t.Fatal(err)
	}
	sign, err := e.client().Enroll(ctx, cardA, fx.subKeys[2], "signing")
	if err != nil {
		t.Fatal(err)
	}

	// The move: card B, the same person at a new address; A revoked affiliationChanged.
	cardB, simB := tokenCard(t, func(cfg hsm.Config) (*jpkisim.Card, error) {
		return fx.sim.Reissue(ctx, cfg, simA.Serial, func(p *jpkisim.Person) {
			p.Address, p.AddressSubstitutes, p.Prefecture, p.Municipality = "大阪府大阪市北区試験町二丁目２番２号", "", "大阪府", "大阪市"
		})
	})
	if _, err := fx.sim.PublishCRL(time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := job.Scan(ctx, time.Time{}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []*subscriber.Certificate{auth, sign} {
		if st := record(t, c.Serial).Status; st != ca.Held {
			t.Fatalf("%s certificate after the move: %s, want held", c.Profile, st)
		}
	}
	// Card A no longer enrols.
	if _, err := e.client().Enroll(ctx, cardA, fx.subKeys[3], ""); !isProblem(err, probJPKIRevoked.name) {
		t.Fatalf("enrolment with the revoked card: %v", err)
	}

	// Re-bind the authentication certificate: its contents are the same for card B.
	linkA, linkB := linkOf(t, simA.DER), linkOf(t, simB.DER)
	got, err := e.client().Rebind(ctx, cardB, fx.subKeys[1], auth.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if got.Action != enrollapi.RebindReleased || got.Certificate.Serial.Cmp(auth.Serial) != 0 || !bytes.Equal(got.Certificate.Chain[0].Raw, auth.Chain[0].Raw) {
		t.Fatalf("re-bind: %s of %x", got.Action, got.Certificate.Serial)
	}
	rec := record(t, auth.Serial)
	if rec.Status != ca.Good || !bytes.Equal(rec.Link, linkB) || has(linked(t, linkA), auth.Serial) || !has(linked(t, linkB), auth.Serial) {
		t.Errorf("after the re-bind: %s, bound to B %v", rec.Status, bytes.Equal(rec.Link, linkB))
	}
	// The job, again (as a new leader would): the old link no longer finds it.
	if err := job.Scan(ctx, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if st := record(t, auth.Serial).Status; st != ca.Good {
		t.Errorf("the job changed the re-bound certificate: %s", st)
	}

	// A new version of the signing profile puts another policy OID in certificates:
	// the signing certificate is reissued for the same key, the old one superseded.
	pol.Use(testProfiles(t, func(file, y string) string {
		if file != "signing.yaml" {
			return y
		}
		y = replaceOnce(t, y, "version: 2", "version: 3")
		return replaceOnce(t, y, `certificatePolicies: ["1.3.6.1.4.1.32473.1.1"]`, `certificatePolicies: ["1.3.6.1.4.1.32473.1.3"]`)
	}))
	got, err = e.client().Rebind(ctx, cardB, fx.subKeys[2], sign.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if got.Action != enrollapi.RebindReissued || got.Replaced.Cmp(sign.Serial) != 0 || got.Certificate.Serial.Cmp(sign.Serial) == 0 {
		t.Fatalf("re-bind after a profile change: %s", got.Action)
	}
	leaf := got.Certificate.Chain[0]
	if !publicKeysEqual(leaf.PublicKey, fx.subKeys[2].Public()) || leaf.Subject.CommonName != sign.Chain[0].Subject.CommonName ||
		len(leaf.Policies) != 1 || leaf.Policies[0].String() != "1.3.6.1.4.1.32473.1.3" {
		t.Errorf("the new certificate: subject kept %v, policies %v", leaf.Subject.CommonName == sign.Chain[0].Subject.CommonName, leaf.Policies)
	}
	if rec := record(t, got.Certificate.Serial); rec.Status != ca.Good || rec.PolicyVersion != 3 || !bytes.Equal(rec.Link, linkB) ||
		!bytes.Equal(rec.Person, record(t, sign.Serial).Person) {
		t.Errorf("new record: %s v%d", rec.Status, rec.PolicyVersion)
	}
	if rec := record(t, sign.Serial); rec.Status != ca.Revoked || rec.Reason != crlreason.Superseded {
		t.Errorf("old signing certificate: %s reason %d, want revoked superseded", rec.Status, rec.Reason)
	}

	// Refusals, each with its type, none of which changes anything.
	other, _ := tokenCardFor(t, newPerson())
	authHex, signHex := hex.EncodeToString(auth.Serial.Bytes()), hex.EncodeToString(sign.Serial.Bytes())
	for _, c := range []struct {
		name        string
		card        subscriber.Card
		serial      string
		proofSerial string
		aud         string
		prob        string
		status      int
		target      *big.Int
	}{
		{"bound to this card already", cardB, authHex, "", "", "rebind-same-jpki-certificate", 409, auth.Serial},
		{"revoked certificate", cardB, signHex, "", "", "rebind-not-possible", 409, sign.Serial}, // signed by its key, subKeys[2]
		{"another person's card", other, authHex, "", "", "rebind-not-same-person", 403, auth.Serial},
		{"the old, revoked card", cardA, authHex, "", "", "jpki-revoked", 403, auth.Serial},
		{"unknown serial", cardB, "7fffffffffffffff01", "", "", "rebind-not-found", 404, auth.Serial},
		{"proof for another serial", cardB, authHex, signHex, "", "serial-mismatch", 400, auth.Serial},
		{"proof for the enrolment endpoint", cardB, authHex, "", e.audience, "audience-mismatch", 400, auth.Serial},
		{"serial with a leading zero", cardB, "0" + authHex, "", "", "request-invalid", 400, auth.Serial},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.proofSerial == "" {
				c.proofSerial = c.serial
			}
			if c.aud == "" {
				c.aud = e.audience + "/rebind"
			}
			key := fx.subKeys[1] // auth's
			if c.serial == signHex {
				key = fx.subKeys[2]
			}
			body, nonce := e.rebindBody(t, rebindSpec{card: c.card, key: key, serial: c.serial, proofSerial: c.proofSerial, aud: c.aud})
			e.expectRebindProblem(t, body, c.prob, c.status, nonce, c.target)
		})
	}
}

// rebindSpec describes a re-bind request; zero fields are those of a valid one.
type rebindSpec struct {
	card        subscriber.Card
	key         crypto.Signer // signs the key proof; nil: no key proof
	serial      string
	proofSerial string // the card proof's serial claim (serial if empty)
	aud         string // both proofs' (the re-bind endpoint if empty)
	nonce       []byte // both proofs' (a fresh challenge if nil)
	keyProof    func(*subscriber.ProofClaims)
	rawKeyProof string // sent as the key proof instead
}

// rebindBody builds the request spec describes, both halves signed; it returns
// the nonce it used.
func (e *env) rebindBody(t testing.TB, s rebindSpec) ([]byte, []byte) {
	t.Helper()
	if s.proofSerial == "" {
		s.proofSerial = s.serial
	}
	if s.aud == "" {
		s.aud = e.audience + "/rebind"
	}
	if s.nonce == nil {
		s.nonce = e.challenge(t)
	}
	now := time.Now()
	proof, err := subscriber.NewProof(s.card, s.card.Chain(), subscriber.ProofClaims{Nonce: s.nonce, Audience: s.aud, IssuedAt: now, Expires: now.Add(time.Minute), Serial: s.proofSerial})
	if err != nil {
		t.Fatal(err)
	}
	req := enrollapi.RebindRequest{Proof: proof, Serial: s.serial, KeyProof: s.rawKeyProof}
	if s.key != nil {
		kc := subscriber.ProofClaims{Nonce: s.nonce, Audience: s.aud, IssuedAt: now, Expires: now.Add(time.Minute), Serial: s.serial, JPKICert: s.card.Chain()[0]}
		if s.keyProof != nil {
			s.keyProof(&kc)
		}
		if req.KeyProof, err = subscriber.NewKeyProof(s.key, kc); err != nil {
			t.Fatal(err)
		}
	}
	return mustJSON(t, req), s.nonce
}

// TestRebindNeedsTheDerivedKey: a re-bind proves both halves. With the new card of
// the same name and birth date but without the derived certificate's own key —
// no key proof, a key proof by another certificate's key, a key proof replayed
// from another request, one made for another card or endpoint, one malformed or
// out of time — it is refused, each with its own problem type, and nothing is
// written (the certificate held as it was, no nonce recorded, no certificate).
// With the key, it goes through.
func TestRebindNeedsTheDerivedKey(t *testing.T) {
	e, _, job := rebindEnv(t)
	ctx := context.Background()
	person := newPerson()
	cardA, simA := tokenCard(t, func(cfg hsm.Config) (*jpkisim.Card, error) {
		return fx.sim.IssueCard(ctx, cfg, jpkisim.CardSpec{Person: person})
	})
	cert, err := e.client().Enroll(ctx, cardA, fx.subKeys[1], "authentication")
	if err != nil {
		t.Fatal(err)
	}
	otherCert, err := e.client().Enroll(ctx, cardA, fx.subKeys[0], "authentication") // another certificate of the same person
	if err != nil {
		t.Fatal(err)
	}
	cardB, _ := tokenCard(t, func(cfg hsm.Config) (*jpkisim.Card, error) {
		return fx.sim.Reissue(ctx, cfg, simA.Serial, func(p *jpkisim.Person) {
			p.Address, p.AddressSubstitutes = "大阪府大阪市北区試験町六丁目６番６号", ""
		})
	})
	if _, err := fx.sim.PublishCRL(time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := job.Scan(ctx, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if st := record(t, cert.Serial).Status; st != ca.Held {
		t.Fatalf("after the move: %s, want held", st)
	}
	serial := hex.EncodeToString(cert.Serial.Bytes())
	// A key proof of an earlier request, whose nonce has been used.
	stale, _ := e.rebindBody(t, rebindSpec{card: cardB, key: fx.subKeys[1], serial: serial})
	var staleReq enrollapi.RebindRequest
	if err := json.Unmarshal(stale, &staleReq); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		spec   rebindSpec
		prob   string
		status int
	}{
		{"no key proof", rebindSpec{}, "rebind-key-proof-missing", 400},
		{"signed by another certificate's key", rebindSpec{key: fx.subKeys[0]}, "rebind-key-mismatch", 403},
		{"signed by a key of another type", rebindSpec{key: fx.memKey}, "rebind-key-mismatch", 403},
		{"a key proof replayed from another request", rebindSpec{rawKeyProof: staleReq.KeyProof}, "rebind-key-proof-replayed", 403},
		{"a key proof for another card", rebindSpec{key: fx.subKeys[1], keyProof: func(k *subscriber.ProofClaims) { k.JPKICert = cardA.Chain()[0] }}, "rebind-key-proof-replayed", 403},
		{"a key proof for another certificate", rebindSpec{key: fx.subKeys[1], keyProof: func(k *subscriber.ProofClaims) {
			k.Serial = hex.EncodeToString(otherCert.Serial.Bytes())
		}}, "rebind-key-proof-replayed", 403},
		{"a key proof for another endpoint", rebindSpec{key: fx.subKeys[1], keyProof: func(k *subscriber.ProofClaims) { k.Audience = e.audience }}, "rebind-key-proof-replayed", 403},
		{"a key proof out of time", rebindSpec{key: fx.subKeys[1], keyProof: func(k *subscriber.ProofClaims) {
			k.IssuedAt, k.Expires = time.Now().Add(-20*time.Minute), time.Now().Add(-16*time.Minute)
		}}, "rebind-key-proof-invalid", 400},
		{"a malformed key proof", rebindSpec{rawKeyProof: "e30.e30.AAAA"}, "rebind-key-proof-invalid", 400},
		{"a key proof that names a key", rebindSpec{rawKeyProof: forge(t, map[string]any{"alg": "ES256", "jwk": map[string]string{"kty": "EC"}},
			map[string]any{}, func([]byte) []byte { return []byte{1} })}, "rebind-key-proof-invalid", 400},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.spec.card, c.spec.serial = cardB, serial
			body, nonce := e.rebindBody(t, c.spec)
			e.expectRebindProblem(t, body, c.prob, c.status, nonce, cert.Serial)
		})
	}
	// The request whose key proof was replayed above was never sent itself: sent
	// now, it goes through, once; sent again, it is a replay.
	resp := e.postTo(t, enrollapi.PathRebind, stale)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the valid re-bind: HTTP %d", resp.StatusCode)
	}
	if rec := record(t, cert.Serial); rec.Status != ca.Good || !bytes.Equal(rec.Link, linkOf(t, cardB.Chain()[0])) {
		t.Fatalf("after the re-bind: %s", rec.Status)
	}
	again := e.postTo(t, enrollapi.PathRebind, stale)
	var p enrollapi.Problem
	if err := json.NewDecoder(again.Body).Decode(&p); err != nil || again.StatusCode != http.StatusConflict || p.Name() != "nonce-replayed" {
		t.Fatalf("the same re-bind again: HTTP %d %+v", again.StatusCode, p)
	}
}

// tokenCardFor is a new card, in a token, for p.
func tokenCardFor(t *testing.T, p jpkisim.Person) (*subscriber.PKCS11Card, *jpkisim.Card) {
	return tokenCard(t, func(cfg hsm.Config) (*jpkisim.Card, error) {
		return fx.sim.IssueCard(context.Background(), cfg, jpkisim.CardSpec{Person: p})
	})
}

// expectRebindProblem posts a re-binding and checks the refusal: its type and status,
// that the target certificate's record (status, link) and the CA's certificates are
// unchanged, that nothing reached the issuer, and that the nonce is still open.
func (e *env) expectRebindProblem(t *testing.T, body []byte, name string, status int, nonce []byte, target *big.Int) {
	t.Helper()
	before := record(t, target)
	calls := e.issuer.count()
	records, _ := caState(t, nil)
	resp := e.postTo(t, enrollapi.PathRebind, body)
	var p enrollapi.Problem
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != status || p.Type != defaultProblemBase+name || p.Detail == "" {
		t.Errorf("HTTP %d %+v, want %d %s", resp.StatusCode, p, status, name)
	}
	after := record(t, target)
	if after.Status != before.Status || !bytes.Equal(after.Link, before.Link) || !after.RevokedAt.Equal(before.RevokedAt) {
		t.Errorf("the refusal changed the certificate: %s → %s", before.Status, after.Status)
	}
	if r, _ := caState(t, nil); r != records || e.issuer.count() != calls {
		t.Error("the refusal issued something")
	}
	if nonceRecorded(t, nonce) {
		t.Error("the refusal recorded the nonce as used")
	}
	for _, s := range []string{"太郎", "試験町", "大阪"} {
		if strings.Contains(p.Detail, s) {
			t.Errorf("problem carries personal data: %+v", p)
		}
	}
}

// TestRebindServedOnlyWithARebinder: without a Rebinder the path is not served.
// (A Rebinder with a policy that cannot re-bind, which NewHandler refused, can no
// longer be configured: Config.Policy is the *ProfilePolicy, which re-binds.)
func TestRebindServedOnlyWithARebinder(t *testing.T) {
	needFixture(t)
	e := newEnv(t, "")
	resp := e.postTo(t, enrollapi.PathRebind, []byte(`{}`))
	if resp.StatusCode != 404 && resp.StatusCode != 405 {
		t.Errorf("rebind without a Rebinder: HTTP %d", resp.StatusCode)
	}
}

// racingRebinder is the authority, with the linkage job's hold landing between the
// release and the relink of a re-binding (the job saw a good certificate still bound
// to the revoked card).
type racingRebinder struct {
	*ca.Authority
	raced bool
}

func (r *racingRebinder) Release(ctx context.Context, serial *big.Int, actor string) error {
	if err := r.Authority.Release(ctx, serial, actor); err != nil {
		return err
	}
	if !r.raced {
		r.raced = true
		return r.Authority.Hold(ctx, serial, "system")
	}
	return nil
}

// TestRebindReleasesARacingHold: a hold put back between the release and the relink
// is lifted too: the certificate ends good and bound to the new card.
func TestRebindReleasesARacingHold(t *testing.T) {
	needFixture(t)
	racer := &racingRebinder{Authority: fx.authority}
	e, _ := profileEnv(t, testProfiles(t, nil), func(c *Config) { c.Rebinder = racer })
	person := newPerson()
	cardA := personCard(t, person)
	cert, err := e.client().Enroll(context.Background(), cardA, fx.subKeys[0], "")
	if err != nil {
		t.Fatal(err)
	}
	moved := person
	moved.Address, moved.AddressSubstitutes = "大阪府大阪市北区試験町三丁目３番３号", ""
	cardB := personCard(t, moved)
	scA, err := jpki.ParseSignatureCertificate(cardA.chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := fx.sim.Revoke(scA.X509().SerialNumber, crlreason.AffiliationChanged, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.sim.PublishCRL(time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := fx.authority.Hold(context.Background(), cert.Serial, "system"); err != nil {
		t.Fatal(err)
	}
	got, err := e.client().Rebind(context.Background(), cardB, fx.subKeys[0], cert.Serial)
	if err != nil {
		t.Fatal(err)
	}
	rec := record(t, cert.Serial)
	if !racer.raced || got.Action != enrollapi.RebindReleased || rec.Status != ca.Good || !bytes.Equal(rec.Link, linkOf(t, cardB.chain[0])) {
		t.Errorf("raced %v: %s, record %s", racer.raced, got.Action, rec.Status)
	}
}

// TestRebindLeavesAnOperatorsHold: a certificate an operator held is not released
// by a re-bind with the holder's new card (rebind-held-by-operator: nothing
// written, the nonce still open); once the operator has released it and the
// linkage job has held it across the move, the re-bind releases it.
func TestRebindLeavesAnOperatorsHold(t *testing.T) {
	needFixture(t)
	e, _ := profileEnv(t, testProfiles(t, nil), func(c *Config) { c.Rebinder = fx.authority })
	ctx := context.Background()
	person := newPerson()
	cardA := personCard(t, person)
	cert, err := e.client().Enroll(ctx, cardA, fx.subKeys[0], "")
	if err != nil {
		t.Fatal(err)
	}
	operator := "sha256:" + strings.Repeat("ab", 32)
	if err := fx.authority.Hold(ctx, cert.Serial, operator); err != nil {
		t.Fatal(err)
	}
	moved := person
	moved.Address, moved.AddressSubstitutes = "大阪府大阪市北区試験町四丁目４番４号", ""
	cardB := personCard(t, moved)
	scA, err := jpki.ParseSignatureCertificate(cardA.chain[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := fx.sim.Revoke(scA.X509().SerialNumber, crlreason.AffiliationChanged, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.sim.PublishCRL(time.Time{}, time.Time{}); err != nil {
		t.Fatal(err)
	}

	body, nonce := e.rebindBody(t, rebindSpec{card: cardB, key: fx.subKeys[0], serial: hex.EncodeToString(cert.Serial.Bytes())})
	e.expectRebindProblem(t, body, "rebind-held-by-operator", 409, nonce, cert.Serial)
	if rec := record(t, cert.Serial); rec.Status != ca.Held || rec.HeldBy != operator || !bytes.Equal(rec.Link, linkOf(t, cardA.chain[0])) {
		t.Fatalf("after the refusal: %s by %q", rec.Status, rec.HeldBy)
	}

	// The operator releases it; the linkage job holds it across the move.
	if err := fx.authority.Release(ctx, cert.Serial, operator); err != nil {
		t.Fatal(err)
	}
	if err := fx.authority.Hold(ctx, cert.Serial, "system"); err != nil {
		t.Fatal(err)
	}
	got, err := e.client().Rebind(ctx, cardB, fx.subKeys[0], cert.Serial)
	if err != nil {
		t.Fatal(err)
	}
	if rec := record(t, cert.Serial); got.Action != enrollapi.RebindReleased || rec.Status != ca.Good || rec.HeldBy != "" {
		t.Errorf("re-bind of the linkage job's hold: %s, record %s by %q", got.Action, rec.Status, rec.HeldBy)
	}
}

// operatorHoldingRebinder is the authority, with an operator's hold landing
// between the release and the relink of a re-binding.
type operatorHoldingRebinder struct {
	*ca.Authority
	held bool
}

func (r *operatorHoldingRebinder) Release(ctx context.Context, serial *big.Int, actor string) error {
	if err := r.Authority.Release(ctx, serial, actor); err != nil {
		return err
	}
	if !r.held {
		r.held = true
		return r.Authority.Hold(ctx, serial, "sha256:"+strings.Repeat("cd", 32))
	}
	return nil
}

// TestRebindRacingAnOperatorsHold: an operator's hold put between the release and
// the relink is not lifted: the re-bind is refused as rebind-held-by-operator and
// the certificate stays held by the operator.
func TestRebindRacingAnOperatorsHold(t *testing.T) {
	needFixture(t)
	racer := &operatorHoldingRebinder{Authority: fx.authority}
	e, _ := profileEnv(t, testProfiles(t, nil), func(c *Config) { c.Rebinder = racer })
	ctx := context.Background()
	person := newPerson()
	cardA := personCard(t, person)
	cert, err := e.client().Enroll(ctx, cardA, fx.subKeys[0], "")
	if err != nil {
		t.Fatal(err)
	}
	moved := person
	moved.Address, moved.AddressSubstitutes = "大阪府大阪市北区試験町五丁目５番５号", ""
	cardB := personCard(t, moved)
	if err := fx.authority.Hold(ctx, cert.Serial, "system"); err != nil {
		t.Fatal(err)
	}
	_, err = e.client().Rebind(ctx, cardB, fx.subKeys[0], cert.Serial)
	var p *enrollapi.Problem
	if !errors.As(err, &p) || p.Name() != "rebind-held-by-operator" || p.Status != 409 {
		t.Fatalf("re-bind racing an operator's hold: %v", err)
	}
	if rec := record(t, cert.Serial); !racer.held || rec.Status != ca.Held || !strings.HasPrefix(rec.HeldBy, "sha256:") {
		t.Errorf("after the re-bind: %s by %q", rec.Status, rec.HeldBy)
	}
}
