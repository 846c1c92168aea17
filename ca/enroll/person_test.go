package enroll

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/linkage"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
	"github.com/inkan-pki/inkan/policies"
)

// homonyms are two people who share a name and a birth date, and nothing else:
// another gender, another address, a card each.
func homonyms() (a, b jpkisim.Person) {
	a = newPerson()
	b = a
	b.Gender = jpki.GenderMale
	if a.Gender == jpki.GenderMale {
		b.Gender = jpki.GenderFemale
	}
	b.Address, b.AddressSubstitutes, b.Prefecture, b.Municipality = "北海道札幌市中央区試験町七丁目７番７号", "", "北海道", "札幌市"
	return a, b
}

// jobEnv is an API over set that re-binds, and the linkage job over the sim's CRL.
func jobEnv(t *testing.T, set *policies.Set) (*env, *linkage.Job) {
	t.Helper()
	e, pol := profileEnv(t, set, func(c *Config) { c.Rebinder = fx.authority })
	feed, err := crlFeed()
	if err != nil {
		t.Fatal(err)
	}
	job, err := linkage.New(linkage.Config{State: fx.cluster, Authority: fx.authority, Feed: feed, Profiles: pol.Profiles,
		LinkKey: fx.linkKey, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	return e, job
}

// problemOf is the problem a client call returned, or nil.
func problemOf(err error) *enrollapi.Problem {
	var p *enrollapi.Problem
	if errors.As(err, &p) {
		return p
	}
	return nil
}

// TestHomonyms: two people with the same name and birth date (another gender,
// address and card) are two person records: different authentication
// pseudonyms and signing serialNumbers; independent caps and rate-limit buckets;
// neither can re-bind the other's certificate, even with their own card of the
// same name and birth date and their own derived key (rebind-key-mismatch; without
// a key, rebind-key-proof-missing); and when one revokes their card as compromised,
// the linkage job revokes their certificates and none of the other's.
func TestHomonyms(t *testing.T) {
	needFixture(t)
	ctx := context.Background()
	pa, pb := homonyms()
	cardA, cardB := personCard(t, pa), personCard(t, pb)
	capped := testProfiles(t, func(_, y string) string {
		y = strings.Replace(y, "maxCertificatesPerPerson: 5", "maxCertificatesPerPerson: 2", 1)
		return strings.Replace(y, "maxCertificatesPerPerson: 3", "maxCertificatesPerPerson: 2", 1)
	})
	e, job := jobEnv(t, capped)

	t.Run("pseudonyms", func(t *testing.T) {
		authA, err := e.client().Enroll(ctx, cardA, fx.subKeys[0], "authentication")
		if err != nil {
			t.Fatal(err)
		}
		authB, err := e.client().Enroll(ctx, cardB, fx.subKeys[1], "authentication")
		if err != nil {
			t.Fatal(err)
		}
		if a, b := authA.Chain[0].Subject.CommonName, authB.Chain[0].Subject.CommonName; a == b || len(a) != 64 {
			t.Errorf("authentication subjects %q and %q: want two pseudonyms", a, b)
		}
		if ra, rb := record(t, authA.Serial), record(t, authB.Serial); bytes.Equal(ra.Person, rb.Person) {
			t.Error("one person record for two people")
		}
		signA, err := e.client().Enroll(ctx, cardA, fx.subKeys[0], "signing")
		if err != nil {
			t.Fatal(err)
		}
		signB, err := e.client().Enroll(ctx, cardB, fx.subKeys[1], "signing")
		if err != nil {
			t.Fatal(err)
		}
		a, b := signA.Chain[0].Subject, signB.Chain[0].Subject
		if a.CommonName != b.CommonName || a.SerialNumber == b.SerialNumber {
			t.Errorf("signing subjects: names equal %v, serialNumbers equal %v; want the one name, two serialNumbers",
				a.CommonName == b.CommonName, a.SerialNumber == b.SerialNumber)
		}
		for _, s := range []string{a.SerialNumber, b.SerialNumber} {
			if s == authA.Chain[0].Subject.CommonName || s == authB.Chain[0].Subject.CommonName {
				t.Error("a signing certificate carries an authentication pseudonym")
			}
		}
	})

	t.Run("independent caps", func(t *testing.T) {
		// Each holds 2 now (an authentication and a signing certificate): the cap.
		for _, c := range []struct {
			name string
			card memCard
		}{{"A", cardA}, {"B", cardB}} {
			_, err := e.client().Enroll(ctx, c.card, fx.subKeys[2], "")
			if p := problemOf(err); p == nil || p.Name() != "person-limit-reached" {
				t.Errorf("%s's third certificate: %v, want person-limit-reached", c.name, err)
			}
		}
		// B gives one back; B may enrol again, A still may not.
		bSerials := personSerials(t, mustPerson(t, cardB))
		if err := fx.authority.Revoke(ctx, bSerials[0], crlreason.CessationOfOperation, "system"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.client().Enroll(ctx, cardB, fx.subKeys[2], ""); err != nil {
			t.Errorf("B under the cap again: %v", err)
		}
		if _, err := e.client().Enroll(ctx, cardA, fx.subKeys[2], ""); problemOf(err) == nil || problemOf(err).Name() != "person-limit-reached" {
			t.Errorf("A, still at the cap: %v", err)
		}
	})

	t.Run("independent buckets", func(t *testing.T) {
		pa, pb := homonyms()
		cardA, cardB := personCard(t, pa), personCard(t, pb)
		limited := testProfiles(t, func(_, y string) string {
			return strings.Replace(y, "perPerson: {every: 1h, burst: 5}", "perPerson: {every: 1h, burst: 2}", 1)
		})
		e, _ := profileEnv(t, limited)
		for i := range 2 {
			if _, err := e.client().Enroll(ctx, cardA, fx.subKeys[i], ""); err != nil {
				t.Fatalf("A's enrolment %d: %v", i+1, err)
			}
		}
		if _, err := e.client().Enroll(ctx, cardA, fx.subKeys[2], ""); problemOf(err) == nil || problemOf(err).Name() != "rate-limited" {
			t.Fatalf("A's third enrolment within the hour: %v, want rate-limited", err)
		}
		for i := range 2 {
			if _, err := e.client().Enroll(ctx, cardB, fx.subKeys[i], ""); err != nil {
				t.Errorf("B's enrolment %d, after A's bucket ran dry: %v", i+1, err)
			}
		}
	})

	t.Run("no cross re-bind", func(t *testing.T) {
		target := personSerials(t, mustPerson(t, cardA))[0]
		serial := hex.EncodeToString(target.Bytes())
		// B holds a card of A's name and birth date, and B's own derived key.
		body, nonce := e.rebindBody(t, rebindSpec{card: cardB, key: fx.subKeys[1], serial: serial})
		e.expectRebindProblem(t, body, "rebind-key-mismatch", 403, nonce, target)
		body, nonce = e.rebindBody(t, rebindSpec{card: cardB, serial: serial})
		e.expectRebindProblem(t, body, "rebind-key-proof-missing", 400, nonce, target)
		if rec := record(t, target); !bytes.Equal(rec.Link, linkOf(t, cardA.chain[0])) {
			t.Error("A's certificate is bound to another card")
		}
	})

	t.Run("one card revoked", func(t *testing.T) {
		var goodB []*big.Int
		for _, s := range personSerials(t, mustPerson(t, cardB)) {
			if record(t, s).Status == ca.Good {
				goodB = append(goodB, s)
			}
		}
		scB, err := jpki.ParseSignatureCertificate(cardB.chain[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := fx.sim.Revoke(scB.X509().SerialNumber, crlreason.KeyCompromise, time.Now()); err != nil {
			t.Fatal(err)
		}
		if _, err := fx.sim.PublishCRL(time.Time{}, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if err := job.Scan(ctx, time.Time{}); err != nil {
			t.Fatal(err)
		}
		if len(goodB) != 2 {
			t.Fatalf("B had %d good certificates, want 2", len(goodB))
		}
		for _, s := range goodB {
			if rec := record(t, s); rec.Status != ca.Revoked || rec.Reason != crlreason.KeyCompromise {
				t.Errorf("B's certificate %x: %s reason %d, want revoked keyCompromise", s, rec.Status, rec.Reason)
			}
		}
		good := 0
		for _, s := range personSerials(t, mustPerson(t, cardA)) {
			if rec := record(t, s); rec.Status == ca.Good {
				good++
			} else {
				t.Errorf("A's certificate %x: %s after B's card was revoked", s, rec.Status)
			}
		}
		if good != 2 {
			t.Errorf("A has %d good certificates, want 2", good)
		}
	})
}

// personSerials lists the certificates of a person record, by their link.
func personSerials(t testing.TB, person []byte) []*big.Int {
	t.Helper()
	var out []*big.Int
	err := fx.cluster.View(func(tx *bbolt.Tx) error {
		return ca.Read(tx).Walk(fx.issuerID, func(cs ca.CertStatus) error {
			if rec, err := ca.Read(tx).Lookup(cs.Serial); err == nil && bytes.Equal(rec.Person, person) {
				out = append(out, cs.Serial)
			}
			return nil
		})
	})
	if err != nil || len(out) == 0 {
		t.Fatalf("the person record holds no certificate: %v", err)
	}
	return out
}

// TestRefusalsCostNoToken: a refused request leaves the rate-limit buckets as
// they were. Five copies of one request (in a row, then at once) issue one
// certificate and are refused as replays four times; refusals at the CA after
// the tokens were taken give them back; so the person's next enrolments are
// admitted up to the burst, and only then is one refused as rate-limited.
func TestRefusalsCostNoToken(t *testing.T) {
	needFixture(t)
	ctx := context.Background()
	set := testProfiles(t, func(_, y string) string {
		return strings.Replace(y, "perPerson: {every: 1h, burst: 5}", "perPerson: {every: 1h, burst: 4}", 1)
	})
	e, _ := profileEnv(t, set)
	card := personCard(t, newPerson())
	send := func(body []byte) (int, string) {
		resp := e.post(t, body)
		if resp.StatusCode == http.StatusCreated {
			return resp.StatusCode, ""
		}
		var p enrollapi.Problem
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, p.Name()
	}
	tally := func(codes []int) (created, replayed int) {
		for _, c := range codes {
			switch c {
			case http.StatusCreated:
				created++
			case http.StatusConflict:
				replayed++
			}
		}
		return created, replayed
	}

	// In a row.
	req, _ := e.request(t, proofSpec{card: card})
	body := mustJSON(t, req)
	var codes []int
	for range 5 {
		code, _ := send(body)
		codes = append(codes, code)
	}
	if c, r := tally(codes); c != 1 || r != 4 {
		t.Fatalf("five copies in a row: %v, want one 201 and four 409", codes)
	}
	// At once: every copy may pass the checks; the CA records the nonce with one
	// intent and refuses the others, whose tokens go back.
	req, _ = e.request(t, proofSpec{card: card, subKey: fx.subKeys[1]})
	body = mustJSON(t, req)
	codes = make([]int, 5)
	var wg sync.WaitGroup
	for i := range codes {
		wg.Go(func() { codes[i], _ = send(body) })
	}
	wg.Wait()
	if c, r := tally(codes); c != 1 || r != 4 {
		t.Fatalf("five copies at once: %v, want one 201 and four 409", codes)
	}
	// Refusals by the CA after the tokens were taken.
	for _, c := range []struct {
		fail error
		want string
	}{
		{fmt.Errorf("ca: intent: %w", ca.ErrNonceUsed), probNonceReplayed.name},
		{fmt.Errorf("ca: intent: %w", ca.ErrPersonLimit), probPersonLimit.name},
		{errSecret, probIssuanceFailure.name},
	} {
		e.issuer.fail = c.fail
		_, err := e.client().Enroll(ctx, card, fx.subKeys[2], "")
		if !isProblem(err, c.want) {
			t.Fatalf("the CA failed with %v: err = %v, want problem %s", c.fail, err, c.want)
		}
	}
	e.issuer.fail = nil
	// Two certificates so far, a burst of four: two more, then rate-limited.
	for i := range 2 {
		if _, err := e.client().Enroll(ctx, card, fx.subKeys[3], ""); err != nil {
			t.Fatalf("the person's enrolment %d after the refusals: %v", i+3, err)
		}
	}
	if _, err := e.client().Enroll(ctx, card, fx.subKeys[3], ""); problemOf(err) == nil || problemOf(err).Name() != "rate-limited" {
		t.Fatalf("the fifth enrolment within the hour: %v, want rate-limited", err)
	}
}

// TestFirstEnrolmentsRaceForOneBucket: first enrolments with one new card, sent
// at once, each see no person record and would start one, each with a bucket of
// its own; the CA lets one start the record and refuses the others, which decide
// again for that record and take their tokens from its bucket. With a burst of
// one, exactly one is issued and the others are rate-limited: racing a new card's
// first enrolments does not multiply the person's tokens.
func TestFirstEnrolmentsRaceForOneBucket(t *testing.T) {
	needFixture(t)
	set := testProfiles(t, func(_, y string) string {
		return strings.Replace(y, "perPerson: {every: 1h, burst: 5}", "perPerson: {every: 1h, burst: 1}", 1)
	})
	e, _ := profileEnv(t, set)
	card := personCard(t, newPerson())
	bodies := make([][]byte, 4)
	for i := range bodies {
		req, _ := e.request(t, proofSpec{card: card, subKey: fx.subKeys[i%len(fx.subKeys)]})
		bodies[i] = mustJSON(t, req)
	}
	codes := make([]int, len(bodies))
	problems := make([]string, len(bodies))
	var wg sync.WaitGroup
	for i, body := range bodies {
		wg.Go(func() {
			resp := e.post(t, body)
			codes[i] = resp.StatusCode
			if resp.StatusCode != http.StatusCreated {
				var p enrollapi.Problem
				if err := json.NewDecoder(resp.Body).Decode(&p); err == nil {
					problems[i] = p.Name()
				}
			}
		})
	}
	wg.Wait()
	created, limited := 0, 0
	for i := range codes {
		switch {
		case codes[i] == http.StatusCreated:
			created++
		case problems[i] == "rate-limited":
			limited++
		}
	}
	if created != 1 || limited != len(bodies)-1 {
		t.Fatalf("%d first enrolments at once with a burst of one: statuses %v, problems %q; want one issued, the rest rate-limited",
			len(bodies), codes, problems)
	}
}

// TestClientKey: per-address limits count networks (IPv4 /24, IPv6 /56 by
// default, or as configured), and take X-Forwarded-For only from a trusted proxy,
// the right-most address that is not one.
func TestClientKey(t *testing.T) {
	proxies := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}
	h := &handler{cfg: Config{ClientPrefixV4: defaultClientPrefix.V4, ClientPrefixV6: defaultClientPrefix.V6, TrustedProxies: proxies}}
	narrow := &handler{cfg: Config{ClientPrefixV4: 32, ClientPrefixV6: 64}}
	for _, c := range []struct {
		name   string
		h      *handler
		remote string
		xff    []string
		want   string
	}{
		{"IPv4 by /24", h, "192.0.2.77:5555", nil, "192.0.2.0/24"},
		{"IPv4 neighbours share", h, "192.0.2.200:1", nil, "192.0.2.0/24"},
		{"IPv6 by /56", h, "[2001:db8:1:2ff:aaaa::1]:443", nil, "2001:db8:1:200::/56"},
		{"IPv4-mapped IPv6", h, "[::ffff:192.0.2.9]:1", nil, "192.0.2.0/24"},
		{"configured prefixes", narrow, "[2001:db8:1:2ff:aaaa::1]:443", nil, "2001:db8:1:2ff::/64"},
		{"configured IPv4 /32", narrow, "192.0.2.77:5555", nil, "192.0.2.77/32"},
		{"header from an untrusted peer ignored", h, "192.0.2.77:1", []string{"198.51.100.1"}, "192.0.2.0/24"},
		{"header from a trusted proxy", h, "10.1.2.3:1", []string{"198.51.100.1"}, "198.51.100.0/24"},
		{"spoofed left-most hop ignored", h, "10.1.2.3:1", []string{"203.0.113.5, 198.51.100.1"}, "198.51.100.0/24"},
		{"a chain of trusted proxies", h, "10.1.2.3:1", []string{"198.51.100.1", "10.9.9.9"}, "198.51.100.0/24"},
		{"IPv6 client behind a proxy", h, "[fd00::1]:1", []string{"2001:db8:ab:cdef::1"}, "2001:db8:ab:cd00::/56"},
		{"garbage in the header: the peer", h, "10.1.2.3:1", []string{"not-an-address"}, "10.1.2.0/24"},
		{"only proxies in the header: the peer", h, "10.1.2.3:1", []string{"10.4.4.4"}, "10.1.2.0/24"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, "/", nil)
			r.RemoteAddr = c.remote
			for _, v := range c.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			if got := c.h.clientKey(r); got != c.want {
				t.Errorf("clientKey = %s, want %s", got, c.want)
			}
		})
	}
	if err := (clientPrefix{V4: 33, V6: 56}).check(); !errors.Is(err, errClientPrefix) {
		t.Errorf("an IPv4 prefix of 33 bits: err = %v, want errClientPrefix", err)
	}
}

// TestRevocationDataAge: when this node has not refreshed its JPKI revocation
// data within the maximum age (its CRL file unreadable since), an enrolment is
// refused as jpki-revocation-unavailable (503), though the CRL it holds is fresh
// by its own dates; once the node has refreshed, it goes through.
func TestRevocationDataAge(t *testing.T) {
	needFixture(t)
	crl := filepath.Join(t.TempDir(), "jpki.crl")
	data, err := os.ReadFile(fx.sim.CRLPath())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(crl, data, 0o644); err != nil {
		t.Fatal(err)
	}
	v, err := verifierOf(crl, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	e := newEnv(t, "", func(c *Config) { c.Verifier, c.Now = v, clock })
	if err := v.CRL().Refresh(context.Background(), clock()); err != nil {
		t.Fatal(err)
	}
	// The CRL file goes away; eleven minutes pass without a refresh.
	if err := os.Rename(crl, crl+".gone"); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	now = now.Add(11 * time.Minute)
	mu.Unlock()
	req, nonce := e.request(t, proofSpec{iat: clock()})
	e.expectProblem(t, mustJSON(t, req), "jpki-revocation-unavailable", 503, nonce, false)
	// The file is back: the next verification refreshes, and the data is current.
	if err := os.Rename(crl+".gone", crl); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client().Submit(context.Background(), req, nil); err != nil {
		t.Fatalf("after a refresh: %v", err)
	}
}

// TestRebindTellsNothingWithoutTheKey: a re-bind's answer tells no one who lacks
// the derived certificate's key whether its holder shares their name and birth
// date. A namesake's card and a stranger's card (another name) get the same
// answer — rebind-key-proof-missing without a key proof, rebind-key-mismatch with
// their own key — so a namesake cannot use the endpoint to put their name and
// birth date on someone's login pseudonym; only the key's holder is told
// rebind-not-same-person (a name change). Nothing is written either way.
func TestRebindTellsNothingWithoutTheKey(t *testing.T) {
	needFixture(t)
	ctx := context.Background()
	pa, pb := homonyms()
	cardA, namesake, stranger := personCard(t, pa), personCard(t, pb), personCard(t, newPerson())
	e, _ := jobEnv(t, testProfiles(t, nil))
	cert, err := e.client().Enroll(ctx, cardA, fx.subKeys[0], "authentication")
	if err != nil {
		t.Fatal(err)
	}
	serial := hex.EncodeToString(cert.Serial.Bytes())
	for _, c := range []struct {
		name   string
		spec   rebindSpec
		prob   string
		status int
	}{
		{"namesake, no key proof", rebindSpec{card: namesake}, "rebind-key-proof-missing", 400},
		{"stranger, no key proof", rebindSpec{card: stranger}, "rebind-key-proof-missing", 400},
		{"namesake, own key", rebindSpec{card: namesake, key: fx.subKeys[1]}, "rebind-key-mismatch", 403},
		{"stranger, own key", rebindSpec{card: stranger, key: fx.subKeys[1]}, "rebind-key-mismatch", 403},
		{"stranger, the certificate's key", rebindSpec{card: stranger, key: fx.subKeys[0]}, "rebind-not-same-person", 403},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.spec.serial = serial
			body, nonce := e.rebindBody(t, c.spec)
			e.expectRebindProblem(t, body, c.prob, c.status, nonce, cert.Serial)
		})
	}
}
