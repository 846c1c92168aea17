package jpki

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/internal/testenv"
)

func TestVerifyChain(t *testing.T) {
	p := getPKI(t)
	all := p.anchorSet(t, 0, 1, 2)
	none := newNoneSource(testenv.Logger())
	inter := p.intermediate(t, 1)

	tests := []struct {
		name     string
		anchors  *anchorSet
		policies []string
		x5c      func() [][]byte
		at       time.Time
		wantErr  error
		// wantAnchor is the index of the anchor that must end the chain.
		wantAnchor int
		wantLen    int // issuers
	}{
		{name: "issued by generation 2015", x5c: one(p.leaf(t, leafSpec{anchor: 0})), wantAnchor: 0, wantLen: 1},
		{name: "issued by generation 2019", x5c: one(p.leaf(t, leafSpec{anchor: 1})), wantAnchor: 1, wantLen: 1},
		{name: "issued by generation 2023", x5c: one(p.leaf(t, leafSpec{anchor: 2})), wantAnchor: 2, wantLen: 1},
		{name: "anchor sent along in x5c", x5c: many(p.leaf(t, leafSpec{anchor: 2}), p.anchors[2].Raw), wantAnchor: 2, wantLen: 1},
		{name: "another anchor sent along in x5c", x5c: many(p.leaf(t, leafSpec{anchor: 2}), p.anchors[0].Raw), wantAnchor: 2, wantLen: 1},
		{
			name:       "intermediate from x5c",
			x5c:        many(p.leaf(t, leafSpec{parent: inter, parentKey: p.caKey}), inter.Raw),
			wantAnchor: 1, wantLen: 2,
		},
		{
			name:    "intermediate missing",
			x5c:     one(p.leaf(t, leafSpec{parent: inter, parentKey: p.caKey})),
			wantErr: ErrUntrusted,
		},
		{
			name:    "root with the same DN that is not configured",
			x5c:     one(p.leaf(t, leafSpec{anchor: -1})),
			wantErr: ErrUntrusted,
		},
		{
			name:    "unconfigured root sent along in x5c",
			x5c:     many(p.leaf(t, leafSpec{anchor: -1}), p.other.Raw),
			wantErr: ErrUntrusted,
		},
		{
			name:    "issuing generation not configured",
			anchors: p.anchorSet(t, 0, 2),
			x5c:     one(p.leaf(t, leafSpec{anchor: 1})),
			wantErr: ErrUntrusted,
		},
		{
			name:    "expired",
			x5c:     one(p.leaf(t, leafSpec{anchor: 1, notAfter: testAt.Add(-time.Second)})),
			wantErr: ErrExpired,
		},
		{
			name:    "not yet valid",
			x5c:     one(p.leaf(t, leafSpec{anchor: 1, notBefore: testAt.Add(time.Hour)})),
			wantErr: ErrExpired,
		},
		{
			name:    "issuing anchor expired while others are valid",
			x5c:     one(p.leaf(t, leafSpec{anchor: 0})),
			at:      time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC),
			wantErr: ErrExpired,
		},
		{
			name:    "digitalSignature only",
			x5c:     one(p.leaf(t, leafSpec{anchor: 1, keyUsage: x509.KeyUsageDigitalSignature})),
			wantErr: ErrKeyUsage,
		},
		{
			name:    "nonRepudiation only",
			x5c:     one(p.leaf(t, leafSpec{anchor: 1, keyUsage: x509.KeyUsageContentCommitment})),
			wantErr: ErrKeyUsage,
		},
		{
			name:    "authentication-style key usage",
			x5c:     one(p.leaf(t, leafSpec{anchor: 1, keyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment})),
			wantErr: ErrKeyUsage,
		},
		{
			name:    "signature key usage plus keyCertSign",
			x5c:     one(p.leaf(t, leafSpec{anchor: 1, keyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment | x509.KeyUsageCertSign})),
			wantErr: ErrKeyUsage,
		},
		{
			name:    "test-card policy, production only accepted",
			x5c:     one(p.leaf(t, leafSpec{anchor: 1, policies: []string{PolicyTest}})),
			wantErr: ErrPolicy,
		},
		{
			name:       "test-card policy, test policy configured",
			policies:   []string{PolicyProduction, PolicyTest},
			x5c:        one(p.leaf(t, leafSpec{anchor: 1, policies: []string{PolicyTest}})),
			wantAnchor: 1, wantLen: 1,
		},
		{
			name:     "production policy, only test policy configured",
			policies: []string{PolicyTest},
			x5c:      one(p.leaf(t, leafSpec{anchor: 1})),
			wantErr:  ErrPolicy,
		},
		{
			name:    "another JPKI policy",
			x5c:     one(p.leaf(t, leafSpec{anchor: 1, policies: []string{"1.2.392.200149.8.5.1.1.10"}})),
			wantErr: ErrPolicy,
		},
		{
			name: "unprocessed critical extension",
			x5c: one(p.leaf(t, leafSpec{anchor: 1, extra: []pkix.Extension{
				{Id: asn1.ObjectIdentifier{1, 2, 392, 200149, 8, 5, 9, 9}, Critical: true, Value: []byte{0x05, 0x00}},
			}})),
			wantErr: ErrMalformed,
		},
		{name: "empty x5c", x5c: many(), wantErr: ErrMalformed},
		{
			name:    "five certificates",
			x5c:     many(p.leaf(t, leafSpec{anchor: 1}), inter.Raw, inter.Raw, inter.Raw, inter.Raw),
			wantErr: ErrMalformed,
		},
		{name: "garbage intermediate", x5c: many(p.leaf(t, leafSpec{anchor: 1}), []byte{0x30, 0x00}), wantErr: ErrMalformed},
		{
			name:    "leaf without basic-4 information",
			x5c:     one(p.leaf(t, leafSpec{anchor: 1, noSAN: true})),
			wantErr: ErrMalformed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			anchors := tt.anchors
			if anchors == nil {
				anchors = all
			}
			v, err := newVerifier(anchors, none, tt.policies...)
			if err != nil {
				t.Fatal(err)
			}
			at := tt.at
			if at.IsZero() {
				at = testAt
			}
			res, err := v.Verify(context.Background(), tt.x5c(), at)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				assertOneSentinel(t, err)
				assertNoPersonalData(t, err.Error())
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(res.Issuers) != tt.wantLen {
				t.Fatalf("issuers = %d, want %d", len(res.Issuers), tt.wantLen)
			}
			if got := res.Issuers[len(res.Issuers)-1]; !got.Equal(p.anchors[tt.wantAnchor]) {
				t.Errorf("chain ends at the anchor valid from %s, want the one from %s", got.NotBefore, p.anchors[tt.wantAnchor].NotBefore)
			}
			if res.Revocation.State != StateGood || res.Certificate.Identity.Name() != testName {
				t.Errorf("result = %+v", res)
			}
		})
	}
}

// assertOneSentinel checks that err matches exactly one of the exported errors, so
// the enrollment API's mapping is unambiguous.
func assertOneSentinel(t *testing.T, err error) {
	t.Helper()
	n := 0
	for _, s := range []error{ErrMalformed, ErrUntrusted, ErrExpired, ErrKeyUsage, ErrPolicy, ErrRevoked, ErrRevocationUnknown, ErrRevocationStale} {
		if errors.Is(err, s) {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%v matches %d sentinels, want 1", err, n)
	}
}

func one(der []byte) func() [][]byte { return func() [][]byte { return [][]byte{der} } }

func many(ders ...[]byte) func() [][]byte { return func() [][]byte { return ders } }

// sourceFunc adapts a function to revocationSource.
type sourceFunc func(ctx context.Context, cert, issuer *x509.Certificate, at time.Time) (Status, error)

func (f sourceFunc) Status(ctx context.Context, cert, issuer *x509.Certificate, at time.Time) (Status, error) {
	return f(ctx, cert, issuer, at)
}

func TestVerifyRevocationOutcomes(t *testing.T) {
	p := getPKI(t)
	x5c := [][]byte{p.leaf(t, leafSpec{anchor: 2})}
	revokedAt := testAt.Add(-time.Hour)
	tests := []struct {
		name    string
		src     sourceFunc
		wantErr error
	}{
		{"good", func(context.Context, *x509.Certificate, *x509.Certificate, time.Time) (Status, error) {
			return Status{State: StateGood}, nil
		}, nil},
		{"revoked", func(context.Context, *x509.Certificate, *x509.Certificate, time.Time) (Status, error) {
			return Status{State: stateRevoked, Reason: crlreason.AffiliationChanged, RevokedAt: revokedAt}, nil
		}, ErrRevoked},
		{"zero status", func(context.Context, *x509.Certificate, *x509.Certificate, time.Time) (Status, error) {
			return Status{}, nil
		}, ErrRevocationUnknown},
		{"plain error", func(context.Context, *x509.Certificate, *x509.Certificate, time.Time) (Status, error) {
			return Status{State: StateGood}, io.ErrUnexpectedEOF
		}, ErrRevocationUnknown},
		{"stale", func(context.Context, *x509.Certificate, *x509.Certificate, time.Time) (Status, error) {
			return Status{}, ErrRevocationStale
		}, ErrRevocationStale},
		{"source sees the issuer and the time", func(_ context.Context, cert, issuer *x509.Certificate, at time.Time) (Status, error) {
			if !issuer.Equal(p.anchors[2]) || !at.Equal(testAt) || cert.SerialNumber.Int64() != 0x4a504b49 {
				return Status{}, errors.New("wrong arguments")
			}
			return Status{State: StateGood}, nil
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := newVerifier(p.anchorSet(t, 0, 1, 2), tt.src)
			if err != nil {
				t.Fatal(err)
			}
			_, err = v.Verify(context.Background(), x5c, testAt)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("got %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				assertOneSentinel(t, err)
			}
			var re *RevokedError
			if errors.As(err, &re) && (re.Reason != crlreason.AffiliationChanged || !re.RevokedAt.Equal(revokedAt)) {
				t.Errorf("revoked error = %+v", re)
			}
		})
	}
}

func TestNewVerifierRefuses(t *testing.T) {
	p := getPKI(t)
	none := newNoneSource(testenv.Logger())
	if _, err := newVerifier(nil, none); !isSetupError(err) {
		t.Errorf("no anchors: err = %v, want a setupError", err)
	}
	if _, err := newVerifier(p.anchorSet(t, 0), nil); !isSetupError(err) {
		t.Errorf("no revocation source: err = %v, want a setupError", err)
	}
	if _, err := newVerifier(p.anchorSet(t, 0), none, "not.an.oid"); !isSetupError(err) {
		t.Errorf("bad policy: err = %v, want a setupError", err)
	}
	leaf := mustParse(t, p.leaf(t, leafSpec{}))
	if _, err := newAnchors(leaf); !isSetupError(err) {
		t.Errorf("a signature certificate as an anchor: err = %v, want a setupError", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), RawSubject: jlisDN(), NotBefore: anchorValidity[0][0], NotAfter: anchorValidity[0][1],
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
		ExtraExtensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3}, Critical: true, Value: []byte{0x05, 0x00}}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &p.caKey.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newAnchors(mustParse(t, der)); !isSetupError(err) {
		t.Errorf("an anchor with an unprocessed critical extension: err = %v, want a setupError", err)
	}
}

// isSetupError says whether err is a constructor's refusal of its arguments.
func isSetupError(err error) bool {
	var se *setupError
	return errors.As(err, &se)
}

// TestVerifyReissuedAnchor: two anchors with the same key (a root re-issued with a
// longer validity) both verify the signature; the walk keeps the one valid at the time.
func TestVerifyReissuedAnchor(t *testing.T) {
	p := getPKI(t)
	reissued := mustRoot(p.anchorKeys[0], 150, anchorValidity[0][0], anchorValidity[0][1].AddDate(5, 0, 0))
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC) // the original expired 2025-10-19
	leaf := p.leaf(t, leafSpec{anchor: 0})
	for _, order := range [][]*x509.Certificate{{p.anchors[0], reissued}, {reissued, p.anchors[0]}} {
		anchors, err := newAnchors(order...)
		if err != nil {
			t.Fatal(err)
		}
		v, err := newVerifier(anchors, newNoneSource(testenv.Logger()))
		if err != nil {
			t.Fatal(err)
		}
		res, err := v.Verify(context.Background(), [][]byte{leaf}, at)
		if err != nil {
			t.Fatal(err)
		}
		if !res.Issuers[0].Equal(reissued) {
			t.Error("chain ends at the expired anchor")
		}
	}
	anchors, _ := newAnchors(p.anchors[0])
	v, _ := newVerifier(anchors, newNoneSource(testenv.Logger()))
	if _, err := v.Verify(context.Background(), [][]byte{leaf}, at); !errors.Is(err, ErrExpired) {
		t.Errorf("only the expired anchor: got %v, want ErrExpired", err)
	}
}

func TestNoneSourceWarnsOnConstruction(t *testing.T) {
	var n int
	h := &countHandler{level: slog.LevelWarn, n: &n}
	for range 3 {
		newNoneSource(slog.New(h))
	}
	if n != 3 {
		t.Errorf("%d warnings for 3 constructions", n)
	}
}

type countHandler struct {
	level slog.Level
	n     *int
}

func (h *countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= h.level {
		*h.n++
	}
	return nil
}
func (h *countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *countHandler) WithGroup(string) slog.Handler      { return h }
