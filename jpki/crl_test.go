package jpki

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/internal/testenv"
)

const leafSerial = 0x4a504b49 // leafSpec's default

// idpExtension is a CRL issuingDistributionPoint naming nameDER, onlyContainsUserCerts.
func idpExtension(nameDER []byte) pkix.Extension {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddBytes(distributionPointName(nameDER))
		})
		b.AddASN1(cbasn1.Tag(1).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddUint8(0xff) })
	})
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 28}, Critical: true, Value: b.BytesOrPanic()}
}

// crl signs a CRL with the given issuer certificate and key.
func crlDER(t testing.TB, issuer *x509.Certificate, key *rsa.PrivateKey, thisUpdate, nextUpdate time.Time, entries []x509.RevocationListEntry, extra ...pkix.Extension) []byte {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:                    big.NewInt(thisUpdate.Unix()),
		ThisUpdate:                thisUpdate,
		NextUpdate:                nextUpdate,
		RevokedCertificateEntries: entries,
		ExtraExtensions:           extra,
	}, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func revoked(serial int64, at time.Time, reason crlreason.Reason) x509.RevocationListEntry {
	return x509.RevocationListEntry{SerialNumber: big.NewInt(serial), RevocationTime: at, ReasonCode: int(reason)}
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// fileVerifier returns a Verifier over anchors 0–2 whose CRL source reads path.
func fileVerifier(t testing.TB, path string, maxAge time.Duration) (*Verifier, *CRLSource) {
	t.Helper()
	p := getPKI(t)
	src, err := newCRLSource(crlSourceOptions{File: path, Anchors: p.anchorSet(t, 0, 1, 2), MaxAge: maxAge, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	v, err := newVerifier(p.anchorSet(t, 0, 1, 2), src)
	if err != nil {
		t.Fatal(err)
	}
	return v, src
}

func TestCRLRevocationReasons(t *testing.T) {
	p := getPKI(t)
	leaf := p.leaf(t, leafSpec{anchor: 1})
	revokedAt := testAt.Add(-30 * time.Hour).Truncate(time.Second)
	for _, reason := range []crlreason.Reason{
		crlreason.Unspecified, crlreason.KeyCompromise, crlreason.CACompromise, crlreason.AffiliationChanged,
		crlreason.Superseded, crlreason.CessationOfOperation, crlreason.CertificateHold,
	} {
		t.Run(reason.String(), func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "jpki.crl")
			writeFile(t, path, crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(-2*time.Hour), testAt.Add(22*time.Hour),
				[]x509.RevocationListEntry{revoked(7, revokedAt, crlreason.Superseded), revoked(leafSerial, revokedAt, reason)}))
			v, _ := fileVerifier(t, path, 0)
			_, err := v.Verify(context.Background(), [][]byte{leaf}, testAt)
			var re *RevokedError
			if !errors.Is(err, ErrRevoked) || !errors.As(err, &re) {
				t.Fatalf("got %v, want a *RevokedError", err)
			}
			if re.Reason != reason || !re.RevokedAt.Equal(revokedAt) || re.Serial.Int64() != leafSerial {
				t.Errorf("got %+v, want reason %v at %v", re, reason, revokedAt)
			}
			assertOneSentinel(t, err)
		})
	}
}

func TestCRLSource(t *testing.T) {
	p := getPKI(t)
	leaf := p.leaf(t, leafSpec{anchor: 1})
	fresh, next := testAt.Add(-2*time.Hour), testAt.Add(22*time.Hour)
	listed := []x509.RevocationListEntry{revoked(leafSerial, testAt.Add(-72*time.Hour), crlreason.AffiliationChanged)}
	other := []x509.RevocationListEntry{revoked(leafSerial+1, testAt.Add(-72*time.Hour), crlreason.KeyCompromise)}
	otherMunicipality := name(oidAttrC, "JP", oidAttrO, "JPKI", oidAttrOU, "JPKI for digital signature",
		oidAttrOU, "CRL Distribution Points", oidAttrOU, "大阪府", oidAttrCN, "大阪市 CRLDP")
	pemOf := func(ders ...[]byte) []byte {
		var out []byte
		for _, d := range ders {
			out = append(out, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: d})...)
		}
		return out
	}
	deltaIndicator := pkix.Extension{Id: oidExtDeltaCRLIndicator, Critical: true, Value: []byte{0x02, 0x01, 0x01}}
	unknownCritical := pkix.Extension{Id: asn1.ObjectIdentifier{1, 2, 3, 4}, Critical: true, Value: []byte{0x05, 0x00}}

	tests := []struct {
		name    string
		crl     func() []byte // nil: no file
		maxAge  time.Duration
		wantErr error
	}{
		{"not listed", func() []byte { return crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, other) }, 0, nil},
		{"empty CRL", func() []byte { return crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, nil) }, 0, nil},
		{"listed", func() []byte { return crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, listed) }, 0, ErrRevoked},
		{"PEM", func() []byte { return pemOf(crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, listed)) }, 0, ErrRevoked},
		{"signed by another generation's key", func() []byte {
			return crlDER(t, p.anchors[2], p.anchorKeys[2], fresh, next, listed)
		}, 0, ErrRevoked},
		{"scoped to the certificate's municipality", func() []byte {
			return crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, listed, idpExtension(crldpName()))
		}, 0, ErrRevoked},
		{"scoped to the certificate's municipality, not listed", func() []byte {
			return crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, nil, idpExtension(crldpName()))
		}, 0, nil},
		{"scoped to another municipality", func() []byte {
			return crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, nil, idpExtension(otherMunicipality))
		}, 0, ErrRevocationUnknown},
		{"two municipalities' CRLs in one PEM file", func() []byte {
			return pemOf(crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, nil, idpExtension(otherMunicipality)),
				crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, listed, idpExtension(crldpName())))
		}, 0, ErrRevoked},
		{"thisUpdate older than the default 48 h", func() []byte {
			return crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(-49*time.Hour), testAt.Add(24*time.Hour), other)
		}, 0, ErrRevocationStale},
		{"thisUpdate older than a configured 1 h", func() []byte {
			return crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, other)
		}, time.Hour, ErrRevocationStale},
		{"nextUpdate passed", func() []byte {
			return crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(-25*time.Hour), testAt.Add(-time.Hour), other)
		}, 0, ErrRevocationStale},
		{"listed in a stale CRL stays revoked", func() []byte {
			return crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(-49*time.Hour), testAt.Add(-time.Hour), listed)
		}, 0, ErrRevoked},
		{"thisUpdate in the future", func() []byte {
			return crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(time.Hour), testAt.Add(25*time.Hour), other)
		}, 0, ErrRevocationUnknown},
		{"signed by a key that is no anchor (same DN)", func() []byte {
			return crlDER(t, p.other, p.otherKey, fresh, next, other)
		}, 0, ErrRevocationUnknown},
		{"one of two CRLs signed by a key that is no anchor", func() []byte {
			return pemOf(crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, other), crlDER(t, p.other, p.otherKey, fresh, next, other))
		}, 0, ErrRevocationUnknown},
		{"delta CRL", func() []byte {
			return crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, other, deltaIndicator)
		}, 0, ErrRevocationUnknown},
		{"unknown critical extension", func() []byte {
			return crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, other, unknownCritical)
		}, 0, ErrRevocationUnknown},
		{"entry with an unknown critical extension", func() []byte {
			e := revoked(leafSerial+1, fresh, crlreason.KeyCompromise)
			e.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 29}, Critical: true, Value: []byte{0x30, 0x00}}}
			return crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, []x509.RevocationListEntry{e})
		}, 0, ErrRevocationUnknown},
		{"entry with reason removeFromCRL", func() []byte {
			return crlDER(t, p.anchors[1], p.anchorKeys[1], fresh, next, []x509.RevocationListEntry{revoked(9, fresh, crlreason.RemoveFromCRL)})
		}, 0, ErrRevocationUnknown},
		{"not a CRL", func() []byte { return []byte("this is not a CRL") }, 0, ErrRevocationUnknown},
		{"PEM of another type", func() []byte {
			return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.anchors[1].Raw})
		}, 0, ErrRevocationUnknown},
		{"empty file", func() []byte { return nil }, 0, ErrRevocationUnknown},
		{"no file", nil, 0, ErrRevocationUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "jpki.crl")
			if tt.crl != nil {
				writeFile(t, path, tt.crl())
			}
			v, _ := fileVerifier(t, path, tt.maxAge)
			res, err := v.Verify(context.Background(), [][]byte{leaf}, testAt)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				assertOneSentinel(t, err)
				return
			}
			if res.Revocation.State != StateGood || !res.Revocation.ThisUpdate.Equal(fresh) {
				t.Errorf("status = %+v", res.Revocation)
			}
		})
	}
}

// TestCRLSignerValidAtThisUpdate: a CRL signed by an anchor key after that anchor
// expired (a retired generation's key must not speak for the present).
func TestCRLSignerValidAtThisUpdate(t *testing.T) {
	p := getPKI(t)
	at := time.Date(2026, 1, 10, 0, 0, 0, 0, time.UTC) // generation 2015 expired 2025-10-19
	leaf := p.leaf(t, leafSpec{anchor: 1})
	path := filepath.Join(t.TempDir(), "jpki.crl")
	writeFile(t, path, crlDER(t, p.anchors[0], p.anchorKeys[0], at.Add(-time.Hour), at.Add(23*time.Hour), nil))
	v, _ := fileVerifier(t, path, 0)
	if _, err := v.Verify(context.Background(), [][]byte{leaf}, at); !errors.Is(err, ErrRevocationUnknown) {
		t.Fatalf("got %v, want ErrRevocationUnknown", err)
	}
}

func TestCRLFileReload(t *testing.T) {
	p := getPKI(t)
	leaf := [][]byte{p.leaf(t, leafSpec{anchor: 1})}
	path := filepath.Join(t.TempDir(), "jpki.crl")
	v, src := fileVerifier(t, path, 0)
	ctx := context.Background()
	mtime := testAt.Add(-time.Hour)
	drop := func(data []byte) {
		t.Helper()
		mtime = mtime.Add(time.Second)
		writeFile(t, path, data)
		if err := os.Chtimes(path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	step := func(name string, at time.Time, want error) {
		t.Helper()
		_, err := v.Verify(ctx, leaf, at)
		if !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Fatalf("%s: got %v, want %v", name, err, want)
		}
	}

	step("before the job ran", testAt, ErrRevocationUnknown)
	drop(crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(-2*time.Hour), testAt.Add(22*time.Hour), nil))
	step("first CRL", testAt, nil)
	step("a day later, same file", testAt.Add(24*time.Hour), ErrRevocationStale)
	drop(crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(23*time.Hour), testAt.Add(47*time.Hour),
		[]x509.RevocationListEntry{revoked(leafSerial, testAt.Add(12*time.Hour), crlreason.AffiliationChanged)}))
	step("next day's CRL revokes", testAt.Add(24*time.Hour), ErrRevoked)
	drop([]byte("truncated"))
	step("broken drop keeps the last verified CRL", testAt.Add(24*time.Hour), ErrRevoked)
	if err := src.Refresh(ctx, testAt.Add(24*time.Hour)); !errors.Is(err, ErrRevocationUnknown) {
		t.Errorf("Refresh of the broken file: err = %v, want ErrRevocationUnknown", err)
	}
	drop(crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(-2*time.Hour), testAt.Add(22*time.Hour), nil))
	step("older CRL (rollback) refused", testAt.Add(24*time.Hour), ErrRevoked)
	drop(crlDER(t, p.other, p.otherKey, testAt.Add(47*time.Hour), testAt.Add(71*time.Hour), nil))
	step("CRL by a non-anchor key refused", testAt.Add(48*time.Hour), ErrRevoked)
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	step("file gone: last CRL, still revoked", testAt.Add(48*time.Hour), ErrRevoked)
}

func TestCRLFileConcurrent(t *testing.T) {
	p := getPKI(t)
	leaf := [][]byte{p.leaf(t, leafSpec{anchor: 1})}
	path := filepath.Join(t.TempDir(), "jpki.crl")
	a := crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(-2*time.Hour), testAt.Add(22*time.Hour), nil)
	b := crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(-time.Hour), testAt.Add(23*time.Hour), nil)
	writeFile(t, path, a)
	v, _ := fileVerifier(t, path, 0)
	var wg sync.WaitGroup
	var failures atomic.Int32
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				if _, err := v.Verify(context.Background(), leaf, testAt); err != nil {
					failures.Add(1)
				}
			}
		}()
		if i == 4 {
			tmp := path + ".tmp"
			writeFile(t, tmp, b)
			if err := os.Rename(tmp, path); err != nil {
				t.Fatal(err)
			}
		}
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Errorf("%d verifications failed while the CRL was replaced", n)
	}
}

func TestCRLURL(t *testing.T) {
	p := getPKI(t)
	leaf := [][]byte{p.leaf(t, leafSpec{anchor: 1})}
	var mu sync.Mutex
	var body []byte
	status := http.StatusOK
	var fetches atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		mu.Lock()
		defer mu.Unlock()
		if r.Method != http.MethodGet {
			http.Error(w, "GET only", http.StatusMethodNotAllowed)
			return
		}
		w.WriteHeader(status)
		w.Write(body)
	}))
	defer srv.Close()
	serve := func(code int, data []byte) {
		mu.Lock()
		defer mu.Unlock()
		status, body = code, data
	}
	src, err := newCRLSource(crlSourceOptions{URL: srv.URL + "/jpki.crl", Anchors: p.anchorSet(t, 1), Refresh: time.Hour, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	v, err := newVerifier(p.anchorSet(t, 1), src)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	check := func(name string, at time.Time, want error, wantFetches int32) {
		t.Helper()
		_, err := v.Verify(ctx, leaf, at)
		if !errors.Is(err, want) || (want == nil) != (err == nil) {
			t.Fatalf("%s: got %v, want %v", name, err, want)
		}
		if n := fetches.Load(); n != wantFetches {
			t.Fatalf("%s: %d fetches, want %d", name, n, wantFetches)
		}
	}

	serve(http.StatusServiceUnavailable, nil)
	check("server down, nothing cached", testAt, ErrRevocationUnknown, 1)
	check("no retry within 30 s", testAt.Add(10*time.Second), ErrRevocationUnknown, 1)
	serve(http.StatusOK, crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(-2*time.Hour), testAt.Add(22*time.Hour), nil))
	check("server back", testAt.Add(time.Minute), nil, 2)
	check("cached", testAt.Add(30*time.Minute), nil, 2)
	serve(http.StatusOK, crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(-time.Hour), testAt.Add(23*time.Hour),
		[]x509.RevocationListEntry{revoked(leafSerial, testAt.Add(-90*time.Minute), crlreason.KeyCompromise)}))
	check("refetched after an hour", testAt.Add(62*time.Minute), ErrRevoked, 3)
	serve(http.StatusInternalServerError, nil)
	check("server down later: cached CRL used", testAt.Add(3*time.Hour), ErrRevoked, 4)

	// Past nextUpdate, with the server down and the cached CRL not listing the
	// certificate: stale, never good.
	serve(http.StatusOK, crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(5*time.Hour), testAt.Add(6*time.Hour), nil))
	src2, _ := newCRLSource(crlSourceOptions{URL: srv.URL, Anchors: p.anchorSet(t, 1), Logger: testenv.Logger()})
	if err := src2.Refresh(ctx, testAt.Add(5*time.Hour)); err != nil {
		t.Fatal(err)
	}
	serve(http.StatusInternalServerError, nil)
	if _, err := src2.Status(ctx, mustParse(t, leaf[0]), p.anchors[1], testAt.Add(7*time.Hour)); !errors.Is(err, ErrRevocationStale) {
		t.Fatalf("past nextUpdate with the server down: got %v, want ErrRevocationStale", err)
	}

	canceled, cancel := context.WithCancel(ctx)
	cancel()
	src3, _ := newCRLSource(crlSourceOptions{URL: srv.URL, Anchors: p.anchorSet(t, 1), Logger: testenv.Logger()})
	if _, err := src3.Status(canceled, mustParse(t, leaf[0]), p.anchors[1], testAt); !errors.Is(err, ErrRevocationUnknown) {
		t.Fatalf("canceled: got %v", err)
	}
}

// TestCRLConditionalRefresh: a refresh sends the validators of the CRL in use; a
// "not modified" answer downloads nothing and still counts as a refresh, which the
// data age (MaxDataAge) is measured from. When refreshes fail for longer than
// MaxDataAge, Status refuses as stale although the CRL itself is fresh.
func TestCRLConditionalRefresh(t *testing.T) {
	p := getPKI(t)
	leaf := mustParse(t, p.leaf(t, leafSpec{anchor: 1}))
	der := crlDER(t, p.anchors[1], p.anchorKeys[1], testAt.Add(-time.Hour), testAt.Add(23*time.Hour), nil)
	var mu sync.Mutex
	down := false
	var full, notModified atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case down:
			http.Error(w, "down", http.StatusServiceUnavailable)
		case r.Header.Get("If-None-Match") == `"crl-1"`:
			notModified.Add(1)
			w.WriteHeader(http.StatusNotModified)
		default:
			full.Add(1)
			w.Header().Set("ETag", `"crl-1"`)
			w.Write(der)
		}
	}))
	defer srv.Close()
	src, err := newCRLSource(crlSourceOptions{URL: srv.URL, Anchors: p.anchorSet(t, 1), Refresh: 5 * time.Minute,
		MaxDataAge: 15 * time.Minute, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3 {
		if err := src.Refresh(ctx, testAt.Add(time.Duration(i)*5*time.Minute)); err != nil {
			t.Fatalf("refresh %d: %v", i, err)
		}
	}
	if full.Load() != 1 || notModified.Load() != 2 {
		t.Fatalf("%d full downloads and %d not-modified answers, want 1 and 2", full.Load(), notModified.Load())
	}
	if got, want := src.RefreshedAt(), testAt.Add(10*time.Minute); !got.Equal(want) {
		t.Fatalf("RefreshedAt = %s, want %s (the last not-modified answer)", got, want)
	}
	if st, err := src.Status(ctx, leaf, p.anchors[1], testAt.Add(12*time.Minute)); err != nil || st.State != StateGood {
		t.Fatalf("Status within the data age: %v, %v", st, err)
	}
	mu.Lock()
	down = true
	mu.Unlock()
	// The refreshes fail (each Status is past Refresh, so it tries, then holds back
	// for 30 s); the CRL is fresh by its own dates, the node's data is not.
	if _, err := src.Status(ctx, leaf, p.anchors[1], testAt.Add(24*time.Minute)); err != nil {
		t.Fatalf("Status 14 min after the last refresh: %v", err)
	}
	_, err = src.Status(ctx, leaf, p.anchors[1], testAt.Add(26*time.Minute))
	if !errors.Is(err, ErrRevocationStale) {
		t.Fatalf("Status 16 min after the last refresh: %v, want ErrRevocationStale", err)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	if _, err := src.Status(ctx, leaf, p.anchors[1], testAt.Add(27*time.Minute)); err != nil {
		t.Fatalf("Status after the source answered again: %v", err)
	}
}

// TestCRLRun: Run refreshes on its interval, with no Status call to prompt it.
func TestCRLRun(t *testing.T) {
	p := getPKI(t)
	var fetches atomic.Int32
	der := crlDER(t, p.anchors[1], p.anchorKeys[1], time.Now().Add(-time.Hour), time.Now().Add(23*time.Hour), nil)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Write(der)
	}))
	defer srv.Close()
	src, err := newCRLSource(crlSourceOptions{URL: srv.URL, Anchors: p.anchorSet(t, 1), Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); src.Run(ctx, 20*time.Millisecond) }()
	deadline := time.Now().Add(10 * time.Second)
	for fetches.Load() < 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if n := fetches.Load(); n < 3 {
		t.Fatalf("%d fetches in 10 s at a 20 ms interval", n)
	}
	if src.RefreshedAt().IsZero() {
		t.Fatal("RefreshedAt is zero after refreshes")
	}
}

func TestCRLRevokedSince(t *testing.T) {
	p := getPKI(t)
	key := make([]byte, 32)
	leafDER := p.leaf(t, leafSpec{anchor: 1})
	sc, err := ParseSignatureCertificate(leafDER)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "jpki.crl")
	day := 24 * time.Hour
	writeFile(t, path, crlDER(t, p.anchors[2], p.anchorKeys[2], testAt.Add(-time.Hour), testAt.Add(23*time.Hour), []x509.RevocationListEntry{
		revoked(101, testAt.Add(-10*day), crlreason.Superseded),
		revoked(leafSerial, testAt.Add(-2*day), crlreason.AffiliationChanged),
		revoked(103, testAt.Add(-3*day), crlreason.CertificateHold),
		revoked(104, testAt.Add(-30*day), crlreason.KeyCompromise),
	}))
	_, src := fileVerifier(t, path, 0)
	got, err := src.RevokedSince(context.Background(), testAt.Add(-3*day), testAt)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Serial.Int64() != 103 || got[1].Serial.Int64() != leafSerial ||
		got[0].Reason != crlreason.CertificateHold || got[1].Reason != crlreason.AffiliationChanged {
		t.Fatalf("got %+v", got)
	}
	if got[1].CertHash(key) != sc.CertHash(key) {
		t.Error("the revoked entry's CertHash differs from the certificate's")
	}
	if got[0].CertHash(key) == sc.CertHash(key) {
		t.Error("another entry's CertHash equals the certificate's")
	}
	if _, err := src.RevokedSince(context.Background(), time.Time{}, testAt.Add(3*day)); !errors.Is(err, ErrRevocationStale) {
		t.Errorf("stale CRL listed: %v", err)
	}
}

func TestNewCRLSourceRefuses(t *testing.T) {
	p := getPKI(t)
	for name, o := range map[string]crlSourceOptions{
		"negative data age":    {File: "x", Anchors: p.anchorSet(t, 1), MaxDataAge: -1},
		"neither URL nor file": {Anchors: p.anchorSet(t, 1)},
		"both":                 {URL: "https://example.jp/crl", File: "/x", Anchors: p.anchorSet(t, 1)},
		"no anchors":           {File: "/x"},
		"ftp URL":              {URL: "ftp://example.jp/crl", Anchors: p.anchorSet(t, 1)},
		"negative max age":     {File: "/x", Anchors: p.anchorSet(t, 1), MaxAge: -time.Hour},
	} {
		if _, err := newCRLSource(o); !isSetupError(err) {
			t.Errorf("%s: err = %v, want a setupError", name, err)
		}
	}
}

// BenchmarkCRLStatus measures a lookup in a loaded CRL of 100 000 entries, and how
// long indexing it takes.
func BenchmarkCRLStatus(b *testing.B) {
	p := getPKI(b)
	entries := make([]x509.RevocationListEntry, 100_000)
	for i := range entries {
		entries[i] = revoked(int64(i+1)<<20, testAt.Add(-time.Duration(i)*time.Second), crlreason.Reason(i%7))
	}
	der := crlDER(b, p.anchors[1], p.anchorKeys[1], testAt.Add(-time.Hour), testAt.Add(23*time.Hour), entries)
	start := time.Now()
	set, err := buildCRLSet(der, p.anchorSet(b, 1))
	if err != nil {
		b.Fatal(err)
	}
	indexTime := time.Since(start)
	// A file source whose file (os.DevNull) never changes keeps the set given here.
	fi, err := os.Stat(os.DevNull)
	if err != nil {
		b.Fatal(err)
	}
	src := &CRLSource{opts: crlSourceOptions{File: os.DevNull, MaxAge: defaultCRLMaxAge}, log: testenv.Logger(),
		lock: make(chan struct{}, 1), set: set, loadedMod: fi.ModTime(), loadedSize: fi.Size()}
	leaf := mustParse(b, p.leaf(b, leafSpec{anchor: 1}))
	for b.Loop() {
		if _, err := src.Status(context.Background(), leaf, p.anchors[1], testAt); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(indexTime.Milliseconds()), "ms/index")
}
