package jpki

import (
	"encoding/pem"
	"flag"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"crypto/x509"

	"github.com/inkan-pki/inkan/crlreason"
)

var updateExample = flag.Bool("update-example", false, "regenerate testdata/example (certificates and CRL the examples read)")

// TestExampleTestdata regenerates the files example_test.go reads: the three J-LIS
// anchors, a card's signature certificate (issued by the 2019 generation, fictional
// person) and a CRL, with fixed dates so the examples' output never changes. Run
// `go test ./jpki -run TestExampleTestdata -update-example` after changing the fixture.
func TestExampleTestdata(t *testing.T) {
	if !*updateExample {
		t.Skip("run with -update-example to regenerate testdata/example")
	}
	p := getPKI(t)
	dir := filepath.Join("testdata", "example")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "jlis.pem"), pemCerts(p.anchors[0].Raw, p.anchors[1].Raw, p.anchors[2].Raw))
	writeFile(t, filepath.Join(dir, "card.der"), p.leaf(t, leafSpec{anchor: 1, serial: 0x2019_0601}))
	thisUpdate := time.Date(2025, 6, 1, 0, 0, 0, 0, time.UTC)
	crl := crlDER(t, p.anchors[2], p.anchorKeys[2], thisUpdate, thisUpdate.Add(24*time.Hour), []x509.RevocationListEntry{
		{SerialNumber: big.NewInt(0x2019_0001), RevocationTime: thisUpdate.Add(-40 * time.Hour), ReasonCode: int(crlreason.AffiliationChanged)},
		{SerialNumber: big.NewInt(0x2019_0002), RevocationTime: thisUpdate.Add(-30 * time.Hour), ReasonCode: int(crlreason.CertificateHold)},
	})
	writeFile(t, filepath.Join(dir, "jpki.crl"), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl}))
}
