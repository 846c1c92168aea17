package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/audit"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/operator"
	"github.com/inkan-pki/inkan/tsa"
)

// testTSA is the tsa section of the test nodes.
func testTSA() *tsaConfig {
	return &tsaConfig{Policy: "1.3.6.1.4.1.99999.3161.1", Accuracy: duration(time.Second)}
}

func TestParseConfigTSA(t *testing.T) {
	cfg, err := parseConfig([]byte(goodConfig + "tsa:\n  policy: 1.3.6.1.4.1.99999.3161.1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TSA == nil || time.Duration(cfg.TSA.Accuracy) != time.Second || cfg.TSA.PolicyOID().String() != "1.3.6.1.4.1.99999.3161.1" {
		t.Fatalf("tsa section: %+v", cfg.TSA)
	}
	if cfg, err := parseConfig([]byte(goodConfig)); err != nil || cfg.TSA != nil {
		t.Fatalf("no tsa section: %+v %v", cfg.TSA, err)
	}
}

// tsaKeysOn lists the TSA keys (by label) a token holds.
func tsaKeysOn(t *testing.T, ctx context.Context, tok *softhsm.Token) []string {
	t.Helper()
	keys, err := tok.HSM.Keys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, k := range keys {
		if strings.HasPrefix(k.Label, "tsa-") && k.Class == "private" {
			out = append(out, k.Label)
		}
	}
	return out
}

// TestTSAKeyUnderDualControl is the insider's test for the TSA key: one admin
// asks for it and gets a request, not a key — in no HSM, not in the state —
// and neither their own approval nor a single other admin's makes it; the
// second approval does, on every voter (and, wrapped, for the approved
// voter's transport key only, on the audit record). The certificate is
// issued in its ceremony, and then both voters answer `openssl ts -query |
// curl` over the API listener with tokens `openssl ts -verify` accepts, each
// in a tsa.tokens leaf of the audit log the auditor exports and verifies.
func TestTSAKeyUnderDualControl(t *testing.T) {
	if testing.Short() {
		t.Skip("several nodes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	s := newStaff(t, ctx, func(c *Config) { c.TSA = testTSA() })
	mallory, b, c := s.admins[0], s.admins[1], s.admins[2]

	// A second voter, approved and joined, with its own HSM.
	good := s.newJoiner(t, ctx, "good", "voter")
	good.cfg.TSA = testTSA()
	token, _, err := mallory.c.GrantJoin(ctx, "voter", good.keys, time.Hour)
	gq := s.proposed(t, err)
	s.approve(t, ctx, gq, b, c)
	s.waitState(t, ctx, gq.ID, "executed")
	goodNode, err := good.start(t, ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	// The CA, in its own ceremony.
	_, err = mallory.c.InitCA(ctx, admin.CAInitRequest{Subject: admin.CASubject{CommonName: "inkan TSA test CA", Country: "JP"}, SelfSign: true})
	cq := s.proposed(t, err)
	s.approve(t, ctx, cq, b, c)
	s.waitState(t, ctx, cq.ID, "executed")

	noKey := func(when string) {
		t.Helper()
		st, err := b.c.TSA(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Keys) != 0 {
			t.Fatalf("%s: the state has TSA keys %+v", when, st.Keys)
		}
		for _, tok := range []*softhsm.Token{s.tok, good.tok} {
			if k := tsaKeysOn(t, ctx, tok); len(k) != 0 {
				t.Fatalf("%s: an HSM holds %v", when, k)
			}
		}
	}
	_, err = mallory.c.InitTSA(ctx, admin.TSAInitRequest{Key: "ec-p256"})
	q := s.proposed(t, err)
	if q.Action != "ca.key.generate" || q.Approvals != 2 {
		t.Fatalf("TSA key proposed as %+v", q)
	}
	noKey("proposed")
	wantProblem(t, "self-approval", s.decide(ctx, q, mallory, operator.Approve), "self-approval")
	wantProblem(t, "an officer", s.decide(ctx, q, s.officers[0], operator.Approve), "approver-role")
	s.approve(t, ctx, q, b)
	time.Sleep(1500 * time.Millisecond) // a leader would have run it by now
	if a, err := c.c.Approval(ctx, q.ID); err != nil || a.State != "pending" {
		t.Fatalf("after one approval: %+v %v", a, err)
	}
	noKey("one approval")
	// The certificate's ceremony finds no key to certify: approved, it fails.
	_, err = mallory.c.CertifyTSA(ctx, admin.TSACertRequest{})
	early := s.proposed(t, err)
	s.approve(t, ctx, early, b, c)
	s.waitState(t, ctx, early.ID, "failed")
	noKey("a certificate's ceremony before the key")
	s.approve(t, ctx, q, c)
	s.waitState(t, ctx, q.ID, "executed")
	st, err := b.c.TSA(ctx)
	if err != nil || len(st.Keys) != 1 || st.Keys[0].Request != q.ID {
		t.Fatalf("after two approvals: %+v %v", st, err)
	}
	keyID := st.Keys[0].ID
	for _, tok := range []*softhsm.Token{s.tok, good.tok} {
		if k := tsaKeysOn(t, ctx, tok); len(k) != 1 || k[0] != keyID {
			t.Fatalf("a voter's HSM holds %v, want [%s]", k, keyID)
		}
	}

	// The certificate is a ceremony of its own (ca.ceremony): proposed, and
	// issued once two other admins approve.
	_, err = mallory.c.CertifyTSA(ctx, admin.TSACertRequest{Lifetime: "8760h"})
	tq := s.proposed(t, err)
	if tq.Action != "ca.ceremony" {
		t.Fatalf("TSA certificate proposed as %+v", tq)
	}
	s.approve(t, ctx, tq, b, c)
	s.waitState(t, ctx, tq.ID, "executed")
	st, err = b.c.TSA(ctx)
	if err != nil || len(st.Certificates) != 1 {
		t.Fatalf("TSA after its certificate's ceremony: %+v %v", st, err)
	}
	cert := st.Certificates[0]
	if cert.Key != keyID || !cert.Current {
		t.Fatalf("certificate %+v", cert)
	}
	is, err := b.c.Issuers(ctx)
	if err != nil || len(is) != 1 {
		t.Fatalf("issuers %+v %v", is, err)
	}
	dir := t.TempDir()
	for name, pemText := range map[string]string{"ca.pem": is[0].Certificate, "tsa.pem": cert.Certificate} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(pemText), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caPEM, err := os.ReadFile(filepath.Join(s.n.cfg.DataDir, clusterCAFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "cluster-ca.pem"), caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.txt"), []byte("a mortgage contract\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Both voters issue tokens over HTTPS; openssl verifies them.
	var hashes [][32]byte
	for _, n := range []*Node{s.n, goodNode} {
		url := "https://" + n.Addrs().API + tsa.Path
		reply := filepath.Join(dir, n.Cluster().ID()+".tsr")
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			runIn(t, dir, "sh", "-c", `openssl ts -query -data data.txt -sha256 -cert | curl -sS --cacert cluster-ca.pem --data-binary @- -H 'Content-Type: application/timestamp-query' -o "$2" "$1"`, "sh", url, reply)
			text := runIn(t, dir, "openssl", "ts", "-reply", "-in", reply, "-text")
			if strings.Contains(text, "Status: Granted.") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %s: %s", n.Cluster().ID(), text)
			}
		}
		if out := runIn(t, dir, "openssl", "ts", "-verify", "-data", "data.txt", "-in", reply, "-CAfile", "ca.pem", "-untrusted", "tsa.pem"); !strings.Contains(out, "Verification: OK") {
			t.Fatalf("openssl ts -verify: %s", out)
		}
		tokenFile := reply + ".token"
		runIn(t, dir, "openssl", "ts", "-reply", "-in", reply, "-token_out", "-out", tokenFile)
		der, err := os.ReadFile(tokenFile)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, sha256.Sum256(der))
	}
	// GET /tsa is not the protocol.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12}}}
	resp, err := hc.Get("https://" + goodNode.Addrs().API + tsa.Path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Content-Type") != "application/timestamp-reply" {
		t.Fatalf("GET /tsa: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}

	// The auditor: the key went to the approved voter's transport key and
	// nowhere else, and each token is in a tsa.tokens leaf of a verified log.
	var tsaTransfers int
	for _, k := range auditKeyTransfers(t, ctx, s) {
		if k.Key != keyID {
			continue
		}
		tsaTransfers++
		if k.Node != "good" || k.TransportKey != good.keys.TransportKey.String() {
			t.Fatalf("the TSA key went elsewhere: %+v", k)
		}
	}
	if tsaTransfers != 1 {
		t.Fatalf("%d transfers of the TSA key on record", tsaTransfers)
	}
	mc, err := x509.ParseCertificate(mallory.cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	malloryActor := audit.OperatorActor(mc)
	leaves, exportDir := auditLeaves(t, ctx, s)
	found := map[[32]byte]bool{}
	var created, installed bool
	for _, l := range leaves {
		switch l.Type {
		case "tsa.key.created":
			created = created || l.Data["key"] == keyID && l.Data["request"] == q.ID && l.Actor == malloryActor
		case "tsa.cert.installed":
			installed = installed || l.Data["key"] == keyID && l.Serial == strings.TrimLeft(cert.Serial, "0")
		case "tsa.tokens":
			list, _ := l.Data["tokens"].([]any)
			for _, h := range list {
				if b, ok := h.([]byte); ok && len(b) == 32 {
					found[[32]byte(b)] = true
				}
			}
		}
	}
	if !created || !installed {
		t.Fatalf("audit: key created %v, certificate installed %v", created, installed)
	}
	for _, h := range hashes {
		if !found[h] {
			t.Fatalf("token %x is in no tsa.tokens leaf", h)
		}
	}
	// What `inkan audit prove --token` does with a client's reply: the leaf,
	// and its inclusion under a signed checkpoint.
	for _, n := range []*Node{s.n, goodNode} {
		var out bytes.Buffer
		reply := filepath.Join(dir, n.Cluster().ID()+".tsr")
		if err := audit.ProveTokenDir(&out, "", exportDir, reply); err != nil || !strings.Contains(out.String(), "inclusion proof verified") {
			t.Fatalf("prove the token of %s: %v\n%s", n.Cluster().ID(), err, out.String())
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "other.tsr"), []byte{0x30, 0x03, 0x06, 0x01, 0x00}, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := audit.ProveTokenDir(io.Discard, "", exportDir, filepath.Join(dir, "other.tsr")); err == nil {
		t.Fatal("a token never issued was proven")
	}
	st, err = b.c.TSA(ctx)
	if err != nil || st.Tokens[s.n.Cluster().ID()] < 1 || st.Tokens["good"] < 1 {
		t.Fatalf("token counts %+v %v", st.Tokens, err)
	}
}

func runIn(t *testing.T, dir, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out)
}

// auditLeaf is a leaf as an auditor reads it from an export.
type auditLeaf struct {
	audit.Leaf
	Data map[string]any
}

// auditLeaves exports the audit log as the auditor, verifies it, and returns
// every leaf with its data decoded, and the export's directory.
func auditLeaves(t *testing.T, ctx context.Context, s *staff) ([]auditLeaf, string) {
	t.Helper()
	auditKeyTransfers(t, ctx, s) // waits for a checkpoint over everything so far, and verifies
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.roots, MinVersion: tls.VersionTLS12,
		Certificates: []tls.Certificate{*s.auditor.cert}}}}
	dir := filepath.Join(t.TempDir(), "audit")
	cl, err := audit.NewClient(ctx, "https://"+s.n.Addrs().API, hc, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audit.Export(ctx, dir, cl, 0); err != nil {
		t.Fatal(err)
	}
	if r, err := audit.Verify(os.DirFS(dir), nil); err != nil || !r.OK() {
		t.Fatalf("verify: %+v %v", r, err)
	}
	f, err := os.Open(filepath.Join(dir, "leaves.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []auditLeaf
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 4<<20)
	for sc.Scan() {
		fields := bytes.Fields(sc.Bytes())
		if len(fields) != 3 {
			t.Fatalf("leaves.txt: %q", sc.Text())
		}
		raw, err := base64.StdEncoding.DecodeString(string(fields[2]))
		if err != nil {
			t.Fatal(err)
		}
		l, err := audit.ParseLeaf(raw)
		if err != nil {
			t.Fatal(err)
		}
		al := auditLeaf{Leaf: l}
		if len(l.Data) > 0 {
			if err := cbor.Unmarshal(l.Data, &al.Data); err != nil {
				t.Fatalf("leaf %d data: %v", l.Index, err)
			}
		}
		out = append(out, al)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out, dir
}
