package node

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/policies"
	"github.com/inkan-pki/inkan/tsa"
)

// historyNodeConfig is a bootstrapping node's configuration with its listeners
// on free ports (kept here so that this test does not lean on the admin tests').
func historyNodeConfig(t testing.TB) *Config {
	t.Helper()
	tok := softhsm.NewToken(t)
	var addrs []string
	for range 4 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, ln.Addr().String())
		ln.Close()
	}
	raw := fmt.Sprintf(`data_dir: %s
cluster: {name: history-test, bind: %s, bootstrap: true, raft: {heartbeat_timeout: 300ms, election_timeout: 300ms, leader_lease_timeout: 100ms}}
api: {listen: %s}
ocsp: {listen: %s}
metrics: {listen: %s}
hsm: {module: %s, token: %s, pin_file: %s}
log: {level: error}
drain_timeout: 2s
tsa: {policy: 1.3.6.1.4.1.99999.3161.1, accuracy: 1s}
`, filepath.Join(t.TempDir(), "data"), addrs[0], addrs[1], addrs[2], addrs[3], tok.Module, tok.Label, tok.PINFile)
	cfg, err := parseConfig([]byte(raw))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// statusAnswer is the part of /status's JSON the test reads.
type statusAnswer struct {
	Status     string     `json:"status"`
	Reason     string     `json:"reason"`
	ReasonCode *int       `json:"reason_code"`
	RevokedAt  *time.Time `json:"revoked_at"`
	Expired    bool       `json:"expired"`
	Source     string     `json:"source"`
	Revocation *struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	} `json:"revocation"`
	CRLAtT    *struct{ DER []byte } `json:"crl_at_t"`
	CRLAfterT *struct{ DER []byte } `json:"crl_after_t"`
	Evidence  string                `json:"evidence"`
}

// TestStatusAndEvidenceAtTime is the status-at-T walk on a real node (SoftHSM,
// Raft, the CRL publisher, the OCSP pre-signer): a certificate is issued, used
// to sign a document with openssl cms, held, released and revoked; /status
// answers each time in between rightly, and the evidence bundle for the
// signing time lets OpenSSL alone, given only the bundle and the CA
// certificate, verify the signature as of then (openssl cms -verify -attime
// -crl_check with the bundle's CRLs) and the bundle's OCSP response (openssl
// ocsp -respin). Bad questions get their problem types.
func TestStatusAndEvidenceAtTime(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a node through a certificate's life")
	}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cfg := historyNodeConfig(t)
	n := startTestNode(t, ctx, cfg)
	auth := n.app.authority()
	caInit, err := auth.Init(ctx, ca.InitOptions{Subject: pkix.Name{Country: []string{"JP"}, CommonName: "history CA"}, SelfSign: true})
	if err != nil {
		t.Fatal(err)
	}
	issue := func(notAfter time.Time) (*x509.Certificate, *ecdsa.PrivateKey) {
		t.Helper()
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		link, person := make([]byte, 32), make([]byte, 32)
		rand.Read(link)
		rand.Read(person)
		iss, err := auth.Issue(ctx, ca.Request{
			Decision: policies.Decision{
				Profile: "derived-signing", PolicyVersion: 1,
				Template: &x509.Certificate{
					Subject:  pkix.Name{Country: []string{"JP"}, CommonName: fmt.Sprintf("%x", link[:8])},
					KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
				},
				NotAfter: notAfter,
			},
			PublicKey: key.Public(), Link: link, Person: person,
		})
		if err != nil {
			t.Fatal(err)
		}
		c, err := x509.ParseCertificate(iss.DER)
		if err != nil {
			t.Fatal(err)
		}
		return c, key
	}
	base := "http://" + n.Addrs().OCSP
	get := func(path string) (int, string, []byte) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), b
	}
	statusPath := func(c *x509.Certificate, at time.Time) string {
		return "/status/" + caInit.ID + "/" + certserial.Format(c.SerialNumber) + "?at=" + at.UTC().Format(time.RFC3339Nano)
	}
	status := func(c *x509.Certificate, at time.Time) statusAnswer {
		t.Helper()
		code, ct, b := get(statusPath(c, at))
		if code != 200 || ct != "application/json" {
			t.Fatalf("status at %s: %d %s %s", at, code, ct, b)
		}
		var a statusAnswer
		if err := json.Unmarshal(b, &a); err != nil {
			t.Fatal(err)
		}
		return a
	}
	// settle waits past the shard CRL that follows a change (1s batching).
	settle := func() time.Time {
		time.Sleep(3 * time.Second)
		return time.Now()
	}

	beforeIssue := time.Now().Add(-time.Minute)
	cert, key := issue(time.Now().Add(365 * 24 * time.Hour))
	serial := cert.SerialNumber

	// Sign a document with the derived key, with OpenSSL.
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	doc := write("contract.txt", []byte("a mortgage contract, 35 years\n"))
	certPEM := write("signer.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}))
	keyPEM := write("signer.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
	caPEM := write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caInit.Cert.Raw}))
	sig := filepath.Join(dir, "contract.p7s")
	openssl(t, "cms", "-sign", "-binary", "-in", doc, "-signer", certPEM, "-inkey", keyPEM, "-outform", "DER", "-out", sig, "-nocerts")
	// Time-stamp the signature with the node's TSA (key and certificate made
	// directly: the ceremony is tested in TestTSAKeyUnderDualControl).
	n.app.mu.Lock()
	tsaSvc := n.app.tsa
	n.app.mu.Unlock()
	if _, err := tsaSvc.Init(ctx, tsa.InitOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := tsaSvc.Certify(ctx, tsa.CertifyOptions{CommonName: "history TSA", Lifetime: 24 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	openssl(t, "ts", "-query", "-data", sig, "-sha256", "-cert", "-out", filepath.Join(dir, "sig.tsq"))
	token := timeStamp(t, ctx, cfg, n.Addrs().API, filepath.Join(dir, "sig.tsq"))
	tokenPath := write("sig.tsr", token)
	good := genTime(t, openssl(t, "ts", "-reply", "-in", tokenPath, "-text"))
	settle()

	if err := auth.Hold(ctx, serial, ""); err != nil {
		t.Fatal(err)
	}
	held := settle()
	if err := auth.Release(ctx, serial, ""); err != nil {
		t.Fatal(err)
	}
	released := settle()
	if err := auth.Revoke(ctx, serial, crlreason.KeyCompromise, ""); err != nil {
		t.Fatal(err)
	}
	revoked := settle()

	// A certificate that has expired.
	short, _ := issue(time.Now().Add(2 * time.Second))
	afterExpiry := time.Now().Add(3 * time.Second)
	time.Sleep(time.Until(afterExpiry) + 100*time.Millisecond)

	for _, c := range []struct {
		name    string
		cert    *x509.Certificate
		at      time.Time
		status  string
		reason  string
		source  string
		expired bool
	}{
		{"before issuance", cert, beforeIssue, "unknown", "", "", false},
		{"issued, revoked later", cert, good, "good", "", "", false},
		{"on hold (released since)", cert, held, "held", "certificateHold", "crl", false},
		{"released", cert, released, "good", "", "", false},
		{"revoked", cert, revoked, "revoked", "keyCompromise", "record", false},
		{"after expiry", short, afterExpiry, "good", "", "", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			a := status(c.cert, c.at)
			if a.Status != c.status || a.Reason != c.reason || a.Source != c.source || a.Expired != c.expired {
				t.Errorf("got status %q reason %q source %q expired %v; want %q %q %q %v",
					a.Status, a.Reason, a.Source, a.Expired, c.status, c.reason, c.source, c.expired)
			}
			if c.cert == cert && (a.Revocation == nil || a.Revocation.Status != "revoked" || a.Revocation.Reason != "keyCompromise") {
				t.Errorf("the revocation made since is not reported: %+v", a.Revocation)
			}
			if c.status != "unknown" && (a.CRLAtT == nil || a.Evidence == "") {
				t.Errorf("no CRL current at T, or no evidence link")
			}
			for _, l := range []*struct{ DER []byte }{a.CRLAtT, a.CRLAfterT} {
				if l == nil {
					continue
				}
				crl, err := x509.ParseRevocationList(l.DER)
				if err != nil || crl.CheckSignatureFrom(caInit.Cert) != nil {
					t.Errorf("a CRL given as proof is not the CA's: %v", err)
				}
			}
		})
	}

	// The CA retires (a rollover) and the node restarts: the answers stay.
	if _, err := auth.Init(ctx, ca.InitOptions{Subject: pkix.Name{Country: []string{"JP"}, CommonName: "history CA 2"}, SelfSign: true}); err != nil {
		t.Fatal(err)
	}
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	n = startTestNode(t, ctx, cfg)
	base = "http://" + n.Addrs().OCSP
	if a := status(cert, held); a.Status != "held" {
		t.Errorf("after the CA's retirement and a restart: %+v", a)
	}
	if a := status(cert, good); a.Status != "good" {
		t.Errorf("at the time-stamp, after the CA's retirement and a restart: %+v", a)
	}
	// The time-stamp verifies with OpenSSL alone (TSA certificate in the token).
	if out := openssl(t, "ts", "-verify", "-data", sig, "-in", tokenPath, "-CAfile", caPEM); !strings.Contains(out, "Verification: OK") {
		t.Errorf("openssl ts -verify: %s", out)
	}

	// The evidence for the time-stamp's time: OpenSSL alone verifies the
	// signature as of then, with the bundle's certificates and CRLs.
	// The node has just restarted: until it has signed what its state needs
	// it answers 503 (ocsp-signing) rather than a bundle without the response.
	var (
		code     int
		ct       string
		bundle   []byte
		evidence = "/evidence/" + caInit.ID + "/" + certserial.Format(serial) + "?at=" + good.UTC().Format(time.RFC3339)
	)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if code, ct, bundle = get(evidence); code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			break
		}
	}
	if code != 200 || !strings.HasPrefix(ct, "application/pkcs7-mime") {
		t.Fatalf("evidence: %d %s %s", code, ct, bundle)
	}
	bundlePath := write("evidence.p7b", bundle)
	printed := openssl(t, "cms", "-cmsout", "-print", "-inform", "DER", "-in", bundlePath)
	if !strings.Contains(printed, "id-ri-ocsp-response") && !strings.Contains(printed, "1.3.6.1.5.5.7.16.2") {
		t.Errorf("the bundle has no RFC 5940 OCSP response:\n%s", printed)
	}
	// PKCS #7 readers know only CRLs in crls: form=pkcs7 leaves the OCSP response out.
	_, _, p7 := get("/evidence/" + caInit.ID + "/" + certserial.Format(serial) + "?at=" + good.UTC().Format(time.RFC3339) + "&form=pkcs7")
	certsAndCRLs := openssl(t, "pkcs7", "-print_certs", "-inform", "DER", "-in", write("evidence-pkcs7.p7b", p7))
	pemPath := write("evidence.pem", []byte(certsAndCRLs))
	if !strings.Contains(certsAndCRLs, "BEGIN X509 CRL") || !strings.Contains(certsAndCRLs, "BEGIN CERTIFICATE") {
		t.Fatalf("openssl pkcs7 -print_certs found no certificates or CRLs:\n%s", certsAndCRLs)
	}
	// What docs/long-term.md tells a relying party to run, as printed there.
	script := `set -e
CA=$(openssl x509 -in signer.pem -noout -ext crlDistributionPoints | grep -o '/crl/[^/]*/' | cut -d/ -f3)
SERIAL=$(openssl x509 -in signer.pem -noout -serial | cut -d= -f2)
echo "question: $CA $SERIAL"
openssl pkcs7 -print_certs -inform DER -in evidence-pkcs7.p7b > evidence.pem
sed -n '/BEGIN X509 CRL/,/END X509 CRL/p' evidence.pem > crls.pem
cat ca.pem crls.pem > trust.pem
openssl cms -verify -binary -inform DER -in contract.p7s -content contract.txt \
  -certfile evidence.pem -CAfile trust.pem -crl_check -attime "$AT" -purpose any -out /dev/null
off=$(openssl asn1parse -inform DER -in evidence.p7b \
  | awk -F: '/1\.3\.6\.1\.5\.5\.7\.16\.2|ocsp-response/ { getline; print $1 + 0; exit }')
openssl asn1parse -inform DER -in evidence.p7b -offset "$off" -noout -out ocsp.der
openssl ocsp -respin ocsp.der -issuer ca.pem -CAfile ca.pem -cert signer.pem -no_nonce
`
	attime := strconv.FormatInt(good.Unix(), 10)
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir, cmd.Env = dir, append(os.Environ(), "AT="+attime)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "CMS Verification successful") ||
		!strings.Contains(string(out), "Response verify OK") || !strings.Contains(string(out), "signer.pem: revoked") ||
		!strings.Contains(strings.ToLower(string(out)), "question: "+strings.ToLower(caInit.ID+" "+certserial.Format(serial))) {
		t.Fatalf("the relying party's commands: %v\n%s", err, out)
	}
	openssl(t, "verify", "-crl_check", "-CAfile", caPEM, "-CRLfile", pemPath, "-attime", attime, certPEM)
	// The same, as of a time the certificate was revoked, fails.
	code, _, bundleRevoked := get("/evidence/" + caInit.ID + "/" + certserial.Format(serial) + "?at=" + revoked.UTC().Format(time.RFC3339) + "&form=pkcs7")
	if code != 200 {
		t.Fatalf("evidence at revocation: %d", code)
	}
	revokedPEM := write("revoked.pem", []byte(openssl(t, "pkcs7", "-print_certs", "-inform", "DER", "-in", write("revoked.p7b", bundleRevoked))))
	if out, err := exec.Command("openssl", "verify", "-crl_check", "-CAfile", caPEM, "-CRLfile", revokedPEM,
		"-attime", strconv.FormatInt(revoked.Unix(), 10), certPEM).CombinedOutput(); err == nil || !strings.Contains(string(out), "revoked") {
		t.Errorf("openssl verify accepted a revoked certificate at its revocation time: %v\n%s", err, out)
	}
	// Bad questions.
	sp := "/status/" + caInit.ID + "/" + certserial.Format(serial)
	for _, c := range []struct{ name, path, problem string }{
		{"unknown serial", "/status/" + caInit.ID + "/0badbadbadbad?at=" + good.UTC().Format(time.RFC3339), "unknown-serial"},
		{"unknown CA", "/status/nope/" + certserial.Format(serial) + "?at=" + good.UTC().Format(time.RFC3339), "unknown-ca"},
		{"future time", sp + "?at=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339), "future-time"},
		{"bad time", sp + "?at=yesterday", "bad-time"},
		{"no time", sp, "bad-request"},
		{"unknown form", "/evidence/" + caInit.ID + "/" + certserial.Format(serial) + "?at=" + good.UTC().Format(time.RFC3339) + "&form=xml", "bad-request"},
		{"form on status", sp + "?at=" + good.UTC().Format(time.RFC3339) + "&form=pkcs7", "bad-request"},
		{"extra parameter", sp + "?at=" + good.UTC().Format(time.RFC3339) + "&x=1", "bad-request"},
		{"bad serial", "/status/" + caInit.ID + "/xyz?at=" + good.UTC().Format(time.RFC3339), "bad-serial"},
		{"evidence before issuance", "/evidence/" + caInit.ID + "/" + certserial.Format(serial) + "?at=" + beforeIssue.UTC().Format(time.RFC3339), "not-issued-at"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, ct, b := get(c.path)
			var p struct{ Type string }
			if ct != "application/problem+json" || json.Unmarshal(b, &p) != nil || p.Type != "urn:inkan:problem:evidence:"+c.problem {
				t.Errorf("got %s %s, want problem %s", ct, b, c.problem)
			}
		})
	}

	// The CRL current at the time-stamp's time is no longer its shard's newest:
	// it comes from the node's archive (shared/crl/, named by its SHA-256). Gone
	// from there (a one-node cluster has no peer to fetch it from), the answer
	// names the case rather than give other bytes.
	atT := status(cert, good).CRLAtT
	sum := sha256.Sum256(atT.DER)
	archived := filepath.Join(cfg.DataDir, "shared", "crl", hex.EncodeToString(sum[:1]), hex.EncodeToString(sum[:])+".crl")
	if err := os.Remove(archived); err != nil {
		t.Fatalf("the CRL current at T is not in the archive: %v", err)
	}
	for _, path := range []string{statusPath(cert, good), "/evidence/" + caInit.ID + "/" + certserial.Format(serial) + "?at=" + good.UTC().Format(time.RFC3339)} {
		code, ct, b := get(path)
		var p struct{ Type string }
		if code != http.StatusServiceUnavailable || ct != "application/problem+json" || json.Unmarshal(b, &p) != nil ||
			p.Type != "urn:inkan:problem:evidence:crl-not-archived" {
			t.Errorf("%s without its CRL in the archive: %d %s %s", path, code, ct, b)
		}
	}
}

// timeStamp sends a time-stamp query to the node's TSA and returns the token.
func timeStamp(t *testing.T, ctx context.Context, cfg *Config, addr, query string) []byte {
	t.Helper()
	q, err := os.ReadFile(query)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	caPEM, err := os.ReadFile(filepath.Join(cfg.DataDir, clusterCAFile))
	if err != nil || !pool.AppendCertsFromPEM(caPEM) {
		t.Fatalf("cluster CA: %v", err)
	}
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "https://"+addr+tsa.Path, bytes.NewReader(q))
		req.Header.Set("Content-Type", "application/timestamp-query")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		// A token is a granted TimeStampResp (status 0); the TSA refuses
		// (timeNotAvailable) until it has compared clocks.
		if resp.StatusCode == 200 && len(body) > 9 && bytes.HasPrefix(body[4:], []byte{0x30, 0x03, 0x02, 0x01, 0x00}) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("no time-stamp token: %d %x", resp.StatusCode, body)
		}
	}
}

// genTime reads the time-stamp's time from openssl ts -reply -text, to the second.
func genTime(t *testing.T, text string) time.Time {
	t.Helper()
	for line := range strings.Lines(text) {
		v, ok := strings.CutPrefix(line, "Time stamp: ")
		if !ok {
			continue
		}
		f := strings.Fields(v) // Dec  7 14:25:01.123 2026 GMT
		if len(f) != 5 {
			break
		}
		clock, _, _ := strings.Cut(f[2], ".")
		at, err := time.Parse("Jan 2 15:04:05 2006 MST", strings.Join([]string{f[0], f[1], clock, f[3], f[4]}, " "))
		if err != nil {
			t.Fatal(err)
		}
		return at.Add(time.Second) // the token's time, rounded up: T is after it
	}
	t.Fatalf("no time in:\n%s", text)
	return time.Time{}
}

// openssl runs openssl and returns its output, failing the test if it fails.
func openssl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
