package ocsp

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"math/big"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/crlreason"
)

// TestStatusAtDecide: the status at T from the record and the CRL current at
// T, for every place in a certificate's life, including the ones the record
// no longer shows (a hold released, a hold a later revocation replaced).
func TestStatusAtDecide(t *testing.T) {
	p := getPKI(t)
	serial := big.NewInt(0x1234)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	issued, holdAt, revokeAt, notAfter := t0, t0.Add(time.Hour), t0.Add(3*time.Hour), t0.Add(24*time.Hour)
	// crlAt is a CRL of thisUpdate this listing serial with reason since since.
	crlAt := func(this time.Time, reason int, since time.Time) []byte {
		var entries []crl.Entry
		if reason >= 0 {
			entries = []crl.Entry{{Serial: serial, RevokedAt: since, Reason: crlreason.Reason(reason)}}
		}
		return p.fullCRL(t, this, this.Add(time.Hour), entries)
	}
	rec := func(st ca.Status, reason int, at time.Time) ca.Record {
		return ca.Record{Serial: serial, Issuer: "ca1", IssuedAt: issued, IntentAt: issued, NotAfter: notAfter, Status: st, Reason: crlreason.Reason(reason), RevokedAt: at}
	}
	none := -1
	for _, c := range []struct {
		name    string
		rec     ca.Record
		at      time.Time
		crl     []byte // the CRL current at T, or nil
		status  string
		reason  int
		fromCRL bool
		expired bool
	}{
		{"before issuance", rec(ca.Good, 0, time.Time{}), issued.Add(-time.Second), nil, atUnknown, 0, false, false},
		{"good, no CRL yet", rec(ca.Good, 0, time.Time{}), issued.Add(time.Second), nil, atGood, 0, false, false},
		{"good, CRL without it", rec(ca.Good, 0, time.Time{}), holdAt, crlAt(holdAt.Add(-time.Minute), none, time.Time{}), atGood, 0, false, false},
		{"revoked later: good at T", rec(ca.Revoked, int(crlreason.KeyCompromise), revokeAt), holdAt, crlAt(issued, none, time.Time{}), atGood, 0, false, false},
		{"revoked at T", rec(ca.Revoked, int(crlreason.KeyCompromise), revokeAt), revokeAt.Add(time.Second), nil, atRevoked, int(crlreason.KeyCompromise), false, false},
		{"revoked, before the next CRL", rec(ca.Revoked, int(crlreason.KeyCompromise), revokeAt), revokeAt, crlAt(revokeAt.Add(-time.Minute), none, time.Time{}), atRevoked, int(crlreason.KeyCompromise), false, false},
		{"held now", rec(ca.Held, int(crlreason.CertificateHold), holdAt), holdAt.Add(time.Minute), nil, atHeld, int(crlreason.CertificateHold), false, false},
		{"held, since released", rec(ca.Good, 0, time.Time{}), holdAt.Add(time.Minute), crlAt(holdAt.Add(time.Second), int(crlreason.CertificateHold), holdAt), atHeld, int(crlreason.CertificateHold), true, false},
		{"held, since revoked", rec(ca.Revoked, 4, revokeAt), holdAt.Add(time.Minute), crlAt(holdAt.Add(time.Second), int(crlreason.CertificateHold), holdAt), atHeld, int(crlreason.CertificateHold), true, false},
		{"released before the CRL at T", rec(ca.Good, 0, time.Time{}), revokeAt, crlAt(revokeAt.Add(-time.Minute), none, time.Time{}), atGood, 0, false, false},
		{"listed after T only", rec(ca.Good, 0, time.Time{}), holdAt.Add(-time.Minute), crlAt(holdAt.Add(-2*time.Minute), int(crlreason.CertificateHold), holdAt), atGood, 0, false, false},
		{"expired, good", rec(ca.Good, 0, time.Time{}), notAfter, nil, atGood, 0, false, true},
		{"expired, revoked before", rec(ca.Revoked, int(crlreason.KeyCompromise), revokeAt), notAfter.Add(time.Hour), nil, atRevoked, int(crlreason.KeyCompromise), false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := &statusAt{serial: serial, at: c.at, rec: c.rec, hasCurrent: c.crl != nil, currentDER: c.crl}
			if err := s.decide(); err != nil {
				t.Fatal(err)
			}
			if s.status != c.status || s.fromCRL != c.fromCRL || s.expired() != c.expired {
				t.Fatalf("got %s (from CRL %v, expired %v), want %s (%v, %v)", s.status, s.fromCRL, s.expired(), c.status, c.fromCRL, c.expired)
			}
			if (s.status == atRevoked || s.status == atHeld) && s.reason != c.reason {
				t.Errorf("reason %d, want %d", s.reason, c.reason)
			}
		})
	}
}

// historyState is a state with the CA's and CRLs' buckets and nothing in them:
// a bbolt file made as the state machine makes its buckets, so that the fuzz
// target's workers start at once.
func historyState(t testing.TB) *history {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, h := range append(ca.Handlers(), crl.Handlers()...) {
			for _, b := range h.Buckets() {
				if _, err := tx.CreateBucketIfNotExists(b); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return newHistory(db.View, newCache(), func() bool { return true })
}

// ask sends one request to h and returns the status and body.
func ask(h *history, method, uri string) (int, string, []byte) {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(uri)
	h.Wrap(func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(fasthttp.StatusTeapot) })(&ctx)
	return ctx.Response.StatusCode(), string(ctx.Response.Header.ContentType()), ctx.Response.Body()
}

// TestHistoryProblems: a bad question gets its problem type and status, and a
// path that is not /status or /evidence goes to the responder.
func TestHistoryProblems(t *testing.T) {
	h := historyState(t)
	past := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, c := range []struct {
		name, method, uri, problem string
		status                     int
	}{
		{"unknown CA", "GET", "/status/ca1/1234?at=" + past, "unknown-ca", 404},
		{"unknown CA, evidence", "GET", "/evidence/ca1/1234?at=" + past, "unknown-ca", 404},
		{"future", "GET", "/status/ca1/1234?at=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "future-time", 400},
		{"no time", "GET", "/status/ca1/1234", "bad-request", 400},
		{"two times", "GET", "/status/ca1/1234?at=" + past + "&at=" + past, "bad-request", 400},
		{"not RFC 3339", "GET", "/status/ca1/1234?at=1700000000", "bad-time", 400},
		{"serial not hex", "GET", "/status/ca1/zz?at=" + past, "bad-serial", 400},
		{"serial zero", "GET", "/status/ca1/00?at=" + past, "bad-serial", 400},
		{"serial too long", "GET", "/status/ca1/" + strings.Repeat("a", 70) + "?at=" + past, "bad-serial", 400},
		{"no serial", "GET", "/status/ca1?at=" + past, "bad-request", 400},
		{"extra segment", "GET", "/status/ca1/12/34?at=" + past, "bad-request", 400},
		{"POST", "POST", "/evidence/ca1/1234?at=" + past, "method-not-allowed", 405},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, ct, body := ask(h, c.method, c.uri)
			var p problemBody
			if status != c.status || ct != "application/problem+json" || json.Unmarshal(body, &p) != nil ||
				p.Type != historyProblemBase+c.problem || p.Status != c.status {
				t.Errorf("got %d %s %s; want %d %s", status, ct, body, c.status, c.problem)
			}
		})
	}
	if status, _, _ := ask(h, "GET", "/crl/ca1/0.crl"); status != fasthttp.StatusTeapot {
		t.Errorf("a CRL request was not handed on: %d", status)
	}
}

// TestStatusAtErrors: the lookup's errors keep their identity.
func TestStatusAtErrors(t *testing.T) {
	h := historyState(t)
	now := time.Now()
	for _, c := range []struct {
		name string
		at   time.Time
		want error
	}{
		{"future", now.Add(time.Minute), errFutureTime},
		{"unknown CA", now.Add(-time.Minute), errUnknownCA},
	} {
		err := h.view(func(tx *bbolt.Tx) error {
			_, err := lookupStatusAt(tx, "ca1", big.NewInt(5), c.at, now)
			return err
		})
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		}
	}
}

// FuzzHistoryRequest: any path and query under /status or /evidence gets an
// answer (a problem, here: the state is empty), never a panic.
func FuzzHistoryRequest(f *testing.F) {
	h := historyState(f)
	for _, s := range []string{"/status/ca1/1234?at=2026-01-01T00:00:00Z", "/evidence/ca1/0a:0b?at=2026-01-01T00:00:00.5+09:00&form=pkcs7",
		"/status//?at=", "/evidence/a/b/c", "/status/ca1/1234?at=%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		for _, prefix := range []string{"", "/status/", "/evidence/"} {
			status, _, _ := ask(h, "GET", prefix+uri)
			if status == fasthttp.StatusOK {
				t.Fatalf("%q answered 200 from an empty state", prefix+uri)
			}
		}
	})
}

// BenchmarkDecideMillion: the status at T of a certificate the record says
// is good, at 1,000,000 revoked over 16 shards: the shard CRL current at T
// (62,500 entries, about 3 MB) is parsed and searched. The baseline, in the
// same run, is hashing the same bytes with SHA-256 (reading them once).
func BenchmarkDecideMillion(b *testing.B) {
	p := getPKI(b)
	now := time.Now().Truncate(time.Second)
	entries := make([]crl.Entry, 62500)
	for i := range entries {
		s := make([]byte, 16)
		rand.Read(s)
		s[0] = 0x40
		entries[i] = crl.Entry{Serial: new(big.Int).SetBytes(s), RevokedAt: now.Add(-time.Hour), Reason: 1}
	}
	der := p.fullCRL(b, now.Add(-time.Minute), now.Add(time.Hour), entries)
	rec := ca.Record{Serial: big.NewInt(5), Issuer: "ca1", IssuedAt: now.Add(-2 * time.Hour), NotAfter: now.Add(time.Hour), Status: ca.Good}
	var base float64
	b.Run("sha256", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			sha256.Sum256(der)
		}
		base = float64(time.Since(start).Microseconds()) / 1000 / float64(b.N)
		b.ReportMetric(base, "ms/op")
	})
	b.Run("decide", func(b *testing.B) {
		start := time.Now()
		for b.Loop() {
			s := &statusAt{serial: rec.Serial, at: now, rec: rec, hasCurrent: true, currentDER: der}
			if err := s.decide(); err != nil || s.status != atGood {
				b.Fatal(err, s.status)
			}
		}
		ms := float64(time.Since(start).Microseconds()) / 1000 / float64(b.N)
		b.ReportMetric(ms, "ms/op")
		b.ReportMetric(ms/base, "x-sha256")
		b.ReportMetric(float64(len(der))/1e6, "MB-crl")
	})
}

// TestCRLEntryMatchesX509: the in-place scan finds what crypto/x509 reads, for
// entries with and without a reason, and nothing for a serial not listed (one
// that is a prefix of a listed one's bytes included).
func TestCRLEntryMatchesX509(t *testing.T) {
	p := getPKI(t)
	now := time.Now().Truncate(time.Second)
	var entries []crl.Entry
	for i, reason := range []int{0, 1, 6, 4, 0, 9} {
		entries = append(entries, crl.Entry{Serial: big.NewInt(int64(0x1000 + i*0x1111)), RevokedAt: now.Add(-time.Duration(i) * time.Minute), Reason: crlreason.Reason(reason)})
	}
	entries = append(entries, crl.Entry{Serial: big.NewInt(0x123456), RevokedAt: now, Reason: 1})
	der := p.fullCRL(t, now, now.Add(time.Hour), entries)
	l, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range l.RevokedCertificateEntries {
		got, found, err := crlEntry(der, e.SerialNumber)
		if err != nil || !found || !got.at.Equal(e.RevocationTime) || got.reason != e.ReasonCode {
			t.Errorf("serial %x: got %+v %v %v, want %s %d", e.SerialNumber, got, found, err, e.RevocationTime, e.ReasonCode)
		}
	}
	for _, s := range []int64{0x1234, 0x12, 0x1001} {
		if _, found, err := crlEntry(der, big.NewInt(s)); found || err != nil {
			t.Errorf("serial %x not listed: found %v, %v", s, found, err)
		}
	}
	if _, _, err := crlEntry(der[:len(der)/2], big.NewInt(0x1000)); !errors.Is(err, errStoredCRL) {
		t.Errorf("a truncated CRL: %v", err)
	}
}

// TestEvidenceWaitsForItsResponse: the evidence bundle carries the response
// the node serves for the certificate; a node that holds none because it is
// still signing what its state needs (just started or joined) refuses with
// errSigning rather than leave it out, and only a settled node leaves out one
// it does not hold (or holds past its nextUpdate).
func TestEvidenceWaitsForItsResponse(t *testing.T) {
	p := getPKI(t)
	h := historyState(t)
	if err := h.cache.AddIssuer("ca1", p.ca); err != nil {
		t.Fatal(err)
	}
	settled := false
	h.settled = func() bool { return settled }
	now := time.Now()
	h.now = func() time.Time { return now }
	s := &statusAt{issuer: ca.Issuer{ID: "ca1"}, serial: big.NewInt(0x1234)}
	put := func(next time.Time) {
		t.Helper()
		if err := h.cache.Put("ca1", crypto.SHA1, s.serial.Bytes(), &response{DER: []byte{0x30, 0}, ThisUpdate: now.Add(-time.Hour), NextUpdate: next}); err != nil {
			t.Fatal(err)
		}
	}
	check := func(name string, wantDER bool, wantErr error) {
		t.Helper()
		der, err := h.ocspFor(s)
		if !errors.Is(err, wantErr) || (der != nil) != wantDER {
			t.Errorf("%s: got %x, %v; want a response %v, error %v", name, der, err, wantDER, wantErr)
		}
	}
	check("none, signing", false, errSigning)
	settled = true
	check("none, settled", false, nil)
	put(now) // at its nextUpdate: no longer served
	check("stale, settled", false, nil)
	settled = false
	check("stale, signing", false, errSigning)
	put(now.Add(time.Hour))
	check("fresh, signing", true, nil)
	settled = true
	check("fresh, settled", true, nil)
}
