package jpki

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// responderCert is a delegated OCSP responder certificate for caKey issued by parent.
func responderCert(t testing.TB, parent *x509.Certificate, parentKey *rsa.PrivateKey, ocspSigning bool, nb, na time.Time) *x509.Certificate {
	t.Helper()
	p := getPKI(t)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(500),
		RawSubject:   name(oidAttrC, "JP", oidAttrO, "Platform operator", oidAttrCN, "OCSP responder"),
		NotBefore:    nb,
		NotAfter:     na,
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	if ocspSigning {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageOCSPSigning}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &p.caKey.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return mustParse(t, der)
}

func TestOCSPSource(t *testing.T) {
	p := getPKI(t)
	leafDER := p.leaf(t, leafSpec{anchor: 1})
	leaf := mustParse(t, leafDER)
	issuer, issuerKey := p.anchors[1], p.anchorKeys[1]
	revokedAt := testAt.Add(-5 * time.Hour).Truncate(time.Second)
	delegated := responderCert(t, issuer, issuerKey, true, testAt.Add(-24*time.Hour), testAt.Add(24*time.Hour))

	// signed builds a response for the request's serial from tmpl, signed by key as
	// responder (responder certificate embedded when it is not the issuer).
	type responder func(req *ocsp.Request) ([]byte, int)
	signed := func(responder *x509.Certificate, key crypto.Signer, tmpl ocsp.Response) responder {
		return func(req *ocsp.Request) ([]byte, int) {
			if tmpl.SerialNumber == nil {
				tmpl.SerialNumber = req.SerialNumber
			}
			if tmpl.ThisUpdate.IsZero() {
				tmpl.ThisUpdate = testAt.Add(-10 * time.Minute)
				tmpl.NextUpdate = testAt.Add(50 * time.Minute)
			}
			if !responder.Equal(issuer) {
				tmpl.Certificate = responder
			}
			der, err := ocsp.CreateResponse(issuer, responder, tmpl, key)
			if err != nil {
				t.Error(err)
			}
			return der, http.StatusOK
		}
	}
	raw := func(body []byte, code int) responder {
		return func(*ocsp.Request) ([]byte, int) { return body, code }
	}

	tests := []struct {
		name       string
		respond    responder
		wantErr    error
		wantReason crlreason.Reason
	}{
		{"good, signed by the issuer", signed(issuer, issuerKey, ocsp.Response{Status: ocsp.Good}), nil, 0},
		{"good, delegated responder", signed(delegated, p.caKey, ocsp.Response{Status: ocsp.Good}), nil, 0},
		{"revoked, keyCompromise", signed(issuer, issuerKey, ocsp.Response{Status: ocsp.Revoked, RevokedAt: revokedAt, RevocationReason: ocsp.KeyCompromise}), ErrRevoked, crlreason.KeyCompromise},
		{"revoked, affiliationChanged", signed(delegated, p.caKey, ocsp.Response{Status: ocsp.Revoked, RevokedAt: revokedAt, RevocationReason: ocsp.AffiliationChanged}), ErrRevoked, crlreason.AffiliationChanged},
		{"revoked, certificateHold", signed(issuer, issuerKey, ocsp.Response{Status: ocsp.Revoked, RevokedAt: revokedAt, RevocationReason: ocsp.CertificateHold}), ErrRevoked, crlreason.CertificateHold},
		{"unknown", signed(issuer, issuerKey, ocsp.Response{Status: ocsp.Unknown}), ErrRevocationUnknown, 0},
		{"bad signature: signed by a key that is no anchor", signed(p.other, p.otherKey, ocsp.Response{Status: ocsp.Good}), ErrRevocationUnknown, 0},
		{"bad signature: signed by another generation", signed(p.anchors[2], p.anchorKeys[2], ocsp.Response{Status: ocsp.Good}), ErrRevocationUnknown, 0},
		{"delegated responder without id-kp-OCSPSigning",
			signed(responderCert(t, issuer, issuerKey, false, testAt.Add(-time.Hour), testAt.Add(time.Hour)), p.caKey, ocsp.Response{Status: ocsp.Good}),
			ErrRevocationUnknown, 0},
		{"delegated responder issued by another root",
			signed(responderCert(t, p.other, p.otherKey, true, testAt.Add(-time.Hour), testAt.Add(time.Hour)), p.caKey, ocsp.Response{Status: ocsp.Good}),
			ErrRevocationUnknown, 0},
		{"delegated responder expired",
			signed(responderCert(t, issuer, issuerKey, true, testAt.Add(-48*time.Hour), testAt.Add(-time.Hour)), p.caKey, ocsp.Response{Status: ocsp.Good}),
			ErrRevocationUnknown, 0},
		{"stale: thisUpdate older than 24 h", signed(issuer, issuerKey, ocsp.Response{Status: ocsp.Good,
			ThisUpdate: testAt.Add(-25 * time.Hour), NextUpdate: testAt.Add(time.Hour)}), ErrRevocationStale, 0},
		{"stale: nextUpdate passed", signed(issuer, issuerKey, ocsp.Response{Status: ocsp.Good,
			ThisUpdate: testAt.Add(-2 * time.Hour), NextUpdate: testAt.Add(-time.Hour)}), ErrRevocationStale, 0},
		{"thisUpdate in the future", signed(issuer, issuerKey, ocsp.Response{Status: ocsp.Good,
			ThisUpdate: testAt.Add(time.Hour), NextUpdate: testAt.Add(2 * time.Hour)}), ErrRevocationUnknown, 0},
		{"response for another serial", signed(issuer, issuerKey, ocsp.Response{Status: ocsp.Good, SerialNumber: big.NewInt(99)}), ErrRevocationUnknown, 0},
		{"tryLater", raw(ocsp.TryLaterErrorResponse, http.StatusOK), ErrRevocationUnknown, 0},
		{"unauthorized", raw(ocsp.UnauthorizedErrorResponse, http.StatusOK), ErrRevocationUnknown, 0},
		{"HTTP 500", raw(nil, http.StatusInternalServerError), ErrRevocationUnknown, 0},
		{"garbage", raw([]byte("<html>maintenance</html>"), http.StatusOK), ErrRevocationUnknown, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				req, err := ocsp.ParseRequest(body)
				if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/ocsp-request" || err != nil {
					http.Error(w, "bad request", http.StatusBadRequest)
					return
				}
				if req.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
					http.Error(w, "wrong serial asked", http.StatusBadRequest)
					return
				}
				der, code := tt.respond(req)
				w.Header().Set("Content-Type", "application/ocsp-response")
				w.WriteHeader(code)
				w.Write(der)
			}))
			defer srv.Close()
			src, err := newOCSPSource(ocspSourceOptions{URL: srv.URL, Logger: testenv.Logger()})
			if err != nil {
				t.Fatal(err)
			}
			v, err := newVerifier(p.anchorSet(t, 0, 1, 2), src)
			if err != nil {
				t.Fatal(err)
			}
			res, err := v.Verify(context.Background(), [][]byte{leafDER}, testAt)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				assertOneSentinel(t, err)
				var re *RevokedError
				if errors.As(err, &re) && (re.Reason != tt.wantReason || !re.RevokedAt.Equal(revokedAt)) {
					t.Errorf("got %+v, want reason %v at %v", re, tt.wantReason, revokedAt)
				}
				return
			}
			if res.Revocation.State != StateGood || res.Revocation.ThisUpdate.IsZero() {
				t.Errorf("status = %+v", res.Revocation)
			}
		})
	}
}

func TestOCSPSourceUnreachable(t *testing.T) {
	p := getPKI(t)
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	src, err := newOCSPSource(ocspSourceOptions{URL: url, Logger: testenv.Logger()})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Status(context.Background(), mustParse(t, p.leaf(t, leafSpec{anchor: 1})), p.anchors[1], testAt)
	if !errors.Is(err, ErrRevocationUnknown) {
		t.Fatalf("got %v, want ErrRevocationUnknown", err)
	}
	for _, bad := range []string{"", "responder.example.jp", "file:///etc/passwd"} {
		if _, err := newOCSPSource(ocspSourceOptions{URL: bad}); !isSetupError(err) {
			t.Errorf("URL %q: err = %v, want a setupError", bad, err)
		}
	}
}
