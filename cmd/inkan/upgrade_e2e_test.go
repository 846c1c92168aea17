package main

import (
	"archive/tar"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// The previous release's state, made with its binary by
// testdata/upgrade/make-fixture.sh under this prefix, which the test rewrites.
const (
	upgradeFixture = "testdata/upgrade/previous-release.tar.gz"
	upgradePrefix  = "/tmp/inkan-upgrade-fixture"
)

// extractFixture unpacks the fixture into a temporary directory, with the modes it
// was made with (PIN and key files 0600), and points its configuration files at
// it. It returns the fixture's root.
func extractFixture(t *testing.T) string {
	t.Helper()
	f, err := os.Open(upgradeFixture)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Clean(h.Name)
		if strings.HasPrefix(name, "..") || filepath.IsAbs(name) {
			t.Fatalf("fixture entry %q escapes the directory", h.Name)
		}
		path := filepath.Join(dir, name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(path, 0o700); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, data, os.FileMode(h.Mode)&0o700); err != nil {
				t.Fatal(err)
			}
		}
	}
	root := filepath.Join(dir, filepath.Base(upgradePrefix))
	for _, file := range []string{"node.yaml", "softhsm2.conf"} {
		path := filepath.Join(root, file)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(strings.ReplaceAll(string(data), upgradePrefix, root)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// fixtureProc is the fixture's node as a proc, on ports of this run.
func fixtureProc(t *testing.T, root string) *proc {
	t.Helper()
	p := &proc{t: t, name: "node1", home: root, cfgPath: filepath.Join(root, "node.yaml"), dataDir: filepath.Join(root, "data"),
		env: append(os.Environ(), "SOFTHSM2_CONF="+filepath.Join(root, "softhsm2.conf"))}
	a := freeAddrs(t, 4)
	p.clusterAddr, p.apiAddr, p.ocspAddr, p.metricsAddr = a[0], a[1], a[2], a[3]
	cfg, err := os.ReadFile(p.cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s := string(cfg)
	for i, old := range []string{"127.0.0.1:7901", "127.0.0.1:7902", "127.0.0.1:7903", "127.0.0.1:7904"} {
		if !strings.Contains(s, old) {
			t.Fatalf("the fixture's node.yaml has no %s", old)
		}
		s = strings.ReplaceAll(s, old, a[i])
	}
	// The test reads the audit log as the demo does, without an auditor
	// certificate: an operator's choice (audit.public), not the upgrade's.
	if !strings.Contains(s, "\naudit:") {
		s += "audit:\n  public: true\n"
	}
	write(t, p.cfgPath, s)
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(root, "log"))
			t.Logf("node1's log:\n%s", tail(string(log), 60))
		}
	})
	return p
}

// TestUpgradeFromPreviousRelease starts this release on a data directory made by
// the previous one (testdata/upgrade/make-fixture.sh): one node whose state names
// people by a keyed hash of the name and birth date, two homonyms A and B sharing
// one login pseudonym, and the shipped signing profile v1 (no EKU). After the
// upgrade: the leader migrates the certificates to person records — A's two
// certificates to one record, B's to another — and audits each move, and the
// exported log verifies end to end; the old certificates are good by OCSP and keep
// their subjects as issued; the signing profile is the shipped v2 with
// documentSigning, the operator's authentication profile is left as it was; new
// certificates follow the new rules (A and B now get two pseudonyms, neither the
// old one); and after a move, A re-binds the old certificate with the new card and
// its key: released, good again, its subject as issued.
func TestUpgradeFromPreviousRelease(t *testing.T) {
	module, err := softhsm.Module()
	if err != nil {
		t.Skip(err)
	}
	root := extractFixture(t)
	oldA := readEnrolled(t, filepath.Join(root, "a.pem"), filepath.Join(root, "a.key"))
	oldB := readEnrolled(t, filepath.Join(root, "b.pem"), filepath.Join(root, "b.key"))
	oldSign := readEnrolled(t, filepath.Join(root, "a-sign.pem"), filepath.Join(root, "a-sign.key"))
	for _, e := range []*enrolled{oldA, oldB, oldSign} {
		// The signing certificate ends first: its profile is the shipped v1, untouched.
		// A failure, not a skip: a skipped upgrade test is one make test no
		// longer runs, and nobody reads a skip.
		if time.Now().Add(24 * time.Hour).After(e.cert.NotAfter) {
			t.Fatalf("a fixture certificate ends at %s: make a new fixture with testdata/upgrade/make-fixture.sh (its header says how)", e.cert.NotAfter)
		}
	}
	// What the previous release did: one pseudonym for two people, and the same
	// value in the signing certificate beside the name.
	if oldA.cert.Subject.CommonName != oldB.cert.Subject.CommonName || oldSign.cert.Subject.SerialNumber != oldA.cert.Subject.CommonName {
		t.Fatal("the fixture is not the previous release's state it says it is")
	}

	p := fixtureProc(t, root)
	p.start()
	p.waitReady()
	lab := &cardLab{t: t, dir: root, jlis: filepath.Join(root, "jlis"), pin: filepath.Join(root, "card.pin"), module: module,
		env: p.env, labels: []string{"card-a", "card-b"}, anchor: filepath.Join(root, "jlis", "root.pem"), crlFile: filepath.Join(root, "jlis", "crl.der")}
	cardA := lab.cardSerial("card-a")
	// A card for no one in particular: issuing it publishes a fresh CRL (the
	// fixture's is as old as the fixture).
	lab.addCardWith("spare", "--policy", "production")

	// The migration, in the audit log.
	var persons map[string]string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(500 * time.Millisecond) {
		persons = migratedPersons(t, exportVerifiedAudit(t, p))
		if len(persons) == 3 || time.Now().After(deadline) {
			break
		}
	}
	if len(persons) != 3 {
		t.Fatalf("migrated certificates: %v; want A's two and B's one", persons)
	}
	personOf := func(e *enrolled) string {
		for s, p := range persons {
			if sameHexSerial(s, e.serial) {
				return p
			}
		}
		return ""
	}
	pa, pb := personOf(oldA), personOf(oldB)
	if pa == "" || pb == "" || pa == pb || personOf(oldSign) != pa {
		t.Fatalf("person records: A %q and %q, B %q: want A's two on one record, B on another (%v)", pa, personOf(oldSign), pb, persons)
	}
	for _, e := range []*enrolled{oldA, oldB, oldSign} {
		waitOCSPAnswer(t, p, e, ocspAnswer{"good", ""}, 10*time.Second)
	}

	// The profiles: the shipped signing v1 upgraded, the operator's
	// authentication v2 kept.
	sign := policyShow(t, p, "signing")
	if !regexp.MustCompile(`(?m)^version: 2$`).MatchString(sign) || !strings.Contains(sign, "documentSigning") {
		t.Fatalf("the signing profile after the upgrade:\n%s", sign)
	}
	if auth := policyShow(t, p, "authentication"); !strings.Contains(auth, "validity: 87600h") {
		t.Fatalf("the operator's authentication profile was replaced:\n%s", auth)
	}

	// New certificates follow the new rules. (The signing profile's cap, 3, counts
	// the person's certificates of every profile: the signing certificate first.)
	newSign := lab.enrollWith(p, 0, "a-sign-new", "--profile", "signing")
	newA, err := lab.enroll(p, 0, "a-new")
	if err != nil {
		t.Fatal(err)
	}
	newB, err := lab.enroll(p, 1, "b-new")
	if err != nil {
		t.Fatal(err)
	}
	old := oldA.cert.Subject.CommonName
	if cnA, cnB := newA.cert.Subject.CommonName, newB.cert.Subject.CommonName; cnA == cnB || cnA == old || cnB == old {
		t.Fatalf("new pseudonyms %s and %s (the old one %s): want two, neither the old", cnA, cnB, old)
	}
	if len(newSign.cert.UnknownExtKeyUsage) != 1 || !newSign.cert.UnknownExtKeyUsage[0].Equal(oidDocumentSigning) ||
		newSign.cert.Subject.SerialNumber == newA.cert.Subject.CommonName {
		t.Fatalf("a new signing certificate: EKU %v, serialNumber is A's login pseudonym: %v",
			newSign.cert.UnknownExtKeyUsage, newSign.cert.Subject.SerialNumber == newA.cert.Subject.CommonName)
	}

	// A moves: the old certificate is held, then re-bound with the new card and
	// its own key, and released with its subject as issued.
	lab.run("hsm", "init-token", "--module", module, "--label", "card-a-new", "--so-pin-file", filepath.Join(root, "so.pin"), "--pin-file", lab.pin)
	lab.run("jpki-sim", "--dir", lab.jlis, "issue-card", "--module", module, "--token", "card-a-new", "--pin-file", lab.pin,
		"--reissue-of", cardA, "--address", "神奈川県横浜市中区日本大通一丁目", "--prefecture", "神奈川県", "--municipality", "横浜市")
	lab.labels = append(lab.labels, "card-a-new")
	waitOCSPAnswer(t, p, oldA, ocspAnswer{"revoked", "certificateHold"}, 15*time.Second)
	out, err := lab.enrollRebind(p, len(lab.labels)-1, oldA.serial, oldA.key, "a-rebound.pem")
	m := rebindLine.FindStringSubmatch(out)
	if err != nil || m == nil || m[1] != "released" || !sameHexSerial(m[2], oldA.serial) {
		t.Fatalf("re-bind of the migrated certificate: %v\n%s; want it released", err, out)
	}
	rebound := readEnrolled(t, filepath.Join(root, "a-rebound.pem"), oldA.key)
	if !rebound.cert.Equal(oldA.cert) {
		t.Fatal("the re-bind returned another certificate")
	}
	waitOCSPAnswer(t, p, oldA, ocspAnswer{"good", ""}, 10*time.Second)
}
