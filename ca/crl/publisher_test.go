package crl

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/hsm"
)

// revokedSource is CA state as a map; the CA key is a real SoftHSM key.
type revokedSource struct {
	ca  CA
	key crypto.Signer

	mu      sync.Mutex
	revoked []Entry
}

func (s *revokedSource) CAs(context.Context) ([]CA, error) { return []CA{s.ca}, nil }
func (s *revokedSource) Signer(context.Context, string) (crypto.Signer, error) {
	return s.key, nil
}
func (s *revokedSource) Revoked(_ context.Context, _ string, fn func(Entry) error) error {
	s.mu.Lock()
	all := append([]Entry(nil), s.revoked...)
	s.mu.Unlock()
	for _, e := range all {
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}
func (s *revokedSource) revoke(e Entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.revoked = append(s.revoked, e)
}

// hsmCA makes a CA whose key is in the node's SoftHSM token.
func hsmCA(t *testing.T, n *clustertest.Node, shards int) *revokedSource {
	t.Helper()
	key, err := n.Token.HSM.GenerateKey(context.Background(), hsm.KeySpec{Type: hsm.ECP256, Label: "ca-key"})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{Country: []string{"JP"}, CommonName: "inkan CRL publisher test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &revokedSource{key: key, ca: CA{ID: "ca1", Cert: cert, Shards: shards, URL: shardURL}}
}

func latest(t *testing.T, n *clustertest.Node, shard int) (Meta, []byte) {
	t.Helper()
	var m Meta
	var der []byte
	err := n.View(func(tx *bbolt.Tx) error {
		var ok bool
		var err error
		if m, ok, err = Read(tx).Latest("ca1", shard); err != nil || !ok {
			return err
		}
		der, err = Read(tx).DER(m)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m, der
}

func listed(t *testing.T, der []byte, serial *big.Int) bool {
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range rl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(serial) == 0 {
			return true
		}
	}
	return false
}

func TestPublisherKeepsCRLsCurrent(t *testing.T) {
	n := clustertest.Single(t, cluster.Config{Handlers: Handlers()})
	src := hsmCA(t, n, shards)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := NewPublisher(n.Cluster, src, PublisherConfig{Tick: 20 * time.Millisecond, Delay: 100 * time.Millisecond})
	changes := make(chan Change, 4)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, changes) }()

	// A new leader publishes every shard and the full CRL.
	deadline := time.Now().Add(10 * time.Second)
	for shard := Full; shard < shards; shard++ {
		for {
			if m, _ := latest(t, n, shard); m.Number == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("shard %d never published", shard)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	// A revocation is in its shard's CRL within 5 s, under a higher number.
	serial := big.NewInt(0x4242)
	shard := Shard(serial, shards)
	src.revoke(Entry{Serial: serial, RevokedAt: time.Now().UTC().Truncate(time.Second), Reason: 1})
	start := time.Now()
	changes <- Change{CA: "ca1", Serials: []*big.Int{serial}}
	var der []byte
	for {
		var m Meta
		m, der = latest(t, n, shard)
		if m.Number >= 2 && listed(t, der, serial) {
			break
		}
		if time.Since(start) > 5*time.Second {
			t.Fatalf("revoked serial not in shard %d's CRL after 5 s", shard)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("revocation in its shard's CRL %v after the change", time.Since(start))

	// openssl accepts it, and the first CRL of the shard is still there by number.
	needOpenSSL(t)
	dir := t.TempDir()
	f := &fixture{ca: src.ca.Cert, dir: dir}
	caPEM := f.write(t, "ca.pem", "CERTIFICATE", src.ca.Cert.Raw)
	crlPEM := f.write(t, "shard.crl", "X509 CRL", der)
	if out, err := exec.Command("openssl", "crl", "-in", crlPEM, "-CAfile", caPEM, "-verify", "-noout").CombinedOutput(); err != nil || !strings.Contains(string(out), "verify OK") {
		t.Fatalf("openssl crl -verify: %v %s", err, out)
	}
	err := n.View(func(tx *bbolt.Tx) error {
		m, ok, err := Read(tx).Get("ca1", shard, 1)
		if err != nil || !ok {
			t.Fatalf("CRL number 1 of shard %d is gone: %v", shard, err)
		}
		old, err := Read(tx).DER(m)
		if err != nil {
			return err
		}
		if listed(t, old, serial) {
			t.Error("the old CRL changed")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
}

func TestLargeCRLInParts(t *testing.T) {
	n := clustertest.Single(t, cluster.Config{Handlers: Handlers()})
	src := hsmCA(t, n, 1)
	now := time.Now().UTC().Truncate(time.Second)
	for i := range 20_000 {
		src.revoke(Entry{Serial: new(big.Int).Lsh(big.NewInt(int64(i+1)), 70), RevokedAt: now, Reason: 5})
	}
	p := NewPublisher(n.Cluster, src, PublisherConfig{})
	if err := p.publish(context.Background(), src.ca, Full, 1, now); err != nil {
		t.Fatal(err)
	}
	m, der := latest(t, n, Full)
	if m.Parts < 2 || m.Entries != 20_000 || m.Size != len(der) {
		t.Fatalf("meta %+v for %d bytes: want several parts and 20000 entries", m, len(der))
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(src.ca.Cert); err != nil || len(rl.RevokedCertificateEntries) != 20_000 {
		t.Fatalf("reassembled CRL: %v, %d entries", err, len(rl.RevokedCertificateEntries))
	}
}

func TestPublishRefusals(t *testing.T) {
	n := clustertest.Single(t, cluster.Config{Handlers: Handlers()})
	src := hsmCA(t, n, 1)
	ctx := context.Background()
	now := time.Now()
	p := NewPublisher(n.Cluster, src, PublisherConfig{})
	if err := p.publish(ctx, src.ca, 0, 5, now); err != nil {
		t.Fatal(err)
	}
	submit := func(typ string, body any) error {
		cmd, err := cluster.NewCommand(typ, 1, body)
		if err != nil {
			t.Fatal(err)
		}
		_, err = n.Submit(ctx, cmd)
		return err
	}
	// Numbers only grow, per shard.
	if err := p.publish(ctx, src.ca, 0, 5, now); !errors.Is(err, errNumberNotGreater) || !errors.Is(err, cluster.ErrRefused) {
		t.Fatalf("republishing number 5: %v", err)
	}
	if err := p.publish(ctx, src.ca, 0, 4, now); !errors.Is(err, errNumberNotGreater) {
		t.Fatalf("publishing number 4 after 5: %v", err)
	}
	// A publish whose parts never came, or whose hash does not match them, is refused.
	sum := make([]byte, 32)
	if err := submit(commandPublish, Meta{CA: "ca1", Shard: 0, Number: 9, Parts: 1, SHA256: sum}); !errors.Is(err, errPartsMissing) {
		t.Fatalf("publish without parts: %v", err)
	}
	if err := submit(commandPart, partBody{CA: "ca1", Shard: 0, Number: 9, Part: 0, Data: []byte("not the CRL")}); err != nil {
		t.Fatal(err)
	}
	if err := submit(commandPublish, Meta{CA: "ca1", Shard: 0, Number: 9, Parts: 1, SHA256: sum}); !errors.Is(err, errPartsMissing) {
		t.Fatalf("publish with a wrong hash: %v", err)
	}
	if m, _ := latest(t, n, 0); m.Number != 5 {
		t.Fatalf("a refused publish changed the latest CRL to %d", m.Number)
	}
	// A delta CRL comes at version 2 of the commands (a replica of the release
	// before stops at it rather than refuse it); version 1 cannot name one.
	if err := submit(commandPart, partBody{CA: "ca1", Shard: Delta, Number: 20, Part: 0, Data: []byte("delta")}); !errors.Is(err, cluster.ErrRefused) {
		t.Fatalf("a delta part at version 1: %v, want refused", err)
	}
	// The full CRL and its deltas share one sequence of numbers.
	if err := p.publish(ctx, src.ca, Full, 7, now); err != nil {
		t.Fatal(err)
	}
	if err := p.publish(ctx, src.ca, Delta, 8, now); err != nil {
		t.Fatalf("the delta of full CRL 7: %v", err)
	}
	if err := p.publish(ctx, src.ca, Full, 8, now); !errors.Is(err, errNumberNotGreater) {
		t.Fatalf("a full CRL numbered as its delta: %v, want ErrNumberNotGreater", err)
	}
	if m, _ := latest(t, n, Delta); m.Number != 8 {
		t.Fatalf("the delta: number %d, want 8", m.Number)
	}
}

// TestDeltaFollowsRevocation: the full CRL follows changes at most hourly, and
// its delta follows a revocation within 5 s, as the shards do: openssl verify
// with the full CRL and its delta (-extended_crl -use_deltas) finds the
// certificate revoked while the full CRL alone still says good. A node that
// did not publish the full CRL (a new leader) makes its deltas against the one
// in the state.
func TestDeltaFollowsRevocation(t *testing.T) {
	n := clustertest.Single(t, cluster.Config{Handlers: Handlers()})
	src := hsmCA(t, n, shards)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := NewPublisher(n.Cluster, src, PublisherConfig{Tick: 20 * time.Millisecond, Delay: 100 * time.Millisecond})
	changes := make(chan Change, 4)
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx, changes) }()
	waitCRL := func(what string, limit time.Duration, ok func(full, delta Meta, deltaDER []byte) bool) (Meta, []byte, Meta, []byte) {
		t.Helper()
		deadline := time.Now().Add(limit)
		for {
			fm, fd := latest(t, n, Full)
			dm, dd := latest(t, n, Delta)
			if fm.Number > 0 && dm.Number > 0 && ok(fm, dm, dd) {
				return fm, fd, dm, dd
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within %s (full %d, delta %d)", what, limit, fm.Number, dm.Number)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	full0, _, _, _ := waitCRL("a full CRL and its delta", 10*time.Second, func(f, d Meta, _ []byte) bool { return d.Number > f.Number })

	serial := big.NewInt(0x4343)
	src.revoke(Entry{Serial: serial, RevokedAt: time.Now().UTC(), Reason: 1})
	start := time.Now()
	changes <- Change{CA: "ca1", Serials: []*big.Int{serial}}
	full, fullDER, delta, deltaDER := waitCRL("the revocation in the delta CRL", 5*time.Second, func(_, _ Meta, d []byte) bool { return listed(t, d, serial) })
	t.Logf("revocation in the delta CRL %v after the change", time.Since(start))
	if full.Number != full0.Number || listed(t, fullDER, serial) {
		t.Fatalf("the full CRL changed within FullEvery: number %d (was %d)", full.Number, full0.Number)
	}
	rl, err := x509.ParseRevocationList(deltaDER)
	if err != nil {
		t.Fatal(err)
	}
	if err := rl.CheckSignatureFrom(src.ca.Cert); err != nil || rl.Number.Uint64() != delta.Number || delta.Number <= full.Number {
		t.Fatalf("delta CRL %d (signature %v) against full CRL %d", rl.Number, err, full.Number)
	}

	needOpenSSL(t)
	dir := t.TempDir()
	f := &fixture{ca: src.ca.Cert, dir: dir}
	caPEM := f.write(t, "ca.pem", "CERTIFICATE", src.ca.Cert.Raw)
	fullPEM := f.write(t, "full.crl", "X509 CRL", fullDER)
	both := f.write(t, "both.crl", "X509 CRL", fullDER)
	fp, _ := os.ReadFile(both)
	dp := pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: deltaDER})
	if err := os.WriteFile(both, append(fp, dp...), 0o644); err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "leaf"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, CRLDistributionPoints: []string{shardURL(Shard(serial, shards))},
	}, src.ca.Cert, leafKey.Public(), src.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf := f.write(t, "leaf.pem", "CERTIFICATE", leafDER)
	for _, c := range []struct {
		crls  string
		flags []string
		want  string
	}{{both, []string{"-extended_crl", "-use_deltas"}, "certificate revoked"}, {fullPEM, nil, ": OK"}} {
		args := append([]string{"verify", "-crl_check", "-CAfile", caPEM, "-CRLfile", c.crls}, c.flags...)
		out, _ := exec.Command("openssl", append(args, leaf)...).CombinedOutput()
		if !strings.Contains(string(out), c.want) {
			t.Errorf("openssl %s: want %q, got:\n%s", strings.Join(args, " "), c.want, out)
		}
	}
	cancel()
	<-done

	// Another publisher (a new leader) reads the base from the state.
	b, err := NewPublisher(n.Cluster, src, PublisherConfig{}).base("ca1")
	if err != nil || b == nil || b.number != full.Number || len(b.entries) != 0 {
		t.Fatalf("base from the state: %v %+v, want full CRL %d with no entries", err, b, full.Number)
	}
	if d := b.delta([]Entry{{Serial: serial, RevokedAt: time.Now(), Reason: 1}}); len(d) != 1 || d[0].Serial.Cmp(serial) != 0 {
		t.Fatalf("delta against the state's base: %+v", d)
	}
}
