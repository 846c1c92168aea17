package crl

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
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

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/internal/testenv"
)

const shards = 4

func shardURL(s int) string {
	switch s {
	case Full:
		return "http://ocsp.example.jp/crl/ca1/full.crl"
	case Delta:
		return "http://ocsp.example.jp/crl/ca1/delta.crl"
	}
	return fmt.Sprintf("http://ocsp.example.jp/crl/ca1/%d.crl", s)
}

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

func needOpenSSL(t *testing.T) { testenv.Tool(t, "openssl", "openssl") }

func TestShardCRLWithOpenSSL(t *testing.T) {
	needOpenSSL(t)
	f := newFixture(t)
	// Find a revoked and a good serial in the same shard.
	revokedSerial, goodSerial := big.NewInt(0x1000), big.NewInt(0x1000+shards)
	revoked, good := f.leaf(t, revokedSerial), f.leaf(t, goodSerial)
	shard := Shard(revokedSerial, shards)
	now := time.Now().UTC().Truncate(time.Second)
	der, err := build(f.ca, f.caKey, buildSpec{Shard: shard, URL: shardURL(shard), Number: big.NewInt(7), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)},
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
		all = append(all, Entry{Serial: big.NewInt(int64(0x5000 + i)), RevokedAt: now.Add(-time.Hour), Reason: []crlreason.Reason{0, 1, 3, 4, 5, 6}[i%6]})
	}
	for shard := Delta; shard < shards; shard++ {
		var entries []Entry
		for _, e := range all {
			if shard < 0 || Shard(e.Serial, shards) == shard {
				entries = append(entries, e)
			}
		}
		spec := buildSpec{Shard: shard, Number: big.NewInt(int64(shard + 10)), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)}
		switch shard {
		case Full:
			spec.Freshest = shardURL(Delta)
		case Delta:
			spec.Base = big.NewInt(int64(shard + 9))
			entries = append(entries, Entry{Serial: big.NewInt(0x6000), RevokedAt: now.Add(-time.Hour), Reason: reasonRemoveFromCRL})
		default:
			spec.URL = shardURL(shard)
		}
		der, err := build(f.ca, f.caKey, spec, shards, entries)
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
	ok := buildSpec{Shard: 1, URL: shardURL(1), Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(time.Hour)}
	cases := map[string]struct {
		edit    func(*buildSpec)
		entries []Entry
		want    string
	}{
		"no number":                     {func(s *buildSpec) { s.Number = nil }, nil, "CRL number"},
		"next before this":              {func(s *buildSpec) { s.NextUpdate = s.ThisUpdate }, nil, "nextUpdate"},
		"shard without URL":             {func(s *buildSpec) { s.URL = "" }, nil, "distribution point URL"},
		"foreign serial":                {func(*buildSpec) {}, []Entry{{Serial: big.NewInt(4 * 100), RevokedAt: now}}, "belongs to shard 0"},
		"delta without base":            {func(s *buildSpec) { s.Shard, s.URL = Delta, "" }, nil, "base CRL number"},
		"delta base not below":          {func(s *buildSpec) { s.Shard, s.URL, s.Base = Delta, "", big.NewInt(1) }, nil, "base CRL number"},
		"base on a shard":               {func(s *buildSpec) { s.Base = big.NewInt(1) }, nil, "only a delta CRL"},
		"freshest on a shard":           {func(s *buildSpec) { s.Freshest = shardURL(Delta) }, nil, "only the full CRL"},
		"removeFromCRL outside a delta": {func(*buildSpec) {}, []Entry{{Serial: big.NewInt(1), RevokedAt: now, Reason: reasonRemoveFromCRL}}, "removeFromCRL"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			s := ok
			tc.edit(&s)
			if _, err := build(f.ca, f.caKey, s, shards, tc.entries); !errors.Is(err, errSpec) {
				t.Fatalf("got %v, want errSpec (%s)", err, tc.want)
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
			der, err := build(f.ca, f.caKey, buildSpec{Shard: s, URL: shardURL(s), Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)}, nShards, byShard[s])
			if err != nil {
				b.Fatal(err)
			}
			size += len(der)
		}
		der, err := build(f.ca, f.caKey, buildSpec{Shard: Full, Number: big.NewInt(1), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)}, nShards, all)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(size+len(der))/1e6, "MB")
	}
}

// TestDeltaCRLWithOpenSSL: a full CRL that names its deltas (freshest CRL) and
// a delta of it (delta CRL indicator, critical, with the base's number) are
// read by openssl crl, and openssl verify -crl_check -use_deltas combines
// them: a serial revoked since the base is revoked, a hold the delta removes
// (removeFromCRL) is good again, what the base lists stays revoked. Without
// -use_deltas the newer revocation is not seen, which is what the delta is
// for.
func TestDeltaCRLWithOpenSSL(t *testing.T) {
	needOpenSSL(t)
	f := newFixture(t)
	now := time.Now().UTC().Truncate(time.Second)
	old, held, fresh, good := big.NewInt(0x2001), big.NewInt(0x2002), big.NewInt(0x2003), big.NewInt(0x2004)
	base := []Entry{{Serial: old, RevokedAt: now.Add(-time.Hour), Reason: 1}, {Serial: held, RevokedAt: now.Add(-time.Hour), Reason: 6}}
	fullDER, err := build(f.ca, f.caKey, buildSpec{Shard: Full, Number: big.NewInt(10), ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(24 * time.Hour), Freshest: shardURL(Delta)}, shards, base)
	if err != nil {
		t.Fatal(err)
	}
	b := newBase(10, base)
	// Since the base: fresh is revoked, held is released.
	changes := b.delta([]Entry{base[0], {Serial: fresh, RevokedAt: now, Reason: 1}})
	if len(changes) != 2 || changes[0].Serial.Cmp(held) != 0 || changes[0].Reason != reasonRemoveFromCRL || changes[1].Serial.Cmp(fresh) != 0 {
		t.Fatalf("delta entries: %+v", changes)
	}
	deltaDER, err := build(f.ca, f.caKey, buildSpec{Shard: Delta, Number: big.NewInt(11), Base: big.NewInt(10), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)}, shards, changes)
	if err != nil {
		t.Fatal(err)
	}
	caPEM := f.write(t, "ca.pem", "CERTIFICATE", f.ca.Raw)
	fullPEM := f.write(t, "full.crl", "X509 CRL", fullDER)
	deltaPEM := f.write(t, "delta.crl", "X509 CRL", deltaDER)
	for _, c := range []struct {
		path string
		want []string
	}{
		{fullPEM, []string{"verify OK", "Freshest CRL", shardURL(Delta)}},
		{deltaPEM, []string{"verify OK", "Delta CRL Indicator: critical", "10", "Remove From CRL"}},
	} {
		out, err := exec.Command("openssl", "crl", "-in", c.path, "-CAfile", caPEM, "-verify", "-noout", "-text").CombinedOutput()
		if err != nil {
			t.Fatalf("openssl crl %s: %v\n%s", c.path, err, out)
		}
		for _, w := range c.want {
			if !strings.Contains(string(out), w) {
				t.Errorf("openssl crl %s lacks %q:\n%s", filepath.Base(c.path), w, out)
			}
		}
	}
	// The certificates name their shard's CRL; the full CRL has no IDP, so it
	// covers them all. OpenSSL takes a delta for a base only with
	// -extended_crl (without it, it may take the newer delta as a complete
	// CRL), so a relying party that uses deltas passes both flags.
	both := f.write(t, "both.pem", "X509 CRL", fullDER)
	fp, _ := os.ReadFile(both)
	dp, _ := os.ReadFile(deltaPEM)
	if err := os.WriteFile(both, append(fp, dp...), 0o644); err != nil {
		t.Fatal(err)
	}
	deltas := []string{"-extended_crl", "-use_deltas"}
	for _, c := range []struct {
		name   string
		serial *big.Int
		crls   string
		flags  []string
		want   string
	}{
		{"revoked in the base", old, both, deltas, "certificate revoked"},
		{"revoked since the base", fresh, both, deltas, "certificate revoked"},
		{"released since the base", held, both, deltas, ": OK"},
		{"never revoked", good, both, deltas, ": OK"},
		{"revoked since the base, full CRL alone", fresh, fullPEM, nil, ": OK"},
		{"released since the base, full CRL alone", held, fullPEM, nil, "certificate revoked"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cert := f.write(t, "leaf.pem", "CERTIFICATE", f.leaf(t, c.serial).Raw)
			args := append([]string{"verify", "-crl_check", "-CAfile", caPEM, "-CRLfile", c.crls}, c.flags...)
			out, _ := exec.Command("openssl", append(args, cert)...).CombinedOutput()
			if !strings.Contains(string(out), c.want) {
				t.Errorf("openssl %s: want %q, got:\n%s", strings.Join(args, " "), c.want, out)
			}
		})
	}
}

// BenchmarkSizesMillion prints the sizes of the CRLs of a CA with 1,000,000
// revoked certificates, serials as the authority makes them (16 bytes), a
// reason on each: the full CRL, one shard of the default 16, and deltas of
// 1,000 and 10,000 changes since the full CRL (an hour of revocations at
// 0.3 and 3 a second), with the time to build each delta's entries against
// the base and sign it.
func BenchmarkSizesMillion(b *testing.B) {
	f := newFixture(b)
	const n, nShards = 1_000_000, 16
	now := time.Now().UTC().Truncate(time.Second)
	all := make([]Entry, 0, n)
	var shard0 []Entry
	for i := range n {
		buf := make([]byte, 16)
		_, _ = rand.Read(buf)
		buf[0] = 0x0d // the seconds-since-2020 prefix of 2026
		e := Entry{Serial: new(big.Int).SetBytes(buf), RevokedAt: now.Add(-time.Duration(i) * time.Second), Reason: []crlreason.Reason{1, 3, 4, 5}[i%4]}
		all = append(all, e)
		if Shard(e.Serial, nShards) == 0 {
			shard0 = append(shard0, e)
		}
	}
	spec := func(shard int) buildSpec {
		s := buildSpec{Shard: shard, Number: big.NewInt(2), ThisUpdate: now, NextUpdate: now.Add(24 * time.Hour)}
		switch shard {
		case Full:
			s.Freshest = shardURL(Delta)
		case Delta:
			s.Base = big.NewInt(1)
		default:
			s.URL = shardURL(shard)
		}
		return s
	}
	base := newBase(1, all[1000:])
	for b.Loop() {
		full, err := build(f.ca, f.caKey, spec(Full), nShards, all)
		if err != nil {
			b.Fatal(err)
		}
		sh, err := build(f.ca, f.caKey, spec(0), nShards, shard0)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(len(full))/1e6, "full_MB")
		b.ReportMetric(float64(len(sh))/1e3, "shard_KB")
		for _, changes := range []int{1_000, 10_000} {
			base := base
			if changes != 1000 {
				base = newBase(1, all[changes:])
			}
			start := time.Now()
			d, err := build(f.ca, f.caKey, spec(Delta), nShards, base.delta(all))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(len(d))/1e3, fmt.Sprintf("delta%dk_KB", changes/1000))
			b.ReportMetric(time.Since(start).Seconds()*1e3, fmt.Sprintf("delta%dk_ms", changes/1000))
		}
	}
}
