package crl

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

const shards = 4

func shardURL(s int) string { return fmt.Sprintf("http://ocsp.example.jp/crl/ca1/%d.crl", s) }

type fixture struct {
	ca    *x509.Certificate
	caKey *ecdsa.PrivateKey
	dir   string
}

func newFixture(t testing.TB) *fixture {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Country: []string{"JP"}, CommonName: "inkan CRL test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	return &fixture{ca: ca, caKey: key, dir: t.TempDir()}
}

// leaf issues a certificate whose CRLDP is its shard's URL.
func (f *fixture) leaf(t *testing.T, serial *big.Int) *x509.Certificate {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(12 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		CRLDistributionPoints: []string{shardURL(Shard(serial, shards))},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, f.ca, k.Public(), f.caKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}

func (f *fixture) write(t *testing.T, name, typ string, der []byte) string {
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func needOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openssl is required in CI")
		}
		t.Skip("openssl not installed")
	}
}

func TestShardCRLWithOpenSSL(t *testing.T) {
	needOpenSSL(t)
	f := newFixture(t)
	// Find a revoked and a good serial in the same shard.
	revokedSerial, goodSerial := big.NewInt(0x1000), big.NewInt(0x1000+shards)
	revoked, good := f.leaf(t, revokedSerial), f.leaf(t, goodSerial)
	shard := Shard(revokedSerial, shards)
	now := time.Now().UTC().Truncate(time.Second)
	der, err := Build(f.ca, f.caKey, Spec{Shard: shard, URL: shardURL(shard), Number: big.NewInt(7), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)},
		shards, []Entry{{Serial: revokedSerial, RevokedAt: now.Add(-time.Minute), Reason: 3}})
	if err != nil {
		t.Fatal(err)
	}
	caPEM := f.write(t, "ca.pem", "CERTIFICATE", f.ca.Raw)
	crlPEM := f.write(t, "shard.crl", "X509 CRL", der)
	out, err := exec.Command("openssl", "crl", "-in", crlPEM, "-CAfile", caPEM, "-verify", "-noout", "-text").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "verify OK") {
		t.Fatalf("openssl crl -verify: %v\n%s", err, out)
	}
	for _, want := range []string{"Issuing Distribution Point: critical", shardURL(shard), "Only User Certificates", "X509v3 CRL Number", "7", "Affiliation Changed"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("CRL text lacks %q:\n%s", want, out)
		}
	}
	// openssl verify with the CRL: the IDP matches the CRLDP, so the CRL is in scope.
	for _, tc := range []struct {
		cert *x509.Certificate
		want string
	}{{revoked, "certificate revoked"}, {good, ": OK"}} {
		certPEM := f.write(t, "leaf.pem", "CERTIFICATE", tc.cert.Raw)
		out, _ := exec.Command("openssl", "verify", "-crl_check", "-CAfile", caPEM, "-CRLfile", crlPEM, certPEM).CombinedOutput()
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("openssl verify -crl_check serial %x: want %q, got:\n%s", tc.cert.SerialNumber, tc.want, out)
		}
	}
}

func TestCRLsParseAndLint(t *testing.T) {
	f := newFixture(t)
	now := time.Now().UTC().Truncate(time.Second)
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: lint.SourceList{lint.RFC5280}})
	if err != nil {
		t.Fatal(err)
	}
	var all []Entry
	for i := range 20 {
		all = append(all, Entry{Serial: big.NewInt(int64(0x5000 + i)), RevokedAt: now.Add(-time.Hour), Reason: []int{0, 1, 3, 4, 5, 6}[i%6]})
	}
	for shard := Full; shard < shards; shard++ {
		var entries []Entry
		for _, e := range all {
			if shard == Full || Shard(e.Serial, shards) == shard {
				entries = append(entries, e)
			}
		}
		spec := Spec{Shard: shard, Number: big.NewInt(int64(shard + 10)), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)}
		if shard != Full {
			spec.URL = shardURL(shard)
		}
		der, err := Build(f.ca, f.caKey, spec, shards, entries)
		if err != nil {
			t.Fatal(err)
		}
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		if err := rl.CheckSignatureFrom(f.ca); err != nil {
			t.Fatal(err)
		}
		if len(rl.RevokedCertificateEntries) != len(entries) {
			t.Errorf("shard %d: %d entries, want %d", shard, len(rl.RevokedCertificateEntries), len(entries))
		}
		zrl, err := zx509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		for name, r := range zlint.LintRevocationListEx(zrl, reg).Results {
			if r.Status >= lint.Warn {
				t.Errorf("shard %d: %s: %s %s", shard, name, r.Status, r.Details)
			}
		}
	}
}

func TestBuildRefuses(t *testing.T) {
	f := newFixture(t)
	now := time.Now()
	ok := Spec{Shard: 1, URL: shardURL(1), Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(time.Hour)}
	cases := map[string]struct {
		edit    func(*Spec)
		entries []Entry
		want    string
	}{
		"no number":         {func(s *Spec) { s.Number = nil }, nil, "CRL number"},
		"next before this":  {func(s *Spec) { s.NextUpdate = s.ThisUpdate }, nil, "nextUpdate"},
		"shard without URL": {func(s *Spec) { s.URL = "" }, nil, "distribution point URL"},
		"foreign serial":    {func(*Spec) {}, []Entry{{Serial: big.NewInt(4 * 100), RevokedAt: now}}, "belongs to shard 0"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := ok
			tc.edit(&s)
			if _, err := Build(f.ca, f.caKey, s, shards, tc.entries); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error about %q", err, tc.want)
			}
		})
	}
}

// BenchmarkBuildMillion is the CRL build time for 1,000,000 revoked entries spread
// over 64 shards: every shard CRL and the full CRL, as a leader rebuilding them all.
func BenchmarkBuildMillion(b *testing.B) {
	f := newFixture(b)
	const n, nShards = 1_000_000, 64
	now := time.Now().UTC().Truncate(time.Second)
	byShard := make([][]Entry, nShards)
	all := make([]Entry, 0, n)
	buf := make([]byte, 9)
	for i := range n {
		_, _ = rand.Read(buf)
		buf[0] &= 0x7f
		e := Entry{Serial: new(big.Int).SetBytes(buf), RevokedAt: now.Add(-time.Duration(i) * time.Second), Reason: 1}
		all = append(all, e)
		s := Shard(e.Serial, nShards)
		byShard[s] = append(byShard[s], e)
	}
	for b.Loop() {
		size := 0
		for s := range nShards {
			der, err := Build(f.ca, f.caKey, Spec{Shard: s, URL: shardURL(s), Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)}, nShards, byShard[s])
			if err != nil {
				b.Fatal(err)
			}
			size += len(der)
		}
		der, err := Build(f.ca, f.caKey, Spec{Shard: Full, Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)}, nShards, all)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(size+len(der))/1e6, "MB")
	}
}
