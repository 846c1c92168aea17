package ocsp

import (
	"crypto"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	xocsp "golang.org/x/crypto/ocsp"

	"github.com/inkan-pki/inkan/ca/crl"
)

// testBundle is an evidence bundle of the test PKI: a leaf, the CA, a CRL and
// an OCSP response.
func testBundle(t *testing.T, withOCSP bool) []byte {
	t.Helper()
	p := getPKI(t)
	now := time.Now().Truncate(time.Second)
	crlDER := p.fullCRL(t, now.Add(-time.Minute), now.Add(time.Hour),
		[]crl.Entry{{Serial: p.leaves[1].SerialNumber, RevokedAt: now.Add(-2 * time.Minute), Reason: 1}})
	b := &bundle{certs: [][]byte{p.leaves[0].Raw, p.ca.Raw, p.ca.Raw}, crls: [][]byte{crlDER}}
	if withOCSP {
		b.ocsp = [][]byte{p.signedResponse(t, p.leaves[0], crypto.SHA1, xocsp.Good, time.Time{}).DER}
	}
	der, err := b.marshal()
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func TestBundleOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "b.p7b")
	if err := os.WriteFile(path, testBundle(t, true), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "cms", "-cmsout", "-print", "-inform", "DER", "-in", path).CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"version: 5", "1.3.6.1.5.5.7.16.2", "d.crl:", "d.certificate:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("openssl cms -print: no %q", want)
		}
	}
}
