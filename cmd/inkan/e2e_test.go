package main

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// person is a simulated card holder: the basic-4 information that must never
// reach a log or the audit export.
type person struct{ name, birth, address string }

var holders = []person{
	{"試験\u3000一郎", "1980-01-02", "東京都千代田区霞が関一丁目１番１号"},
	{"見本\u3000花子", "1975-12-31", "大阪府大阪市北区梅田三丁目３番"},
	{"検証\u3000次郎", "2001-07-07", "北海道札幌市中央区北一条西二丁目"},
}

// cardLab is the J-LIS stand-in and the holders' cards: SoftHSM tokens of
// their own, reached through PKCS#11 as a card reader would be.
type cardLab struct {
	t               *testing.T
	dir, jlis, pin  string
	module          string
	env             []string
	labels          []string
	anchor, crlFile string
}

func newCardLab(t *testing.T) *cardLab {
	t.Helper()
	module, err := softhsm.Module()
	if err != nil {
		t.Skip(err)
	}
	dir := filepath.Join(t.TempDir(), "cards")
	if err := os.MkdirAll(filepath.Join(dir, "tokens"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	write(t, conf, fmt.Sprintf("directories.tokendir = %s/tokens\nobjectstore.backend = file\nlog.level = ERROR\n", dir))
	l := &cardLab{t: t, dir: dir, jlis: filepath.Join(dir, "jlis"), pin: filepath.Join(dir, "card.pin"), module: module,
		env: append(os.Environ(), "SOFTHSM2_CONF="+conf)}
	write(t, l.pin, "CARDPIN1234") // a card's signature PIN: 6-16 of A-Z, 0-9
	write(t, filepath.Join(dir, "so.pin"), "card-so-1234")
	l.run("jpki-sim", "--dir", l.jlis, "init")
	l.anchor, l.crlFile = filepath.Join(l.jlis, "root.pem"), filepath.Join(l.jlis, "crl.der")
	for i, h := range holders {
		label := fmt.Sprintf("card%d", i+1)
		l.run("hsm", "init-token", "--module", module, "--label", label, "--so-pin-file", filepath.Join(dir, "so.pin"), "--pin-file", l.pin)
		l.run("jpki-sim", "--dir", l.jlis, "issue-card", "--module", module, "--token", label, "--pin-file", l.pin,
			"--name", h.name, "--birth", h.birth, "--address", h.address)
		l.labels = append(l.labels, label)
	}
	return l
}

func (l *cardLab) run(args ...string) string {
	l.t.Helper()
	out, err := l.runErr(args...)
	if err != nil {
		l.t.Fatalf("inkan %s: %v", strings.Join(args, " "), err)
	}
	return out
}

func (l *cardLab) runErr(args ...string) (string, error) {
	cmd := exec.Command(inkanBinary(l.t), args...)
	cmd.Env = l.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, stderr.String())
	}
	return stdout.String(), nil
}

// jpkiSection is the node configuration that trusts the stand-in J-LIS and
// reads its CRL from the file jpki-sim publishes.
func (l *cardLab) jpkiSection() string {
	return fmt.Sprintf("jpki:\n  anchors: [%s]\n  policies: [1.2.392.200149.8.5.1.0.20]\n  revocation: {kind: crl, file: %s}\n", l.anchor, l.crlFile)
}

// enrolled is a derived certificate as a subscriber saved it.
type enrolled struct {
	serial   string // hex, as openssl prints it
	leaf, ca string // PEM files: the certificate, the CA certificate
	key      string // the subscriber's key file
	cert     *x509.Certificate
}

// enroll runs `inkan enroll` with card i against p's API.
func (l *cardLab) enroll(p *proc, i int, name string) (*enrolled, error) {
	out := filepath.Join(l.dir, name+".pem")
	printed, err := l.runErr("enroll", "--url", "https://"+p.apiAddr, "--ca-file", filepath.Join(p.dataDir, "cluster-ca.pem"),
		"--card", "pkcs11:token="+l.labels[i], "--card-module", l.module, "--card-pin-file", l.pin,
		"--key", filepath.Join(l.dir, name+".key"), "--out", out, "--timeout", "30s")
	if err != nil {
		return nil, err
	}
	chain, err := os.ReadFile(out)
	if err != nil {
		return nil, err
	}
	var blocks []*pem.Block
	for rest := chain; ; {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			break
		}
		blocks = append(blocks, b)
	}
	if len(blocks) < 2 {
		return nil, fmt.Errorf("%s holds %d certificates, want the certificate and its CA", out, len(blocks))
	}
	e := &enrolled{leaf: filepath.Join(l.dir, name+".leaf.pem"), ca: filepath.Join(l.dir, name+".ca.pem"), key: filepath.Join(l.dir, name+".key")}
	write(l.t, e.leaf, string(pem.EncodeToMemory(blocks[0])))
	write(l.t, e.ca, string(pem.EncodeToMemory(blocks[len(blocks)-1])))
	if e.cert, err = x509.ParseCertificate(blocks[0].Bytes); err != nil {
		return nil, err
	}
	// The serial as enroll printed it: the one spelling, which cert show, revoke,
	// hold, audit prove and enroll --rebind take, as later steps do with it. It
	// is what openssl prints, in lower case (the README feeds openssl's to
	// cert revoke).
	m := enrolledLine.FindStringSubmatch(printed)
	if m == nil {
		return nil, fmt.Errorf("enroll printed no certificate line:\n%s", printed)
	}
	e.serial = m[1]
	if want := hex.EncodeToString(e.cert.SerialNumber.Bytes()); e.serial != want {
		return nil, fmt.Errorf("enroll printed serial %s, the certificate's is %s", e.serial, want)
	}
	if o, err := exec.Command("openssl", "x509", "-in", e.leaf, "-noout", "-serial").Output(); err != nil ||
		strings.TrimSpace(string(o)) != "serial="+strings.ToUpper(e.serial) {
		return nil, fmt.Errorf("openssl x509 -serial: %q, %v; enroll printed %s", o, err, e.serial)
	}
	return e, nil
}

// enrolledLine is what inkan enroll prints on success.
var enrolledLine = regexp.MustCompile(`(?m)^certificate ([0-9a-f]+) \(`)

// useTestCards applies each shipped profile once more, one version up,
// accepting the JPKI test cards' policy too (the stand-in's cards carry it),
// through `inkan admin policy apply` as an operator of a lab would.
func useTestCards(t *testing.T, p *proc) {
	t.Helper()
	version := regexp.MustCompile(`(?m)^version: (\d+)$`)
	for _, name := range []string{"authentication", "signing"} {
		var deadline = time.Now().Add(20 * time.Second)
		var data string
		for {
			out, err := p.runErr("admin", "--socket", filepath.Join(p.dataDir, "admin.sock"), "policy", "show", name)
			if err == nil {
				data = out
				break
			}
			if time.Now().After(deadline) { // the leader seeds them at its start
				t.Fatalf("policy show %s: %v", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		m := version.FindStringSubmatch(data)
		if m == nil {
			t.Fatalf("profile %s has no version line:\n%s", name, data)
		}
		var v int
		fmt.Sscan(m[1], &v)
		data = version.ReplaceAllString(data, fmt.Sprintf("version: %d", v+1))
		data = strings.Replace(data, `jpkiPolicies: ["1.2.392.200149.8.5.1.1.20"]`, `jpkiPolicies: ["1.2.392.200149.8.5.1.1.20", "1.2.392.200149.8.5.1.0.20"]`, 1)
		file := filepath.Join(p.home, name+"-test-cards.yaml")
		write(t, file, data)
		p.admin(t, "policy", "apply", "--yes", file)
	}
}

// addConfig appends top-level sections to p's configuration and points its
// certificates' URLs at ocspPublic, the same on every node.
func (p *proc) addConfig(t *testing.T, sections, ocspPublic string) {
	t.Helper()
	cfg, err := os.ReadFile(p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(cfg), "ocsp:\n  listen: "+p.ocspAddr+"\n", "ocsp:\n  listen: "+p.ocspAddr+"\n  public_url: "+ocspPublic+"\n", 1)
	write(t, p.cfgPath, strings.TrimRight(s, "\n")+"\n"+sections)
}

var ocspStatusLine = regexp.MustCompile(`: (good|revoked|unknown)\b`)

// certIDHashes are the CertID hashes openssl ocsp is asked to use (its
// -<digest> option); inkan answers each.
var certIDHashes = []string{"sha1", "sha256", "sha384", "sha512"}

// ocspAsk asks p's OCSP listener about e with `openssl ocsp`: by POST (what
// openssl sends), or by GET with the request openssl made; with a CertID
// under hash (sha1, sha256, sha384, sha512). It checks the responder's chain
// (-CAfile: the delegated responder certificate must chain to the CA) and
// returns the status line.
func ocspAsk(t *testing.T, p *proc, e *enrolled, get bool, hash string) (string, error) {
	t.Helper()
	args := []string{"ocsp", "-issuer", e.ca, "-" + hash}
	args = append(args, "-cert", e.leaf, "-CAfile", e.ca, "-no_nonce")
	if get {
		dir := t.TempDir()
		req, resp := filepath.Join(dir, "req.der"), filepath.Join(dir, "resp.der")
		if out, err := exec.Command("openssl", append(args, "-reqout", req)...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("openssl ocsp -reqout: %v: %s", err, out)
		}
		der, err := os.ReadFile(req)
		if err != nil {
			return "", err
		}
		r, err := http.Get("http://" + p.ocspAddr + "/" + url.PathEscape(base64.StdEncoding.EncodeToString(der)))
		if err != nil {
			return "", err
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if ct := r.Header.Get("Content-Type"); r.StatusCode != 200 || ct != "application/ocsp-response" {
			return "", fmt.Errorf("GET: %s %s", r.Status, ct)
		}
		if err := os.WriteFile(resp, body, 0o600); err != nil {
			return "", err
		}
		args = append(args, "-respin", resp)
	} else {
		args = append(args, "-url", "http://"+p.ocspAddr+"/")
	}
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("openssl ocsp: %v: %s", err, out)
	}
	if !bytes.Contains(out, []byte("Response verify OK")) {
		return "", fmt.Errorf("openssl did not verify the response: %s", out)
	}
	m := ocspStatusLine.FindSubmatch(out)
	if m == nil {
		return "", fmt.Errorf("no status in: %s", out)
	}
	return string(m[1]), nil
}

// waitOCSP polls every node until each answers want for e (SHA-1 CertID by
// POST), and returns how long the slowest took.
func waitOCSP(t *testing.T, nodes []*proc, e *enrolled, want string, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var slowest time.Duration
	for _, p := range nodes {
		for {
			got, err := ocspAsk(t, p, e, false, "sha1")
			if err == nil && got == want {
				break
			}
			if time.Since(start) > limit {
				t.Fatalf("%s: OCSP for %s: %q, %v; want %s within %s", p.name, e.serial, got, err, want, limit)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if d := time.Since(start); d > slowest {
			slowest = d
		}
	}
	return slowest
}

// waitCRL polls every node's copy of e's CRL shard (its distribution point,
// fetched from that node) until it lists e and openssl verifies it.
func waitCRL(t *testing.T, nodes []*proc, e *enrolled, limit time.Duration) time.Duration {
	t.Helper()
	if len(e.cert.CRLDistributionPoints) != 1 {
		t.Fatalf("certificate has CRL distribution points %v", e.cert.CRLDistributionPoints)
	}
	dp, err := url.Parse(e.cert.CRLDistributionPoints[0])
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var slowest time.Duration
	for _, p := range nodes {
		for {
			ok, why := crlLists(t, p, dp.Path, e)
			if ok {
				break
			}
			if time.Since(start) > limit {
				t.Fatalf("%s: CRL %s does not list %s within %s: %s", p.name, dp.Path, e.serial, limit, why)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if d := time.Since(start); d > slowest {
			slowest = d
		}
	}
	return slowest
}

// waitDelta fetches p's full CRL of e's CA and its delta until openssl
// verify, with both and -extended_crl -use_deltas, says e is revoked (the
// full CRL follows changes hourly; its delta within seconds).
func waitDelta(t *testing.T, p *proc, e *enrolled, limit time.Duration) time.Duration {
	t.Helper()
	dp, err := url.Parse(e.cert.CRLDistributionPoints[0])
	if err != nil {
		t.Fatal(err)
	}
	caDir := "http://" + p.ocspAddr + dp.Path[:strings.LastIndexByte(dp.Path, '/')+1]
	start := time.Now()
	dir := t.TempDir()
	crls := filepath.Join(dir, "crls.pem")
	for {
		var pems []byte
		for _, name := range []string{"full.crl", "delta.crl"} {
			r, err := http.Get(caDir + name)
			if err != nil {
				t.Fatal(err)
			}
			der, _ := io.ReadAll(r.Body)
			r.Body.Close()
			if r.StatusCode != 200 {
				t.Fatalf("%s: GET %s%s: %s", p.name, caDir, name, r.Status)
			}
			pems = append(pems, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})...)
		}
		write(t, crls, string(pems))
		out, _ := exec.Command("openssl", "verify", "-crl_check", "-extended_crl", "-use_deltas", "-CAfile", e.ca, "-CRLfile", crls, e.leaf).CombinedOutput()
		if bytes.Contains(out, []byte("certificate revoked")) {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%s: openssl verify with the full CRL and its delta, after %s:\n%s", p.name, limit, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func crlLists(t *testing.T, p *proc, path string, e *enrolled) (bool, string) {
	r, err := http.Get("http://" + p.ocspAddr + path)
	if err != nil {
		return false, err.Error()
	}
	der, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if r.StatusCode != 200 {
		return false, r.Status
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return false, err.Error()
	}
	listed := false
	for _, rc := range crl.RevokedCertificateEntries {
		listed = listed || rc.SerialNumber.Cmp(e.cert.SerialNumber) == 0
	}
	if !listed {
		return false, fmt.Sprintf("CRL number %v does not list it", crl.Number)
	}
	f := filepath.Join(t.TempDir(), "shard.crl")
	if err := os.WriteFile(f, der, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "crl", "-inform", "DER", "-in", f, "-CAfile", e.ca, "-noout").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("verify OK")) {
		t.Fatalf("%s: openssl crl -verify: %v: %s", p.name, err, out)
	}
	return true, ""
}

// TestEndToEnd drives the appliance the way its users do, as processes over
// real sockets, with openssl as the relying party: a 3-voter cluster and a
// nonvoting OCSP edge; three simulated cards enroll (through different nodes),
// their chains verify, and the node that returned each answers good at once;
// every node answers OCSP (GET and POST, SHA-1, SHA-256, SHA-384 and SHA-512
// CertIDs) with a responder chain that verifies; a relying party's nginx lets
// a certificate log in (its pseudonym in a header) until it is revoked; a
// revocation is answered by the node that took it when the command returns,
// and reaches every node's OCSP and CRLs; the leader is killed, enrollment goes
// on and the survivors answer throughout; the killed node restarts and catches
// up; the audit log exports, verifies, proves every certificate, and holds none
// of the holders' personal data.
func TestEndToEnd(t *testing.T) {
	begin := time.Now()
	lab := newCardLab(t)

	n1 := newProc(t, "node1", "  bootstrap: true")
	public := "http://" + n1.ocspAddr + "/"
	n1.addConfig(t, lab.jpkiSection(), public)
	n1.start()
	n1.waitReady()
	var ca admin.CAInit
	if err := json.Unmarshal([]byte(n1.admin(t, "--output", "json", "ca", "init", "--cn", "inkan e2e CA", "--country", "JP", "--self-sign")), &ca); err != nil {
		t.Fatal(err)
	}

	useTestCards(t, n1)

	nodes := []*proc{n1}
	for _, j := range []struct{ name, role string }{{"node2", "voter"}, {"node3", "voter"}, {"edge", "nonvoter"}} {
		p := newProcJoiningAs(t, j.name, n1, j.role)
		p.addConfig(t, lab.jpkiSection(), public)
		p.start()
		p.waitReady()
		nodes = append(nodes, p)
	}
	voters, edge := nodes[:3], nodes[3]
	t.Logf("cluster of 3 voters and an edge ready after %s", time.Since(begin).Round(time.Millisecond))

	// Three cards enroll, each through another voter (followers forward).
	var certs []*enrolled
	for i := range holders {
		e, err := lab.enroll(voters[i], i, fmt.Sprintf("sub%d", i+1))
		if err != nil {
			t.Fatalf("enroll card %d through %s: %v", i+1, voters[i].name, err)
		}
		if got, _ := os.ReadFile(e.ca); strings.TrimSpace(string(got)) != strings.TrimSpace(ca.Certificate) {
			t.Fatalf("the chain ends in\n%s\nnot the CA made by ca init:\n%s", got, ca.Certificate)
		}
		// The node that returned the certificate answers good for it at once.
		if got, err := ocspAsk(t, voters[i], e, false, "sha1"); err != nil || got != "good" {
			t.Fatalf("%s right after it returned %s: %q, %v; want good", voters[i].name, e.serial, got, err)
		}
		if out, err := exec.Command("openssl", "verify", "-x509_strict", "-CAfile", e.ca, e.leaf).CombinedOutput(); err != nil {
			t.Fatalf("openssl verify: %v: %s", err, out)
		}
		certs = append(certs, e)
	}

	// Every node, the edge too, answers good: POST and GET, every CertID hash.
	for _, e := range certs {
		waitOCSP(t, nodes, e, "good", 20*time.Second)
	}
	for _, p := range nodes {
		for _, get := range []bool{false, true} {
			for _, h := range certIDHashes {
				if got, err := ocspAsk(t, p, certs[0], get, h); err != nil || got != "good" {
					t.Fatalf("%s (GET %v, %s CertID): %q, %v", p.name, get, h, got, err)
				}
			}
		}
	}

	// One request about two certificates: each response is pre-signed about
	// one, so the responder says the request is malformed rather than answer
	// about the first alone.
	out, _ := exec.Command("openssl", "ocsp", "-issuer", certs[0].ca, "-cert", certs[0].leaf, "-cert", certs[1].leaf,
		"-CAfile", certs[0].ca, "-no_nonce", "-url", "http://"+nodes[0].ocspAddr+"/").CombinedOutput()
	if !bytes.Contains(out, []byte("malformedrequest")) {
		t.Fatalf("openssl ocsp with two -cert: %s; want malformedrequest", out)
	}

	// A relying party's nginx, asking the edge's responder: the certificate
	// logs in, and its pseudonym reaches the application.
	victim := certs[1]
	rp := startRelyingParty(t, victim.ca, "http://"+edge.ocspAddr+"/")
	code, pseudonym, body := rp.login(t, victim.leaf, victim.key)
	if code != 200 || pseudonym == "" || pseudonym != victim.cert.Subject.CommonName {
		t.Fatalf("login with %s: %d, pseudonym %q (want %q): %s\nnginx:\n%s", victim.serial, code, pseudonym, victim.cert.Subject.CommonName, body, rp.errorLog())
	}
	goRP := startGoRelyingParty(t, victim.ca, "http://"+edge.ocspAddr+"/")
	if code, p, err := goRP.login(t, victim.leaf, victim.key); err != nil || code != 200 || p != pseudonym {
		t.Fatalf("Go relying party: login with %s: %d %q %v", victim.serial, code, p, err)
	}
	// A relying party on GnuTLS: certtool verifies the chain, ocsptool asks
	// the responder the certificate names and verifies its answer, and
	// gnutls-cli logs in through nginx.
	needGnuTLS(t)
	gnutlsVerify(t, victim)
	if got := gnutlsStatus(t, victim, ""); got != "good" {
		t.Fatalf("ocsptool: %s is %q, want good", victim.serial, got)
	}
	if code, p := rp.loginGnuTLS(t, victim.leaf, victim.key); code != 200 || p != pseudonym {
		t.Fatalf("gnutls-cli: login with %s: %d %q\nnginx:\n%s", victim.serial, code, p, rp.errorLog())
	}
	t.Logf("relying parties (nginx with curl and gnutls-cli, Go, GnuTLS's ocsptool): %s logged in as %s", victim.serial, pseudonym)

	// Revoke through a follower's admin socket: that node answers revoked when
	// the command returns; then OCSP everywhere, then the CRLs.
	nodes[1].admin(t, "cert", "revoke", victim.serial, "--reason", "keyCompromise", "--yes")
	if got, err := ocspAsk(t, nodes[1], victim, false, "sha1"); err != nil || got != "revoked" {
		t.Fatalf("%s right after its revoke returned: %q, %v; want revoked", nodes[1].name, got, err)
	}
	ocspLag := waitOCSP(t, nodes, victim, "revoked", 10*time.Second)
	crlLag := waitCRL(t, nodes, victim, 20*time.Second)
	deltaLag := waitDelta(t, edge, victim, 10*time.Second)
	t.Logf("revocation: every node's OCSP said revoked %s after the revoke command returned, every node's CRL listed it %s after, the edge's full CRL and its delta %s after (each including the openssl runs)",
		ocspLag.Round(time.Millisecond), crlLag.Round(time.Millisecond), deltaLag.Round(time.Millisecond))
	for _, p := range nodes {
		out, err := exec.Command("openssl", "ocsp", "-issuer", victim.ca, "-cert", victim.leaf, "-CAfile", victim.ca, "-no_nonce",
			"-url", "http://"+p.ocspAddr+"/").CombinedOutput()
		if err != nil || !bytes.Contains(out, []byte("Reason: keyCompromise")) {
			t.Fatalf("%s: revocation reason: %v: %s", p.name, err, out)
		}
	}
	// The relying party refuses the revoked certificate (its responder, the
	// edge, says revoked: waitOCSP above).
	if code, pseudonym, body := rp.login(t, victim.leaf, victim.key); code == 200 || pseudonym != "" {
		t.Fatalf("login with the revoked %s: %d, pseudonym %q: %s", victim.serial, code, pseudonym, body)
	} else if !strings.Contains(rp.errorLog(), "certificate revoked") {
		t.Fatalf("nginx refused the revoked certificate (%d) for another reason:\n%s", code, rp.errorLog())
	}
	if code, _, err := goRP.login(t, victim.leaf, victim.key); err == nil {
		t.Fatalf("Go relying party: login with the revoked %s: %d", victim.serial, code)
	}
	if gnutlsVerifyWithCRL(t, edge, victim) {
		t.Fatalf("certtool with the edge's CRL trusts the revoked %s", victim.serial)
	}
	if !gnutlsVerifyWithCRL(t, edge, certs[0]) {
		t.Fatalf("certtool with the edge's CRL refuses %s, which is not revoked", certs[0].serial)
	}
	if got := gnutlsStatus(t, victim, "http://"+edge.ocspAddr+"/"); got != "revoked" {
		t.Fatalf("ocsptool: the revoked %s is %q", victim.serial, got)
	}
	if code, p := rp.loginGnuTLS(t, victim.leaf, victim.key); code == 200 || p != "" {
		t.Fatalf("gnutls-cli: login with the revoked %s: %d %q", victim.serial, code, p)
	}
	if err := <-goRP.refusals; !errors.Is(err, errNotGood) {
		t.Fatalf("Go relying party refused the revoked certificate for another reason: %v", err)
	}
	// Another certificate still logs in.
	if code, pseudonym, _ := rp.login(t, certs[0].leaf, certs[0].key); code != 200 || pseudonym != certs[0].cert.Subject.CommonName {
		t.Fatalf("login with %s after another was revoked: %d %q", certs[0].serial, code, pseudonym)
	}
	if code, p, err := goRP.login(t, certs[0].leaf, certs[0].key); err != nil || code != 200 || p != certs[0].cert.Subject.CommonName {
		t.Fatalf("Go relying party: login with %s after another was revoked: %d %q %v", certs[0].serial, code, p, err)
	}

	// Kill the leader. Enrollment resumes through a survivor; every survivor
	// answers OCSP from its cache throughout.
	st := n1.status(t)
	var leader *proc
	var survivors []*proc
	for _, p := range nodes {
		if p.name == st.LeaderID {
			leader = p
		} else {
			survivors = append(survivors, p)
		}
	}
	if leader == nil {
		t.Fatalf("no leader among the nodes: %q", st.LeaderID)
	}
	leader.kill()
	for _, p := range survivors {
		for _, e := range certs {
			want := "good"
			if e == victim {
				want = "revoked"
			}
			if got, err := ocspAsk(t, p, e, false, "sha256"); err != nil || got != want {
				t.Fatalf("%s right after the leader died: %q, %v; want %s", p.name, got, err, want)
			}
		}
	}
	var via *proc
	for _, p := range survivors {
		if p != edge {
			via = p
			break
		}
	}
	killed := time.Now()
	var again *enrolled
	for {
		e, err := lab.enroll(via, 0, "sub4")
		if err == nil {
			again = e
			break
		}
		if time.Since(killed) > 60*time.Second {
			t.Fatalf("no enrollment through %s within 60s of the leader's death: %v", via.name, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	certs = append(certs, again)
	t.Logf("enrollment through %s succeeded %s after kill -9 of the leader %s", via.name, time.Since(killed).Round(time.Millisecond), leader.name)
	waitOCSP(t, survivors, again, "good", 20*time.Second)

	// The killed node restarts, catches up, and answers for the new certificate.
	leader.start()
	leader.waitReady()
	waitOCSP(t, []*proc{leader}, again, "good", 30*time.Second)

	// The audit log: export it through a voter's API, verify it offline, prove
	// every certificate, and find no personal data in it.
	// The newest certificates are proved once a checkpoint covers them: the
	// leader signs one within a second of the tree growing, so export again
	// until one does.
	var exp string
	for attempt := 1; ; attempt++ {
		exp = filepath.Join(t.TempDir(), "audit")
		voters[0].run(t, "audit", "export", "--url", "https://"+voters[0].apiAddr, "--cacert", filepath.Join(voters[0].dataDir, "cluster-ca.pem"), "--out", exp)
		out := voters[0].run(t, "audit", "verify", exp)
		if !strings.HasPrefix(out, "ok:") {
			t.Fatalf("audit verify: %s", out)
		}
		// The custody of the CA key: wrapped for node2's and node3's approved
		// transport keys at their joins, and for no other node.
		for _, v := range voters[1:] {
			if !strings.Contains(out, "key cluster-ca wrapped for node "+v.name+", transport key sha256:") {
				t.Fatalf("audit verify lists no transfer of cluster-ca to %s:\n%s", v.name, out)
			}
		}
		if strings.Contains(out, "wrapped for node "+edge.name) {
			t.Fatalf("a key was wrapped for the edge:\n%s", out)
		}
		var failed error
		for i, e := range certs {
			out, err := voters[0].runErr("audit", "prove", "--serial", e.serial, exp)
			switch {
			case err != nil:
				failed = fmt.Errorf("audit prove (certificate %d) %s: %v", i+1, e.serial, err)
			case !strings.Contains(out, "cert.issued") || !strings.Contains(out, "inclusion proof verified"):
				t.Fatalf("audit prove %s:\n%s", e.serial, out)
			case e == victim && !strings.Contains(out, "cert.revoked"):
				t.Fatalf("audit prove %s shows no revocation:\n%s", e.serial, out)
			}
		}
		if failed == nil {
			break
		}
		if attempt == 10 {
			latest, _ := os.ReadFile(filepath.Join(exp, "latest.txt"))
			t.Fatalf("%v\nafter %d exports; the latest checkpoint:\n%s", failed, attempt, latest)
		}
		t.Logf("export %d: %v; again in 1s", attempt, failed)
		time.Sleep(time.Second)
	}
	// An auditor's next visit: export the live log again and verify it, and
	// that it extends the earlier export rather than forking from it. The
	// live export is kept (under TMPDIR) for the visit after.
	live := t.TempDir()
	follow := exec.Command(inkanBinary(t), "audit", "verify", "--follow", "https://"+voters[1].apiAddr,
		"--cacert", filepath.Join(voters[1].dataDir, "cluster-ca.pem"), "--against", exp)
	follow.Env = append(slices.Clone(voters[1].env), "TMPDIR="+live)
	var stderr bytes.Buffer
	follow.Stderr = &stderr
	out, err := follow.Output()
	kept, _ := filepath.Glob(filepath.Join(live, "inkan-audit-*", "checkpoints"))
	if err != nil || !strings.HasPrefix(string(out), "exported ") || !strings.Contains(string(out), "are consistent") ||
		strings.Count(string(out), ": ok: ") != 2 || len(kept) != 1 {
		t.Fatalf("audit verify --follow --against: %v (live exports kept: %v)\n%s%s", err, kept, out, stderr.Bytes())
	}
	err = filepath.WalkDir(exp, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, h := range holders {
			for _, v := range []string{h.name, strings.Split(h.name, "\u3000")[0], h.address, h.birth, strings.ReplaceAll(h.birth, "-", "")} {
				if bytes.Contains(b, []byte(v)) {
					t.Errorf("%s holds personal data %q", path, v)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("whole test %s", time.Since(begin).Round(time.Millisecond))
}
