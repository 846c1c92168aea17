package enroll

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"fmt"
	"io/fs"
	"math/big"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
	"github.com/inkan-pki/inkan/policies"
	"github.com/inkan-pki/inkan/subscriber"
)

var testPseudonymKey = bytes.Repeat([]byte{0x6b}, 32)

// testProfiles loads the shipped profiles, made to accept JPKI test cards (the sim
// issues those), with edit applied to each file's text.
func testProfiles(t testing.TB, edit func(file, text string) string) *policies.Set {
	t.Helper()
	return loadProfiles(t, testPseudonymKey, []string{"authentication.yaml", "signing.yaml"}, edit)
}

// loadProfiles loads the shipped profiles files, keyed with key, as testProfiles
// does.
func loadProfiles(t testing.TB, key []byte, files []string, edit func(file, text string) string) *policies.Set {
	t.Helper()
	fsys := fstest.MapFS{}
	for _, name := range files {
		b, err := fs.ReadFile(policies.Shipped(), name)
		if err != nil {
			t.Fatal(err)
		}
		y := replaceOnce(t, string(b), `jpkiPolicies: ["`+jpki.PolicyProduction+`"]`, `jpkiPolicies: ["`+jpki.PolicyProduction+`", "`+jpki.PolicyTest+`"]`)
		if edit != nil {
			y = edit(name, y)
		}
		fsys[name] = &fstest.MapFile{Data: []byte(y)}
	}
	set, err := policies.Load(fsys, key, "authentication")
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// replaceOnce replaces old in s, which must hold it exactly once (so a change of
// the shipped files cannot make a test edit nothing).
func replaceOnce(t testing.TB, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("%q occurs %d times in a profile", old, n)
	}
	return strings.Replace(s, old, new, 1)
}

// profileEnv is an API whose policy is the engine's, over the shared cluster.
func profileEnv(t testing.TB, set *policies.Set, edit ...func(*Config)) (*env, *ProfilePolicy) {
	t.Helper()
	pol := NewProfilePolicy(set)
	e := newEnv(t, "", append([]func(*Config){func(c *Config) { c.Policy = pol }}, edit...)...)
	return e, pol
}

var personSeq atomic.Int64

// newPerson is a person no other test enrols: per-person counts start at zero.
func newPerson() jpkisim.Person {
	p := jpkisim.DemoPerson()
	p.Name = fmt.Sprintf("試験　太郎%d", personSeq.Add(1))
	return p
}

// personCard is a sim certificate for p, its key in memory (fx.memKey).
func personCard(t testing.TB, p jpkisim.Person) memCard {
	t.Helper()
	c, err := fx.sim.IssueCertificate(&fx.memKey.PublicKey, jpkisim.CardSpec{Person: p})
	if err != nil {
		t.Fatal(err)
	}
	return memCard{fx.memKey, [][]byte{c.DER}}
}

// TestProfilePolicyIssues: each shipped profile, through the real handler and CA,
// issues what it renders, records its name and version, and passes the cap on.
func TestProfilePolicyIssues(t *testing.T) {
	needFixture(t)
	set := testProfiles(t, nil)
	e, _ := profileEnv(t, set)
	card := personCard(t, newPerson())
	sc, err := jpki.ParseSignatureCertificate(card.chain[0])
	if err != nil {
		t.Fatal(err)
	}
	documentSigning := asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 36}
	var person []byte // the card's record, which the first enrolment starts
	for _, c := range []struct {
		ask, profile string
		version      uint64
		ku           x509.KeyUsage
		cn           func() string
		eku          []x509.ExtKeyUsage
		otherEKU     []asn1.ObjectIdentifier
		cap          int
	}{
		{"", "authentication", 1, x509.KeyUsageDigitalSignature, func() string { return authPseudonym(testPseudonymKey, person) },
			[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, 5},
		{"signing", "signing", 2, x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment, func() string { return sc.Identity.Name() },
			nil, []asn1.ObjectIdentifier{documentSigning}, 3},
	} {
		t.Run(c.profile, func(t *testing.T) {
			calls := e.issuer.count()
			cert, err := e.client().Enroll(context.Background(), card, fx.subKeys[1], c.ask)
			if err != nil {
				t.Fatal(err)
			}
			e.issuer.mu.Lock()
			req := e.issuer.calls[calls]
			e.issuer.mu.Unlock()
			if person == nil {
				person = req.Person
			} else if !bytes.Equal(req.Person, person) || req.PersonMode != ca.PersonSame {
				t.Errorf("a second enrolment with the card is not the same person record (mode %d)", req.PersonMode)
			}
			leaf := cert.Chain[0]
			if cert.Profile != c.profile || leaf.Subject.CommonName != c.cn() || leaf.KeyUsage != c.ku {
				t.Errorf("profile %q, key usage %v, subject CN matches: %v", cert.Profile, leaf.KeyUsage, leaf.Subject.CommonName == c.cn())
			}
			if !slices.Equal(leaf.ExtKeyUsage, c.eku) || !slices.EqualFunc(leaf.UnknownExtKeyUsage, c.otherEKU, asn1.ObjectIdentifier.Equal) {
				t.Errorf("EKU %v %v, want %v %v", leaf.ExtKeyUsage, leaf.UnknownExtKeyUsage, c.eku, c.otherEKU)
			}
			if c.profile == "signing" && leaf.Subject.SerialNumber != signingPseudonym(testPseudonymKey, person) {
				t.Error("the signing certificate's serialNumber is not the person record's signing pseudonym")
			}
			if req.Decision.Profile != c.profile || req.Decision.PolicyVersion != c.version || req.Decision.MaxPerPerson != c.cap {
				t.Errorf("CA asked for profile %q v%d, cap %d", req.Decision.Profile, req.Decision.PolicyVersion, req.Decision.MaxPerPerson)
			}
			err = fx.cluster.View(func(tx *bbolt.Tx) error {
				rec, err := ca.Read(tx).Lookup(cert.Serial)
				if err != nil {
					return err
				}
				if rec.Profile != c.profile || rec.PolicyVersion != c.version || rec.Status != ca.Good {
					t.Errorf("record: profile %q v%d, %s", rec.Profile, rec.PolicyVersion, rec.Status)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestProfilePolicyRefusals: the engine's refusals reach the client as their problem
// types, and write nothing.
func TestProfilePolicyRefusals(t *testing.T) {
	needFixture(t)
	ocspOnly := testProfiles(t, func(_, y string) string {
		return replaceOnce(t, y, "sources: [crl, ocsp]", "sources: [ocsp]")
	})
	productionOnly, err := policies.Load(policies.Shipped(), testPseudonymKey, "authentication")
	if err != nil {
		t.Fatal(err)
	}
	card := personCard(t, newPerson())
	for _, c := range []struct {
		name   string
		set    *policies.Set
		spec   proofSpec
		prob   string
		status int
	}{
		{"profile not offered", testProfiles(t, nil), proofSpec{profile: "nonexistent"}, "policy-denied", 403},
		{"key type not in the profile", testProfiles(t, nil), proofSpec{profile: "signing", subKey: ed25519Key()}, "key-type-not-allowed", 400},
		{"JPKI test policy not accepted", productionOnly, proofSpec{}, "policy-denied", 403},
		{"revocation checked by a source the profile does not take", ocspOnly, proofSpec{}, "policy-denied", 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, _ := profileEnv(t, c.set)
			c.spec.card = card
			req, nonce := e.request(t, c.spec)
			e.expectProblem(t, mustJSON(t, req), c.prob, c.status, nonce, false)
		})
	}
}

// TestProfilePolicyWithoutProfiles: until the first set is in use (a node following
// the replicated store), enrolments are refused as unavailable, and write nothing.
func TestProfilePolicyWithoutProfiles(t *testing.T) {
	needFixture(t)
	e, pol := profileEnv(t, nil)
	req, nonce := e.request(t, proofSpec{card: personCard(t, newPerson())})
	e.expectProblem(t, mustJSON(t, req), "unavailable", 503, nonce, false)
	pol.Use(testProfiles(t, nil))
	if _, err := e.client().Submit(context.Background(), req, nil); err != nil {
		t.Fatalf("once the profiles are in use: %v", err)
	}
}

// TestPersonLimit: the (N+1)th certificate for one person is refused as
// person-limit-reached, before the nonce is spent; a revoked one no longer counts.
func TestPersonLimit(t *testing.T) {
	needFixture(t)
	set := testProfiles(t, func(_, y string) string {
		y = strings.Replace(y, "maxCertificatesPerPerson: 5", "maxCertificatesPerPerson: 2", 1)
		return strings.Replace(y, "maxCertificatesPerPerson: 3", "maxCertificatesPerPerson: 2", 1)
	})
	e, _ := profileEnv(t, set)
	card := personCard(t, newPerson())
	var serials []*big.Int
	for i := range 2 {
		cert, err := e.client().Enroll(context.Background(), card, fx.subKeys[i], "")
		if err != nil {
			t.Fatalf("certificate %d: %v", i+1, err)
		}
		serials = append(serials, cert.Serial)
	}
	req, nonce := e.request(t, proofSpec{card: card, subKey: fx.subKeys[2]})
	e.expectProblem(t, mustJSON(t, req), "person-limit-reached", 403, nonce, false)
	// Another profile counts the same certificates: the cap is on the person.
	req, nonce = e.request(t, proofSpec{card: card, subKey: fx.subKeys[2], profile: "signing"})
	e.expectProblem(t, mustJSON(t, req), "person-limit-reached", 403, nonce, false)

	// A revoked certificate does not count: the refused request's nonce is still
	// good, and now it goes through.
	if err := fx.authority.Revoke(context.Background(), serials[0], crlreason.KeyCompromise, "system"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client().Submit(context.Background(), req, nil); err != nil {
		t.Fatalf("after a revocation: %v", err)
	}
}

// TestPersonLimitAtTheLeader: a certificate of the person committed after this node
// counted (an enrolment on another node) makes the leader refuse the intent; the
// client gets person-limit-reached and the CA holds no certificate for the request.
func TestPersonLimitAtTheLeader(t *testing.T) {
	needFixture(t)
	set := testProfiles(t, func(_, y string) string {
		return strings.Replace(y, "maxCertificatesPerPerson: 5", "maxCertificatesPerPerson: 2", 1)
	})
	e, _ := profileEnv(t, set)
	card := personCard(t, newPerson())
	if _, err := e.client().Enroll(context.Background(), card, fx.subKeys[0], ""); err != nil {
		t.Fatal(err)
	}
	var other *ca.Issued
	e.issuer.before = func(req ca.Request) {
		e.issuer.before = nil
		// The other node's enrolment: the same person, its own nonce.
		req.NonceHash, req.NonceExpires = nil, time.Time{}
		var err error
		if other, err = fx.authority.Issue(context.Background(), req); err != nil {
			t.Errorf("the other node's enrolment: %v", err)
		}
	}
	_, err := e.client().Enroll(context.Background(), card, fx.subKeys[3], "")
	if p, ok := err.(*enrollapi.Problem); !ok || p.Name() != "person-limit-reached" || p.Status != 403 {
		t.Fatalf("err = %v", err)
	}
	if other == nil {
		t.Fatal("the other enrolment did not happen")
	}
	person := mustPerson(t, card)
	err = fx.cluster.View(func(tx *bbolt.Tx) error {
		n, err := ca.Read(tx).CountByPerson(person, time.Now())
		if n != 2 {
			t.Errorf("the person holds %d certificates, want the first and the other one only", n)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// mustPerson is the person record card's JPKI certificate belongs to.
func mustPerson(t testing.TB, card subscriber.Card) []byte {
	t.Helper()
	link := linkOf(t, card.Chain()[0])
	var id []byte
	var ok bool
	if err := fx.cluster.View(func(tx *bbolt.Tx) error { id, ok = ca.Read(tx).PersonOf(link); return nil }); err != nil || !ok {
		t.Fatalf("the card belongs to no person record: %v", err)
	}
	return id
}

// TestProfileRateLimits: a burst above the profile's rate per person, or per client
// address, is refused as rate-limited with the wait in Retry-After.
func TestProfileRateLimits(t *testing.T) {
	needFixture(t)
	t.Run("per person", func(t *testing.T) {
		set := testProfiles(t, func(_, y string) string {
			return strings.Replace(y, "perPerson: {every: 1h, burst: 5}", "perPerson: {every: 1h, burst: 2}", 1)
		})
		e, _ := profileEnv(t, set)
		card := personCard(t, newPerson())
		for i := range 2 {
			if _, err := e.client().Enroll(context.Background(), card, fx.subKeys[i], ""); err != nil {
				t.Fatalf("enrolment %d: %v", i+1, err)
			}
		}
		req, nonce := e.request(t, proofSpec{card: card})
		checkRetryAfter(t, e.post(t, mustJSON(t, req)), 30*60)
		e.expectProblem(t, mustJSON(t, req), "rate-limited", 429, nonce, false)
		// Another person from the same address is not held back by it.
		if _, err := e.client().Enroll(context.Background(), personCard(t, newPerson()), fx.subKeys[0], ""); err != nil {
			t.Fatalf("another person: %v", err)
		}
	})
	t.Run("per client", func(t *testing.T) {
		set := testProfiles(t, func(_, y string) string {
			return strings.Replace(y, "perClient: {every: 1m, burst: 10}", "perClient: {every: 1m, burst: 2}", 1)
		})
		e, _ := profileEnv(t, set)
		for i := range 2 {
			if _, err := e.client().Enroll(context.Background(), personCard(t, newPerson()), fx.subKeys[0], ""); err != nil {
				t.Fatalf("enrolment %d: %v", i+1, err)
			}
		}
		req, nonce := e.request(t, proofSpec{card: personCard(t, newPerson())})
		checkRetryAfter(t, e.post(t, mustJSON(t, req)), 20)
		e.expectProblem(t, mustJSON(t, req), "rate-limited", 429, nonce, false)
		// The signing profile has buckets of its own.
		if _, err := e.client().Enroll(context.Background(), personCard(t, newPerson()), fx.subKeys[0], "signing"); err != nil {
			t.Fatalf("another profile: %v", err)
		}
	})
}

// checkRetryAfter: a 429 whose Retry-After is at least min seconds.
func checkRetryAfter(t *testing.T, resp *http.Response, min int) {
	t.Helper()
	if resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("status %d, want 429", resp.StatusCode)
	}
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err != nil || s < min {
		t.Errorf("Retry-After %q, want at least %d seconds", resp.Header.Get("Retry-After"), min)
	}
}

// authPseudonym and signingPseudonym are what policies puts in a certificate
// for a person record (its .Pseudonym): hex of an HMAC-SHA256 under the
// pseudonym key of a label and the record's identifier. They are recomputed
// here, as their specification: a relying party knows a person by them, so
// they must not change from one release to the next.
func authPseudonym(key, person []byte) string {
	return keyedHex(key, "inkan/pseudonym/authentication/v2\x00", person)
}

func signingPseudonym(key, person []byte) string {
	return keyedHex(key, "inkan/pseudonym/signing/v1\x00", person)
}

func keyedHex(key []byte, label string, person []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	m.Write(person)
	return hex.EncodeToString(m.Sum(nil))
}
