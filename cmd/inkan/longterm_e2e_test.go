package main

import (
	"archive/tar"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/admin"
)

// The signing profile's validity in the walk-through: short enough that the
// certificate expires, by the nodes' own clocks, within the test; long enough
// that enrolling, signing, time-stamping, fetching the evidence and revoking
// come first on a loaded machine (they take a few seconds). The nodes' clocks
// are not bent: no node takes a clock from outside, and a TSA that could be
// told another time would be no TSA. What expiry changes is the order of the
// times (T < revocation < notAfter < now), which a short validity gives as a
// long one would; the verifier's "years later" is OpenSSL's -attime, which
// fixes every check at T whatever the machine's clock says.
const longTermValidity = 40 * time.Second

// longTermStatus is the part of /status's JSON the walk-through reads.
type longTermStatus struct {
	Status     string `json:"status"`
	Expired    bool   `json:"expired"`
	Revocation *struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	} `json:"revocation"`
	CRLAtT    *struct{ SHA256 string } `json:"crl_at_t"`
	CRLAfterT *struct{ SHA256 string } `json:"crl_after_t"`
}

// TestLongTermWalkThrough is docs/long-term.md's walk-through on three voters
// run as processes: a card holder enrolls with the signing profile through
// the enrollment API (`inkan enroll`, the stand-in card); signs a document
// with `openssl cms -sign` and the derived key; time-stamps the signature with
// the cluster's TSA (`openssl ts -query | curl`); a relying party fetches the
// evidence bundle for the time-stamp's time T (curl). Then the certificate is
// revoked, expires, its CA is retired; an admin takes a backup; every node is
// killed, and a new cluster is restored from the backup onto new data dirs
// (`inkan admin restore`, HSM token copied as the HSM's own backup, two new
// voters joining). The restored cluster answers /status and /evidence at T
// from every node, with the same CRLs (the backup carried the archive), and,
// with every inkan process gone, OpenSSL alone verifies that the signature
// was valid at T (`openssl cms -verify -attime -crl_check` with the bundle's
// CRLs, `openssl ts -verify`), and that the same checks at a time after the
// revocation fail.
func TestLongTermWalkThrough(t *testing.T) {
	if testing.Short() {
		t.Skip("processes")
	}
	begin := time.Now()
	lab := newCardLab(t)
	dir := t.TempDir()
	n1 := newProc(t, "lt1", "  bootstrap: true")
	public := "http://" + n1.ocspAddr + "/"
	n1.addConfig(t, lab.jpkiSection(), public)
	n1.withTSA(t)
	n1.start()
	n1.waitReady()
	var ca admin.CAInit
	if err := json.Unmarshal([]byte(n1.admin(t, "--output", "json", "ca", "init", "--cn", "inkan long-term CA", "--country", "JP", "--self-sign")), &ca); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "ca.pem"), strings.TrimSpace(ca.Certificate))
	useTestCards(t, n1)
	shortSigning(t, n1, longTermValidity)
	nodes := []*proc{n1}
	for _, name := range []string{"lt2", "lt3"} {
		p := newProcJoining(t, name, n1)
		p.addConfig(t, lab.jpkiSection(), public)
		p.withTSA(t)
		p.start()
		p.waitReady()
		nodes = append(nodes, p)
	}
	n1.admin(t, "tsa", "init")
	n1.admin(t, "tsa", "cert", "--cn", "inkan long-term TSA", "--lifetime", "8760h")
	t.Logf("three voters, CA and TSA ready after %s", time.Since(begin).Round(time.Millisecond))

	// 1. Enroll with the signing profile, through the second voter.
	e := lab.enrollWith(nodes[1], 0, "signer", "--profile", "signing")
	if got := e.cert.NotAfter.Sub(e.cert.NotBefore); got > longTermValidity+2*time.Minute {
		t.Fatalf("the signing certificate is valid for %s, not the profile's %s", got, longTermValidity)
	}
	// 2. Sign a document with the derived key, with OpenSSL.
	write(t, filepath.Join(dir, "contract.txt"), "a mortgage contract, 35 years")
	cp(t, e.leaf, filepath.Join(dir, "signer.pem"))
	cp(t, e.key, filepath.Join(dir, "signer.key"))
	sh(t, dir, `openssl cms -sign -binary -in contract.txt -signer signer.pem -inkey signer.key -outform DER -out contract.p7s`)
	// 3. Time-stamp the signature with the TSA of the third voter.
	var reply string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		sh(t, dir, `openssl ts -query -data contract.p7s -sha256 -cert -out sig.tsq &&
curl -sS --cacert "$2" --data-binary @sig.tsq -H 'Content-Type: application/timestamp-query' -o contract.tsr "$1"`,
			"https://"+nodes[2].apiAddr+"/tsa", filepath.Join(nodes[2].dataDir, "cluster-ca.pem"))
		reply = sh(t, dir, `openssl ts -reply -in contract.tsr -text`)
		if strings.Contains(reply, "Status: Granted.") || time.Now().After(deadline) {
			break
		}
	}
	at := tokenTime(t, reply)
	if out := sh(t, dir, `openssl ts -verify -data contract.p7s -in contract.tsr -CAfile ca.pem`); !strings.Contains(out, "Verification: OK") {
		t.Fatalf("openssl ts -verify: %s", out)
	}
	// 4. The evidence for T, at once: the CRL current at T proves the status
	// (no CRL after T exists yet: a shard's CRL is published again when it
	// changes, or at half its validity).
	serial := strings.ToUpper(e.serial)
	query := ca.ID + "/" + serial + "?at=" + at.UTC().Format(time.RFC3339)
	time.Sleep(time.Until(at) + 100*time.Millisecond) // T is the token's time rounded up
	if a := statusAt(t, nodes[2], query); a.Status != "good" || a.Expired || a.CRLAtT == nil {
		t.Fatalf("status at T before the revocation: %+v", a)
	}
	fetchEvidence(t, nodes[2], dir, query, "before")

	// 5. Revoke; let it expire; retire the CA. (A CRL dates a revocation to
	// the second: one in T's second would read as in force at T.)
	time.Sleep(time.Until(at.Add(2 * time.Second)))
	nodes[0].admin(t, "cert", "revoke", e.serial, "--reason", "keyCompromise", "--yes")
	if time.Now().After(e.cert.NotAfter) {
		t.Fatalf("the certificate expired (%s) before it was revoked: the machine is too slow for a %s profile", e.cert.NotAfter, longTermValidity)
	}
	time.Sleep(3 * time.Second) // the shard CRL listing it
	revokedAt := time.Now().Truncate(time.Second)
	before := statusAt(t, nodes[1], query)
	if before.Status != "good" || before.Revocation == nil || before.CRLAtT == nil || before.CRLAfterT == nil {
		t.Fatalf("status at T (%s) after the revocation: %+v %s", at, before, rawStatus(t, nodes[1], query))
	}
	// Meanwhile, as at T: OpenSSL verifies with the bundle fetched before.
	relyingPartyVerifies(t, dir, "before", at)
	time.Sleep(time.Until(e.cert.NotAfter) + 2*time.Second)
	afterExpiry := time.Now().Truncate(time.Second)
	nodes[0].admin(t, "ca", "retire", ca.ID, "--yes")
	if a := statusAt(t, nodes[1], ca.ID+"/"+serial+"?at="+afterExpiry.UTC().Format(time.RFC3339)); a.Status != "revoked" || !a.Expired {
		t.Fatalf("status after expiry: %+v", a)
	}
	fetchEvidence(t, nodes[0], dir, ca.ID+"/"+serial+"?at="+revokedAt.UTC().Format(time.RFC3339), "revoked")

	// 6. A backup, then every node gone.
	backup := filepath.Join(dir, "backup.tar")
	n1.admin(t, "backup", "--out", backup)
	x := filepath.Join(dir, "backup")
	if err := os.Mkdir(x, 0o700); err != nil {
		t.Fatal(err)
	}
	sh(t, x, `tar xf "$1"`, backup)
	// The manifest, signed by the audit key, lists the archive's files, as
	// docs/operations.md checks them without inkan.
	sh(t, x, `openssl dgst -sha256 -verify audit-key.pem -signature manifest.sig manifest.json`)
	var manifest admin.Manifest
	if b, err := os.ReadFile(filepath.Join(x, "manifest.json")); err != nil || json.Unmarshal(b, &manifest) != nil || manifest.Shared == nil {
		t.Fatalf("manifest: %v %+v", err, manifest)
	}
	listing := strings.Fields(sh(t, x, `cd shared && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum`))[0]
	if listing != manifest.Shared.SHA256 || manifest.Shared.Files < 2 {
		t.Fatalf("the backup's shared files: listing %s, manifest %+v", listing, manifest.Shared)
	}
	for _, p := range nodes {
		p.kill()
	}

	// 7. A new cluster from the backup: node 1's HSM token (its own backup),
	// new data dirs; a backup whose archive was tampered with is refused.
	r1 := newProc(t, "restored1", "  bootstrap: true")
	copyTokens(t, n1.home, r1.home)
	cfg, err := os.ReadFile(r1.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	write(t, r1.cfgPath, strings.NewReplacer("token: restored1", "token: lt1", r1.home+"/user.pin", n1.home+"/user.pin").Replace(string(cfg)))
	r1.addConfig(t, lab.jpkiSection(), public)
	r1.withTSA(t)
	tampered := filepath.Join(dir, "tampered.tar")
	tamperShared(t, backup, tampered)
	if out, err := r1.runErr("admin", "--config", r1.cfgPath, "restore", tampered, "--audit-key", filepath.Join(x, "audit-key.pem")); err == nil {
		t.Fatalf("a backup with a tampered CRL was staged: %s", out)
	}
	if _, err := os.Stat(filepath.Join(r1.dataDir, "shared", "crl")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the refused restore left files in the archive: %v", err)
	}
	r1.run(t, "admin", "--config", r1.cfgPath, "restore", backup, "--audit-key", filepath.Join(x, "audit-key.pem"))
	r1.start()
	r1.waitReady()
	restored := []*proc{r1}
	for _, name := range []string{"restored2", "restored3"} {
		p := newProcJoining(t, name, r1)
		p.addConfig(t, lab.jpkiSection(), public)
		p.withTSA(t)
		p.start()
		p.waitReady()
		restored = append(restored, p)
	}
	t.Logf("restored onto three new nodes after %s", time.Since(begin).Round(time.Millisecond))

	// 8. Every restored node answers for T as before, with the same CRLs: the
	// two new ones fetch the archive from the first.
	for _, p := range restored {
		var a longTermStatus
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
			if a = statusAt(t, p, query); a.Status != "" || time.Now().After(deadline) {
				break
			}
		}
		if a.Status != "good" || a.Expired || a.Revocation == nil || a.Revocation.Status != "revoked" || a.Revocation.Reason != "keyCompromise" ||
			a.CRLAtT == nil || a.CRLAfterT == nil || a.CRLAtT.SHA256 != before.CRLAtT.SHA256 || a.CRLAfterT.SHA256 != before.CRLAfterT.SHA256 {
			t.Fatalf("%s: status at T after the restore: %+v, before %+v", p.name, a, before)
		}
	}
	fetchEvidence(t, restored[2], dir, query, "after")
	for _, p := range restored {
		p.kill()
	}

	// 9. No inkan left: OpenSSL alone, with the bundle fetched after the
	// restore, verifies the signature at T; at the revocation's time it fails.
	relyingPartyVerifies(t, dir, "after", at)
	if out := sh(t, dir, `openssl ts -verify -data contract.p7s -in contract.tsr -CAfile ca.pem -attime "$1"`, strconv.FormatInt(at.Unix(), 10)); !strings.Contains(out, "Verification: OK") {
		t.Fatalf("openssl ts -verify -attime: %s", out)
	}
	cmd := exec.Command("sh", "-c", `openssl pkcs7 -print_certs -inform DER -in revoked-pkcs7.p7b > revoked.pem &&
sed -n '/BEGIN X509 CRL/,/END X509 CRL/p' revoked.pem > revoked-crls.pem && cat ca.pem revoked-crls.pem > revoked-trust.pem &&
openssl cms -verify -binary -inform DER -in contract.p7s -content contract.txt \
  -certfile revoked.pem -CAfile revoked-trust.pem -crl_check -attime "$1" -purpose any -out /dev/null`, "sh", strconv.FormatInt(revokedAt.Unix(), 10))
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "certificate revoked") {
		t.Fatalf("OpenSSL verified the signature at the revocation's time: %v\n%s", err, out)
	}
	t.Logf("walk-through done after %s", time.Since(begin).Round(time.Millisecond))
}

// shortSigning applies the signing profile one version up with the given
// validity, through `inkan admin policy apply`.
func shortSigning(t *testing.T, p *proc, validity time.Duration) {
	t.Helper()
	data := p.admin(t, "policy", "show", "signing")
	m := regexp.MustCompile(`(?m)^version: (\d+)$`).FindStringSubmatch(data)
	if m == nil {
		t.Fatalf("no version in:\n%s", data)
	}
	v, _ := strconv.Atoi(m[1])
	data = strings.Replace(data, m[0], fmt.Sprintf("version: %d", v+1), 1)
	data = regexp.MustCompile(`(?m)^validity: .*$`).ReplaceAllString(data, "validity: "+validity.String())
	file := filepath.Join(p.home, "signing-short.yaml")
	write(t, file, data)
	p.admin(t, "policy", "apply", "--yes", file)
}

// statusAt asks p's OCSP listener /status/<query>; an answer of 503 (the
// node is still fetching a CRL it needs) or 404 (a new node that has not
// caught up yet) comes back as a zero status.
func statusAt(t *testing.T, p *proc, query string) longTermStatus {
	t.Helper()
	resp, err := http.Get("http://" + p.ocspAddr + "/status/" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var a longTermStatus
	if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusNotFound {
		return a
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &a) != nil {
		t.Fatalf("%s: /status/%s: %d %s", p.name, query, resp.StatusCode, b)
	}
	return a
}

// fetchEvidence fetches the evidence bundle, both forms, as a relying party
// does (curl), into <name>.p7b and <name>-pkcs7.p7b in dir.
func fetchEvidence(t *testing.T, p *proc, dir, query, name string) {
	t.Helper()
	url := "http://" + p.ocspAddr + "/evidence/" + query
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		code := sh(t, dir, `code=$(curl -sS -o "$2" -w '%{http_code}' "$1")
if [ "$code" = 200 ]; then curl -sS -f -o "$3" "$1&form=pkcs7"; fi
printf %s "$code"`, url, name+".p7b", name+"-pkcs7.p7b")
		if code == "200" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s: %s", p.name, url, code)
		}
	}
	if out := sh(t, dir, `openssl cms -cmsout -print -inform DER -in "$1"`, name+".p7b"); !strings.Contains(out, "id-ri-ocsp-response") && !strings.Contains(out, "1.3.6.1.5.5.7.16.2") {
		t.Fatalf("%s: the bundle has no RFC 5940 OCSP response:\n%s", p.name, out)
	}
}

// relyingPartyVerifies runs docs/long-term.md's verification, OpenSSL only,
// with the bundle <name>-pkcs7.p7b, as of at.
func relyingPartyVerifies(t *testing.T, dir, name string, at time.Time) {
	t.Helper()
	out := sh(t, dir, `openssl pkcs7 -print_certs -inform DER -in "$1-pkcs7.p7b" > evidence.pem
sed -n '/BEGIN X509 CRL/,/END X509 CRL/p' evidence.pem > crls.pem
test -s crls.pem
cat ca.pem crls.pem > trust.pem
openssl cms -verify -binary -inform DER -in contract.p7s -content contract.txt \
  -certfile evidence.pem -CAfile trust.pem -crl_check -attime "$2" -purpose any -out /dev/null`, name, strconv.FormatInt(at.Unix(), 10))
	if !strings.Contains(out, "CMS Verification successful") {
		t.Fatalf("openssl cms -verify -attime with the %s bundle: %s", name, out)
	}
}

// tokenTime reads the time-stamp's time from openssl ts -reply -text and
// rounds it up to the second (T is then just after the token).
func tokenTime(t *testing.T, text string) time.Time {
	t.Helper()
	m := regexp.MustCompile(`(?m)^Time stamp: (\w+ +\d+ \d\d:\d\d:\d\d)(?:\.\d+)? (\d{4}) GMT$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no time in:\n%s", text)
	}
	at, err := time.Parse("Jan _2 15:04:05 2006", m[1]+" "+m[2])
	if err != nil {
		t.Fatal(err)
	}
	return at.Add(time.Second)
}

func cp(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// tamperShared copies a backup, flipping one byte of its first shared file
// (an archived CRL).
func tamperShared(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	tr, tw := tar.NewReader(in), tar.NewWriter(out)
	done := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if !done && strings.HasPrefix(h.Name, "shared/") {
			b[len(b)/2] ^= 1
			done = true
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil || !done {
		t.Fatalf("tamper: %v, a shared file found: %v", err, done)
	}
}

// rawStatus is p's /status answer as it came, for a failure's message.
func rawStatus(t *testing.T, p *proc, query string) string {
	t.Helper()
	resp, err := http.Get("http://" + p.ocspAddr + "/status/" + query)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
