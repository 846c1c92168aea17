package main

import (
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// The person model at the appliance level (issue 16): two people who share a name
// and a birth date are two people, and a signed document puts no name on a login.

// addCardWith makes one more card in a token of the lab, issued by the stand-in
// J-LIS with the given issue-card flags (--name, --birth, --gender, --address, …),
// and returns its index for enroll and the certificate's serial (hex).
func (l *cardLab) addCardWith(label string, flags ...string) (int, string) {
	l.t.Helper()
	l.run("hsm", "init-token", "--module", l.module, "--label", label, "--so-pin-file", filepath.Join(l.dir, "so.pin"), "--pin-file", l.pin)
	out := l.run(append([]string{"jpki-sim", "--dir", l.jlis, "issue-card", "--module", l.module, "--token", label, "--pin-file", l.pin}, flags...)...)
	l.labels = append(l.labels, label)
	return len(l.labels) - 1, issuedSerial(l.t, out)
}

var oidDocumentSigning = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 36}

// TestHomonymsEndToEnd: two people with one name and one birth date, another
// gender and address, a card each (`jpki-sim issue-card --name --birth --gender
// --address`), enrol through `inkan enroll`. Their authentication certificates
// carry two pseudonyms; the signing certificate carries the name but neither
// pseudonym, and its EKU is documentSigning, so `openssl verify -purpose
// sslclient` refuses it as a login certificate while the authentication one
// passes. B, with B's card (of A's name and birth date) and B's own derived key,
// cannot re-bind A's certificate (rebind-key-mismatch). J-LIS revokes B's card as
// compromised: B's certificate is revoked by OCSP, A's stays good.
func TestHomonymsEndToEnd(t *testing.T) {
	lab := newCardLab(t)
	p := startLinkageNode(t, lab)
	useTestCards(t, p)
	name, birth := "同名\u3000花子", "1990-01-01"
	a, _ := lab.addCardWith("twin-a", "--name", name, "--birth", birth, "--gender", "2", "--address", "東京都千代田区試験町一丁目１番１号")
	b, cardB := lab.addCardWith("twin-b", "--name", name, "--birth", birth, "--gender", "1",
		"--address", "北海道札幌市中央区試験町二丁目２番２号", "--prefecture", "北海道", "--municipality", "札幌市")

	authA, err := lab.enroll(p, a, "twin-a-auth")
	if err != nil {
		t.Fatal(err)
	}
	authB, err := lab.enroll(p, b, "twin-b-auth")
	if err != nil {
		t.Fatal(err)
	}
	cnA, cnB := authA.cert.Subject.CommonName, authB.cert.Subject.CommonName
	if cnA == cnB || len(cnA) != 64 || len(cnB) != 64 {
		t.Fatalf("authentication subjects %q and %q: want two pseudonyms", cnA, cnB)
	}
	signA := lab.enrollWith(p, a, "twin-a-sign", "--profile", "signing")
	subj := signA.cert.Subject
	if subj.CommonName != name || subj.SerialNumber == "" || subj.SerialNumber == cnA || subj.SerialNumber == cnB {
		t.Fatalf("signing subject: name %v, serialNumber %q (authentication pseudonyms %s, %s)", subj.CommonName == name, subj.SerialNumber, cnA, cnB)
	}
	if raw, _ := hex.DecodeString(cnA); strings.Contains(string(signA.cert.Raw), cnA) || strings.Contains(string(signA.cert.Raw), string(raw)) {
		t.Fatal("the signing certificate carries A's authentication pseudonym")
	}
	if len(signA.cert.ExtKeyUsage) != 0 || !slices.ContainsFunc(signA.cert.UnknownExtKeyUsage, oidDocumentSigning.Equal) {
		t.Fatalf("signing EKU %v %v, want documentSigning only", signA.cert.ExtKeyUsage, signA.cert.UnknownExtKeyUsage)
	}
	if out, err := exec.Command("openssl", "verify", "-CAfile", signA.ca, "-purpose", "sslclient", signA.leaf).CombinedOutput(); err == nil {
		t.Fatalf("openssl accepts the signing certificate for client login:\n%s", out)
	}
	if out, err := exec.Command("openssl", "verify", "-CAfile", authA.ca, "-purpose", "sslclient", authA.leaf).CombinedOutput(); err != nil {
		t.Fatalf("openssl refuses the authentication certificate for client login: %v\n%s", err, out)
	}

	// B re-binds A's certificate with B's card and B's key: refused, nothing changes.
	if _, err := lab.enrollRebind(p, b, authA.serial, authB.key, "cross.pem"); problemName(err) != "rebind-key-mismatch" {
		t.Fatalf("B re-binding A's certificate: %v; want rebind-key-mismatch", err)
	}

	// B's card is revoked as compromised: B's certificate goes, A's stays.
	lab.jlisRevoke(cardB, "keyCompromise")
	waitOCSPAnswer(t, p, authB, ocspAnswer{"revoked", "keyCompromise"}, 15*time.Second)
	time.Sleep(2 * linkageInterval)
	for _, e := range []*enrolled{authA, signA} {
		if got, err := ocspQuery(p, e); err != nil || got != (ocspAnswer{"good", ""}) {
			t.Fatalf("A's certificate %s after B's card was revoked: %+v, %v; want good", e.serial, got, err)
		}
	}
}

// enrollWith runs `inkan enroll` with card i and extra flags, and reads what it
// wrote as lab.enroll does.
func (l *cardLab) enrollWith(p *proc, i int, name string, flags ...string) *enrolled {
	l.t.Helper()
	out := filepath.Join(l.dir, name+".pem")
	args := append([]string{"enroll", "--url", "https://" + p.apiAddr, "--ca-file", filepath.Join(p.dataDir, "cluster-ca.pem"),
		"--card", "pkcs11:token=" + l.labels[i], "--card-module", l.module, "--card-pin-file", l.pin,
		"--key", filepath.Join(l.dir, name+".key"), "--out", out, "--timeout", "30s"}, flags...)
	l.run(args...)
	return readEnrolled(l.t, out, filepath.Join(l.dir, name+".key"))
}

// readEnrolled reads a chain `inkan enroll --out` wrote (the certificate, then the
// CA) into the enrolled form, writing the leaf and the CA to files of their own.
func readEnrolled(t *testing.T, chainFile, keyFile string) *enrolled {
	t.Helper()
	chain, err := os.ReadFile(chainFile)
	if err != nil {
		t.Fatal(err)
	}
	var blocks []string
	for _, part := range strings.SplitAfter(string(chain), "-----END CERTIFICATE-----\n") {
		if strings.TrimSpace(part) != "" {
			blocks = append(blocks, part)
		}
	}
	if len(blocks) < 2 {
		t.Fatalf("%s holds %d certificates", chainFile, len(blocks))
	}
	base := strings.TrimSuffix(chainFile, ".pem")
	e := &enrolled{leaf: base + ".leaf.pem", ca: base + ".ca.pem", key: keyFile}
	write(t, e.leaf, strings.TrimSpace(blocks[0]))
	write(t, e.ca, strings.TrimSpace(blocks[len(blocks)-1]))
	body := strings.TrimSpace(blocks[0])
	body = strings.TrimPrefix(body, "-----BEGIN CERTIFICATE-----")
	body = strings.TrimSuffix(body, "-----END CERTIFICATE-----")
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(body, "\n", ""))
	if err != nil {
		t.Fatal(err)
	}
	if e.cert, err = x509.ParseCertificate(der); err != nil {
		t.Fatal(err)
	}
	e.serial = hex.EncodeToString(e.cert.SerialNumber.Bytes())
	return e
}

// migratedPersons reads an audit export's cert.person.migrated leaves: the person
// record each migrated certificate was given, by serial.
func migratedPersons(t *testing.T, exp string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, l := range exportedLeaves(t, exp) {
		if l.Type != "cert.person.migrated" {
			continue
		}
		var d map[string]any
		if err := cbor.Unmarshal(l.Data, &d); err != nil {
			t.Fatal(err)
		}
		person, ok := d["person"].([]byte)
		if !ok || l.Actor != "system" {
			t.Fatalf("migration leaf %+v", d)
		}
		out[l.Serial] = hex.EncodeToString(person)
	}
	return out
}

// TestEnrollSparesThePIN: `inkan enroll` checks the signature PIN's form before it
// logs in to the card, and reads the card's PIN state. A PIN the card could never
// accept (lower case) is refused without a try: the card reports no wrong PIN
// afterwards, and the next enrolment, with the right PIN, prints no warning. A
// wrong PIN of the right form is a try (SoftHSM, like a card, then reports
// CKF_USER_PIN_COUNT_LOW), and the next enrolment warns before it logs in.
func TestEnrollSparesThePIN(t *testing.T) {
	lab := newCardLab(t)
	p := startLinkageNode(t, lab)
	useTestCards(t, p)
	enroll := func(pinFile, name string) (string, error) {
		t.Helper()
		cmd := exec.Command(inkanBinary(t), "enroll", "--url", "https://"+p.apiAddr, "--ca-file", filepath.Join(p.dataDir, "cluster-ca.pem"),
			"--card", "pkcs11:token="+lab.labels[0], "--card-module", lab.module, "--card-pin-file", pinFile,
			"--key", filepath.Join(lab.dir, name+".key"), "--out", filepath.Join(lab.dir, name+".pem"), "--timeout", "30s")
		cmd.Env = lab.env
		var stderr strings.Builder
		cmd.Stderr = &stderr
		err := cmd.Run()
		return stderr.String(), err
	}
	const warned = "warning: the card reports a wrong signature PIN entered before"
	pinFile := func(name, pin string) string {
		f := filepath.Join(lab.dir, name)
		write(t, f, pin)
		return f
	}

	lower := pinFile("lower.pin", "cardpin1234")
	out, err := enroll(lower, "lower")
	if err == nil || !strings.Contains(out, "6 to 16 upper-case letters") || strings.Contains(out, "cardpin1234") {
		t.Fatalf("a lower-case PIN: %v\n%s; want the form refused, without the PIN", err, out)
	}
	if out, err := enroll(lab.pin, "after-lower"); err != nil || strings.Contains(out, warned) {
		t.Fatalf("the right PIN after a PIN of the wrong form: %v\n%s; want no warning (no try was spent)", err, out)
	}

	wrong := pinFile("wrong.pin", "WRONG1234")
	if out, err := enroll(wrong, "wrong"); err == nil || strings.Contains(out, warned) {
		t.Fatalf("a wrong PIN of the right form: %v\n%s; want a refusal by the card", err, out)
	}
	if out, err := enroll(lab.pin, "after-wrong"); err != nil || !strings.Contains(out, warned) {
		t.Fatalf("the right PIN after a wrong one: %v\n%s; want the card's warning", err, out)
	}
}
