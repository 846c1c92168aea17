package enroll

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/policies"
	"github.com/inkan-pki/inkan/subscriber"
)

// authPseudonymKey keys the pseudonyms of the handler tests' policy.
var authPseudonymKey = bytes.Repeat([]byte{0x5a}, 32)

// authenticationValidity is the shipped authentication profile's validity.
const authenticationValidity = 8760 * time.Hour

// authenticationOnly is the policy of the handler tests: the shipped
// authentication profile alone, as data (so "signing" is not offered), made to
// accept JPKI test cards, at version 7, keyed with authPseudonymKey, with a cap and
// rate limits no test reaches (the shared card enrols many times).
func authenticationOnly(t testing.TB) *policies.Set {
	t.Helper()
	return loadProfiles(t, authPseudonymKey, []string{"authentication.yaml"}, func(_, y string) string {
		y = replaceOnce(t, y, "version: 1\n", "version: 7\n")
		y = replaceOnce(t, y, "maxCertificatesPerPerson: 5", "maxCertificatesPerPerson: 1000000")
		y = replaceOnce(t, y, "perPerson: {every: 1h, burst: 5}", "perPerson: {every: 1ms, burst: 1000000}")
		return replaceOnce(t, y, "perClient: {every: 1m, burst: 10}", "perClient: {every: 1ms, burst: 1000000}")
	})
}

// env is one enrollment API over the shared cluster, behind a TLS test server.
type env struct {
	h        *handler
	srv      *httptest.Server
	issuer   *testIssuer
	audience string
}

// newEnv serves an API whose verifier reads crlFile (the sim's fresh CRL if empty).
func newEnv(t testing.TB, crlFile string, edit ...func(*Config)) *env {
	t.Helper()
	needFixture(t)
	if crlFile == "" {
		crlFile = fx.sim.CRLPath()
	}
	v, err := verifierOf(crlFile, 0)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{issuer: &testIssuer{next: fx.authority}}
	var h http.Handler
	e.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(e.srv.Close)
	e.audience = e.srv.URL + enrollapi.PathEnroll
	cfg := Config{
		Audience:    e.audience,
		Verifier:    v,
		Cluster:     fx.cluster,
		Policy:      NewProfilePolicy(authenticationOnly(t)),
		Issuer:      e.issuer,
		LinkKey:     fx.linkKey,
		RequestRate: -1,
		Logger:      testenv.Logger(),
	}
	for _, f := range edit {
		f(&cfg)
	}
	if e.h, err = newHandler(cfg); err != nil {
		t.Fatal(err)
	}
	e.audience = cfg.Audience
	h = e.h
	return e
}

func (e *env) client() *subscriber.Client {
	return &subscriber.Client{BaseURL: e.srv.URL, HTTP: e.srv.Client()}
}

func (e *env) challenge(t testing.TB) []byte {
	t.Helper()
	nonce, _, err := e.client().Challenge(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return nonce
}

// proofSpec describes a request; zero fields are those of a valid one from fx.card.
type proofSpec struct {
	card     subscriber.Card
	signer   crypto.Signer // signs instead of card
	chain    [][]byte
	nonce    []byte
	aud      string
	iat, exp time.Time
	csr      []byte // DER
	csrHash  []byte // the proof's csr_sha256 claim instead of the CSR's hash
	subKey   crypto.Signer
	profile  string
}

// request builds the request spec describes; it returns the nonce it used.
func (e *env) request(t testing.TB, s proofSpec) (enrollapi.Request, []byte) {
	t.Helper()
	if s.card == nil {
		s.card = fx.card
	}
	if s.chain == nil {
		s.chain = s.card.Chain()
	}
	if s.signer == nil {
		s.signer = s.card
	}
	if s.nonce == nil {
		s.nonce = e.challenge(t)
	}
	if s.aud == "" {
		s.aud = e.audience
	}
	if s.iat.IsZero() {
		s.iat = time.Now()
	}
	if s.exp.IsZero() {
		s.exp = s.iat.Add(4 * time.Minute)
	}
	if s.subKey == nil {
		s.subKey = fx.subKeys[0]
	}
	if s.csr == nil {
		var err error
		if s.csr, err = subscriber.NewCSR(s.subKey); err != nil {
			t.Fatal(err)
		}
	}
	proof, err := subscriber.NewProof(s.signer, s.chain, subscriber.ProofClaims{Nonce: s.nonce, Audience: s.aud, IssuedAt: s.iat, Expires: s.exp, CSR: s.csr})
	if err != nil {
		t.Fatal(err)
	}
	if s.csrHash != nil {
		proof = forge(t, map[string]any{"alg": "RS256", "x5c": x5c(s.chain)}, claimsOf(s.nonce, s.aud, s.iat, s.exp, s.csrHash), rs256(s.signer))
	}
	return enrollapi.Request{Proof: proof, CSR: base64.RawURLEncoding.EncodeToString(s.csr), Profile: s.profile}, s.nonce
}

func x5c(chain [][]byte) []string {
	out := make([]string, len(chain))
	for i, der := range chain {
		out[i] = base64.StdEncoding.EncodeToString(der)
	}
	return out
}

func claimsOf(nonce []byte, aud string, iat, exp time.Time, csrHash []byte) map[string]any {
	return map[string]any{
		"nonce": base64.RawURLEncoding.EncodeToString(nonce), "aud": aud,
		"iat": iat.Unix(), "exp": exp.Unix(), "csr_sha256": base64.RawURLEncoding.EncodeToString(csrHash),
	}
}

func rs256(s crypto.Signer) func([]byte) []byte {
	return func(input []byte) []byte {
		d := sha256.Sum256(input)
		sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
		if err != nil {
			panic(err)
		}
		return sig
	}
}

// forge assembles a compact JWS from a header and claims of the test's choosing.
func forge(t testing.TB, header, claims any, sign func([]byte) []byte) string {
	t.Helper()
	enc := func(v any) string {
		if b, ok := v.([]byte); ok {
			return base64.RawURLEncoding.EncodeToString(b)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	input := enc(header) + "." + enc(claims)
	return input + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(input)))
}

// post sends body to the enrollment endpoint.
func (e *env) post(t testing.TB, body []byte) *http.Response {
	t.Helper()
	return e.postTo(t, enrollapi.PathEnroll, body)
}

// postTo sends body to the API's path.
func (e *env) postTo(t testing.TB, path string, body []byte) *http.Response {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func mustJSON(t testing.TB, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) refusals(name string) float64 {
	var m dto.Metric
	if err := e.h.refusals.WithLabelValues(name).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// nonceRecorded reports whether the CA has recorded the nonce as used.
func nonceRecorded(t testing.TB, nonce []byte) bool {
	t.Helper()
	var used bool
	err := fx.cluster.View(func(tx *bbolt.Tx) error {
		used = ca.Read(tx).NonceUsed(nonceHash(nonce))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return used
}

// caState counts the certificates and intents of the test CA, and the ones linked
// to the JPKI certificate of body's proof (if the proof parses that far).
func caState(t testing.TB, body []byte) (records, links int) {
	t.Helper()
	var link []byte
	var req enrollapi.Request
	if json.Unmarshal(body, &req) == nil {
		if j, err := parseJWS(req.Proof); err == nil {
			if sc, err := jpki.ParseSignatureCertificate(j.x5c[0]); err == nil {
				h := sc.CertHash(fx.linkKey)
				link = h[:]
			}
		}
	}
	err := fx.cluster.View(func(tx *bbolt.Tx) error {
		if link != nil {
			links = len(ca.Read(tx).ByLink(link))
		}
		return ca.Read(tx).Walk(fx.issuerID, func(ca.CertStatus) error { records++; return nil })
	})
	if err != nil {
		t.Fatal(err)
	}
	return records, links
}

// expectProblem posts body and checks the refusal: the problem type and status, the
// refusal counter, that nothing reached the issuer and nothing was written to the
// CA's state (no certificate, intent or link), and whether the nonce is recorded
// as used (only if it was before: a refusal records nothing).
func (e *env) expectProblem(t *testing.T, body []byte, name string, status int, nonce []byte, wantUsed bool) {
	t.Helper()
	before := e.refusals(name)
	calls := e.issuer.count()
	records, links := caState(t, body)
	resp := e.post(t, body)
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d", resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/problem+json" {
		t.Errorf("Content-Type %q", ct)
	}
	var p enrollapi.Problem
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	if p.Type != defaultProblemBase+name || p.Status != status || p.Title == "" || p.Detail == "" {
		t.Errorf("problem %+v, want type %s%s", p, defaultProblemBase, name)
	}
	if got := e.refusals(name); got != before+1 {
		t.Errorf("refusal counter %s went from %v to %v", name, before, got)
	}
	if n := e.issuer.count(); n != calls {
		t.Errorf("a refused request reached the issuer (%d calls)", n-calls)
	}
	if r, l := caState(t, body); r != records || l != links {
		t.Errorf("the CA's state changed: %d → %d certificates and intents, %d → %d links", records, r, links, l)
	}
	if nonce != nil {
		if used := nonceRecorded(t, nonce); used != wantUsed {
			t.Errorf("nonce recorded as used %v after the refusal, want %v", used, wantUsed)
		}
	}
	for _, s := range []string{"印鑑", "花子", "試験町", "19900401"} {
		if strings.Contains(p.Detail, s) || strings.Contains(p.Title, s) {
			t.Errorf("problem carries personal data: %+v", p)
		}
	}
}

// TestEnroll is the path that succeeds: the jpkisim card, reached through PKCS#11,
// signs the proof; the CA is asked for a pseudonymous authentication certificate tied
// to the JPKI certificate by keyed hashes only.
func TestEnroll(t *testing.T) {
	e := newEnv(t, "")
	ctx := context.Background()
	cert, err := e.client().Enroll(ctx, fx.card, fx.subKeys[1], "")
	if err != nil {
		t.Fatal(err)
	}
	if len(e.issuer.calls) != 1 {
		t.Fatalf("%d issuer calls", len(e.issuer.calls))
	}
	req := e.issuer.calls[0]
	sc, err := jpki.ParseSignatureCertificate(fx.card.Chain()[0])
	if err != nil {
		t.Fatal(err)
	}
	link, nameBirth, hint := sc.CertHash(fx.linkKey), sc.Identity.NameBirthHash(fx.linkKey), sc.Identity.Basic4Hint(fx.linkKey)
	if !bytes.Equal(req.Link, link[:]) || !bytes.Equal(req.Hint, hint[:]) || len(req.Person) != 16 || // a person ID is 16 random bytes
		len(req.NonceHash) != sha256.Size || req.NonceExpires.IsZero() {
		t.Error("the request does not carry the keyed link and hint, a person record and the nonce")
	}
	switch req.PersonMode {
	case ca.PersonNew:
		if !bytes.Equal(req.NameBirth, nameBirth[:]) {
			t.Error("a new person record without the keyed name-and-birth hash")
		}
	case ca.PersonSame: // the shared card enrolled in an earlier test
	default:
		t.Errorf("person mode %d", req.PersonMode)
	}
	if bytes.Contains(req.Link, sc.X509().SerialNumber.Bytes()) {
		t.Error("the link holds the JPKI serial")
	}
	if req.Decision.Profile != "authentication" || req.Decision.PolicyVersion != 7 {
		t.Errorf("profile %q version %d", req.Decision.Profile, req.Decision.PolicyVersion)
	}
	leaf := cert.Chain[0]
	if !publicKeysEqual(leaf.PublicKey, fx.subKeys[1].Public()) {
		t.Fatal("certificate is not for the subscriber's key")
	}
	if leaf.Subject.CommonName != authPseudonym(authPseudonymKey, req.Person) || len(leaf.Subject.Country) != 1 || leaf.Subject.Country[0] != "JP" {
		t.Errorf("subject %s", leaf.Subject)
	}
	if leaf.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Errorf("key usage %v", leaf.KeyUsage)
	}
	if leaf.NotAfter.After(sc.X509().NotAfter) || leaf.NotAfter.After(time.Now().Add(authenticationValidity)) {
		t.Errorf("notAfter %s outlives the JPKI certificate or a year", leaf.NotAfter)
	}
	for _, s := range []string{"印鑑", "花子", "試験町", "千代田"} {
		if bytes.Contains(leaf.Raw, []byte(s)) {
			t.Errorf("the certificate carries basic-4 information")
		}
	}
	roots := x509.NewCertPool()
	roots.AddCert(fx.caCert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("certificate does not verify under the CA: %v", err)
	}
	if !cert.Chain[len(cert.Chain)-1].Equal(fx.caCert) {
		t.Error("the chain does not end in the CA")
	}

	// The authority recorded it, tied to the JPKI certificate by the keyed hashes.
	err = fx.cluster.View(func(tx *bbolt.Tx) error {
		rec, err := ca.Read(tx).Lookup(cert.Serial)
		if err != nil {
			return err
		}
		if rec.Status != ca.Good || !bytes.Equal(rec.DER, leaf.Raw) || !bytes.Equal(rec.Link, link[:]) ||
			!bytes.Equal(rec.Person, req.Person) || rec.Profile != "authentication" || rec.PolicyVersion != 7 {
			t.Errorf("CA record: status %v, profile %q", rec.Status, rec.Profile)
		}
		if p, ok := ca.Read(tx).PersonOf(link[:]); !ok || !bytes.Equal(p, req.Person) {
			t.Error("the JPKI certificate does not belong to the certificate's person record")
		}
		if p, err := ca.Read(tx).LookupPerson(req.Person); err != nil || !bytes.Equal(p.NameBirth, nameBirth[:]) {
			t.Errorf("person record: %v", err)
		}
		if !ca.Read(tx).NonceUsed(req.NonceHash) {
			t.Error("the nonce's use was not recorded with the intent")
		}
		if !slices.ContainsFunc(ca.Read(tx).ByLink(link[:]), func(s *big.Int) bool { return s.Cmp(cert.Serial) == 0 }) {
			t.Error("the certificate is not found by its link")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// openssl agrees.
	testenv.Tool(t, "openssl", "openssl")
	dir := t.TempDir()
	caFile, leafFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "cert.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fx.caCert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(leafFile, cert.PEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "verify", "-CAfile", caFile, "-purpose", "sslclient", leafFile).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(": OK")) {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
}

// TestRefusals sends each bad input alone and checks the problem it gets, that no
// issuer was asked, and that the nonce is still redeemable (a refused request never
// burns a nonce).
func TestRefusals(t *testing.T) {
	e := newEnv(t, "")
	mem := func(chain []byte) memCard { return memCard{fx.memKey, [][]byte{chain}} }
	now := time.Now()

	type tc struct {
		name   string
		spec   proofSpec
		edit   func(*enrollapi.Request)
		prob   string
		status int
	}
	cases := []tc{
		{name: "certificate from another root", spec: proofSpec{card: mem(fx.foreign)}, prob: "jpki-untrusted", status: 403},
		{name: "expired certificate", spec: proofSpec{card: mem(fx.expired)}, prob: "jpki-expired", status: 403},
		{name: "proof signed by another key", spec: proofSpec{card: mem(fx.good), signer: memCard{fx.other, nil}}, prob: "proof-invalid", status: 400},
		{name: "wrong aud", spec: proofSpec{aud: "https://evil.example/v1/enroll"}, prob: "audience-mismatch", status: 400},
		{name: "exp too far ahead", spec: proofSpec{iat: now, exp: now.Add(enrollapi.MaxProofLifetime + time.Minute)}, prob: "proof-invalid", status: 400},
		{name: "exp in the past", spec: proofSpec{iat: now.Add(-10 * time.Minute), exp: now.Add(-6 * time.Minute)}, prob: "proof-invalid", status: 400},
		{name: "iat in the future", spec: proofSpec{iat: now.Add(10 * time.Minute)}, prob: "proof-invalid", status: 400},
		{name: "CSR hash differs", spec: proofSpec{csrHash: bytes.Repeat([]byte{1}, 32)}, prob: "csr-mismatch", status: 400},
		{name: "key type not allowed", spec: proofSpec{subKey: ed25519Key()}, prob: "key-type-not-allowed", status: 400},
		{name: "profile not offered", spec: proofSpec{profile: "signing"}, prob: "policy-denied", status: 403},
	}
	for _, r := range reasons {
		cases = append(cases, tc{name: "revoked " + r.String(), spec: proofSpec{card: mem(fx.revoked[r])}, prob: "jpki-revoked", status: 403})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, nonce := e.request(t, c.spec)
			if c.edit != nil {
				c.edit(&req)
			}
			e.expectProblem(t, mustJSON(t, req), c.prob, c.status, nonce, false)
		})
	}

	t.Run("CSR with a bad signature", func(t *testing.T) {
		csr, err := subscriber.NewCSR(fx.subKeys[0])
		if err != nil {
			t.Fatal(err)
		}
		csr[len(csr)-1] ^= 0x01 // inside the signature
		req, nonce := e.request(t, proofSpec{csr: csr})
		e.expectProblem(t, mustJSON(t, req), "csr-invalid", 400, nonce, false)
	})

	t.Run("stale CRL", func(t *testing.T) {
		stale := newEnv(t, fx.stale)
		req, nonce := stale.request(t, proofSpec{})
		stale.expectProblem(t, mustJSON(t, req), "jpki-revocation-unavailable", 503, nonce, false)
	})

	// Nonces this service did not make, or made too long ago, are unknown: random
	// bytes, one under another cluster's key, one whose expiry has passed, one with
	// its expiry pushed on (the MAC covers it).
	otherKey := bytes.Repeat([]byte{0x77}, 32)
	foreign, _, err := newNonceCodec(otherKey).make(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	old, _, err := e.h.nonces.make(time.Now().Add(-nonceTTL - time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	extended := bytes.Clone(old)
	extended[2]++ // 2^16 s (18 hours) on: valid now, if the MAC did not cover it
	random := make([]byte, enrollapi.NonceLen)
	_, _ = rand.Read(random)
	for name, nonce := range map[string][]byte{"random nonce": random, "another cluster's nonce": foreign,
		"expired nonce": old, "expiry changed": extended} {
		t.Run(name, func(t *testing.T) {
			req, _ := e.request(t, proofSpec{nonce: nonce})
			e.expectProblem(t, mustJSON(t, req), "nonce-unknown", 400, nonce, false)
		})
	}

	t.Run("reused nonce", func(t *testing.T) {
		req, nonce := e.request(t, proofSpec{})
		if _, err := e.client().Submit(context.Background(), req, nil); err != nil {
			t.Fatal(err)
		}
		e.expectProblem(t, mustJSON(t, req), "nonce-replayed", 409, nonce, true)
		// A fresh proof over the spent nonce fares no better.
		again, _ := e.request(t, proofSpec{nonce: nonce, subKey: fx.subKeys[2]})
		e.expectProblem(t, mustJSON(t, again), "nonce-replayed", 409, nonce, true)
	})

	// Proofs whose header a card would never make.
	good, _ := e.request(t, proofSpec{})
	nonce := e.challenge(t)
	csr, _ := base64.RawURLEncoding.DecodeString(good.CSR)
	sum := sha256.Sum256(csr)
	claims := claimsOf(nonce, e.audience, now, now.Add(4*time.Minute), sum[:])
	chain := x5c(fx.card.Chain())
	hs256 := func(input []byte) []byte {
		m := hmac.New(sha256.New, fx.card.Chain()[0]) // keyed with the public certificate: the classic confusion
		m.Write(input)
		return m.Sum(nil)
	}
	for _, h := range []struct {
		name   string
		header any
		sign   func([]byte) []byte
	}{
		{"alg none", map[string]any{"alg": "none", "x5c": chain}, func([]byte) []byte { return nil }},
		{"alg HS256", map[string]any{"alg": "HS256", "x5c": chain}, hs256},
		{"alg RS512", map[string]any{"alg": "RS512", "x5c": chain}, rs256(fx.card)},
		{"no x5c", map[string]any{"alg": "RS256"}, rs256(fx.card)},
		{"x5c of five", map[string]any{"alg": "RS256", "x5c": append(chain, chain[0], chain[0], chain[0], chain[0])}, rs256(fx.card)},
		{"crit", map[string]any{"alg": "RS256", "x5c": chain, "crit": []string{"exp"}}, rs256(fx.card)},
		{"jwk", map[string]any{"alg": "RS256", "x5c": chain, "jwk": map[string]string{"kty": "oct"}}, rs256(fx.card)},
		{"duplicate alg", json.RawMessage(`{"alg":"RS256","x5c":` + string(mustJSON(t, chain)) + `,"alg":"none"}`), rs256(fx.card)},
	} {
		t.Run(h.name, func(t *testing.T) {
			body := mustJSON(t, enrollapi.Request{Proof: forge(t, h.header, claims, h.sign), CSR: good.CSR})
			e.expectProblem(t, body, "proof-invalid", 400, nonce, false)
		})
	}

	t.Run("oversized body", func(t *testing.T) {
		body := mustJSON(t, enrollapi.Request{Proof: good.Proof + strings.Repeat("A", maxBodyBytes), CSR: good.CSR})
		e.expectProblem(t, body, "body-too-large", 413, nil, false)
	})
	t.Run("not JSON", func(t *testing.T) {
		e.expectProblem(t, []byte(`{"proof": `), "request-invalid", 400, nil, false)
	})
	t.Run("unknown member", func(t *testing.T) {
		e.expectProblem(t, []byte(`{"proof":"a.b.c","csr":"AA","extra":1}`), "request-invalid", 400, nil, false)
	})
	t.Run("wrong media type", func(t *testing.T) {
		before := e.refusals("media-type-unsupported")
		resp, err := e.srv.Client().Post(e.srv.URL+enrollapi.PathEnroll, "text/plain", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 415 || e.refusals("media-type-unsupported") != before+1 {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("wrong method or path", func(t *testing.T) {
		for _, c := range []struct {
			method, path, want string
			status             int
		}{
			{http.MethodGet, enrollapi.PathChallenge, "method-not-allowed", 405},
			{http.MethodPut, enrollapi.PathEnroll, "method-not-allowed", 405},
			{http.MethodPost, "/v1/nope", "not-found", 404},
		} {
			req, err := http.NewRequest(c.method, e.srv.URL+c.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := e.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var p enrollapi.Problem
			err = json.NewDecoder(resp.Body).Decode(&p)
			resp.Body.Close()
			if err != nil || resp.StatusCode != c.status || p.Name() != c.want || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Errorf("%s %s: %d %s %+v (%v), want %d %s", c.method, c.path, resp.StatusCode, resp.Header.Get("Content-Type"), p, err, c.status, c.want)
			}
			if c.status == 405 && resp.Header.Get("Allow") != http.MethodPost {
				t.Errorf("%s %s: Allow %q", c.method, c.path, resp.Header.Get("Allow"))
			}
		}
	})
	// The good request was never sent: its nonce is still usable, and redeems.
	if _, err := e.client().Submit(context.Background(), good, nil); err != nil {
		t.Fatalf("a valid request after the refusals: %v", err)
	}
}

// TestNotFound: a path the API listener does not serve is answered as a
// problem (404, not-found), as every refusal of the API is.
func TestNotFound(t *testing.T) {
	srv := httptest.NewServer(NotFound())
	defer srv.Close()
	resp, err := srv.Client().Post(srv.URL+"/v1/nope", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p enrollapi.Problem
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil || resp.StatusCode != http.StatusNotFound || p.Name() != "not-found" ||
		resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("%d %s %+v (%v), want 404 not-found", resp.StatusCode, resp.Header.Get("Content-Type"), p, err)
	}
}

func ed25519Key() crypto.Signer {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return k
}

// TestRateLimit: past the burst, a client gets rate-limited (429, Retry-After) on
// either endpoint, and nothing is recorded.
func TestRateLimit(t *testing.T) {
	e := newEnv(t, "", func(c *Config) { c.RequestRate, c.RequestBurst = 0.001, 2 })
	cl := e.client()
	for i := range 2 {
		if _, _, err := cl.Challenge(context.Background()); err != nil {
			t.Fatalf("challenge %d: %v", i, err)
		}
	}
	_, _, err := cl.Challenge(context.Background())
	p, ok := err.(*enrollapi.Problem)
	if !ok || p.Name() != "rate-limited" || p.Status != http.StatusTooManyRequests {
		t.Fatalf("third challenge: %v", err)
	}
	e.expectProblem(t, []byte(`{}`), "rate-limited", 429, nil, false)
}

// TestIssuerFailure: when the CA fails, the client learns only that issuance failed.
func TestIssuerFailure(t *testing.T) {
	e := newEnv(t, "")
	e.issuer.fail = errSecret
	_, err := e.client().Enroll(context.Background(), fx.card, fx.subKeys[0], "")
	p, ok := err.(*enrollapi.Problem)
	if !ok || p.Name() != "issuance-failed" || p.Status != 500 || strings.Contains(p.Detail, errSecret.Error()) {
		t.Fatalf("err = %v", err)
	}
	e.issuer.fail = errRateLimited
	_, err = e.client().Enroll(context.Background(), fx.card, fx.subKeys[0], "")
	if p, ok := err.(*enrollapi.Problem); !ok || p.Name() != "rate-limited" {
		t.Fatalf("per-person cap: err = %v", err)
	}
	e.issuer.fail = fmt.Errorf("ca: leader n1: %w", ca.ErrNoCAKey)
	_, err = e.client().Enroll(context.Background(), fx.card, fx.subKeys[0], "")
	if p, ok := err.(*enrollapi.Problem); !ok || p.Name() != "unavailable" || p.Status != 503 {
		t.Fatalf("no CA key: err = %v", err)
	}
}

var errSecret = &secretError{}

type secretError struct{}

func (*secretError) Error() string { return "ca: internal detail 0xdeadbeef" }

// TestNewHandlerRefusesBadConfig names each problem of a bad configuration.
func TestNewHandlerRefusesBadConfig(t *testing.T) {
	_, err := NewHandler(Config{Audience: "http://x/v1/enroll", LinkKey: []byte("short"), ClockSkew: -1})
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"audience", "verifier", "cluster", "policy", "issuer", "link key", "clock skew"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
}

// TestDecodeStrict: the API's bodies are decoded once, strictly, as the admin
// API's are: anything a lenient decoder would read one way and another reader
// another is refused as request-invalid (errRequestInvalid), for an enrolment and
// for a re-bind alike.
func TestDecodeStrict(t *testing.T) {
	for _, c := range []struct {
		name string
		body string
	}{
		{"data after the object", `{"proof":"a.b.c","csr":"AA"} {}`},
		{"a second object", `{"proof":"a.b.c","csr":"AA"}{"proof":"x"}`},
		{"a member twice", `{"proof":"a.b.c","csr":"AA","csr":"BB"}`},
		{"a member twice, once escaped", `{"proof":"a.b.c","csr":"AA","\u0063sr":"BB"}`},
		{"a member in another case", `{"Proof":"a.b.c","csr":"AA"}`},
		{"an unknown member", `{"proof":"a.b.c","csr":"AA","key_proof":"x"}`},
		{"a number for a string", `{"proof":"a.b.c","csr":7}`},
		{"null for a string", `{"proof":"a.b.c","csr":null}`},
		{"an object for a string", `{"proof":{"x":"y"},"csr":"AA"}`},
		{"not an object", `["a.b.c","AA"]`},
		{"invalid UTF-8", "{\"proof\":\"a.b.c\",\"csr\":\"A\xff\"}"},
		{"a required member missing", `{"proof":"a.b.c"}`},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := decodeRequest([]byte(c.body)); !errors.Is(err, errRequestInvalid) {
				t.Errorf("enrolment: %v, want errRequestInvalid", err)
			}
			rebind := strings.NewReplacer(`"csr"`, `"serial"`, `\u0063sr`, `\u0073erial`, `"key_proof":"x"`, `"csr":"x"`).Replace(c.body)
			if _, err := decodeRebindRequest([]byte(rebind)); !errors.Is(err, errRequestInvalid) {
				t.Errorf("re-bind %s: %v, want errRequestInvalid", rebind, err)
			}
		})
	}
	if _, err := decodeRequest([]byte(`{"proof":"a.b.c","csr":"AA","profile":"signing"}`)); err != nil {
		t.Errorf("a well-formed body: %v", err)
	}
	if _, err := decodeRebindRequest([]byte(`{"proof":"a.b.c","serial":"5f","key_proof":"x.y.z"}`)); err != nil {
		t.Errorf("a well-formed re-bind body: %v", err)
	}
}
