package jpki

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// anchorSet is the set of J-LIS CA certificates a Verifier trusts. All generations of the
// J-LIS signature CA share one DN, so nothing here is indexed by name: the chain walk
// and the CRL check try each anchor's key and keep the one whose signature verifies.
// This package ships no default anchors.
type anchorSet struct {
	certs []*x509.Certificate
}

// newAnchors checks each certificate as an anchor (basicConstraints CA:TRUE, keyUsage
// with keyCertSign, no critical extension crypto/x509 leaves unprocessed) and returns
// the set. Byte-identical duplicates are kept once.
func newAnchors(certs ...*x509.Certificate) (*anchorSet, error) {
	if len(certs) == 0 {
		return nil, badSetup("jpki: no anchors")
	}
	a := &anchorSet{}
	for i, c := range certs {
		if err := checkAnchor(c); err != nil {
			return nil, badSetup("jpki: anchor %d: %w", i, err)
		}
		a.add(c)
	}
	return a, nil
}

// Certificates returns the anchors (a copy of the slice; the certificates are shared).
func (a *anchorSet) Certificates() []*x509.Certificate {
	return append([]*x509.Certificate(nil), a.certs...)
}

func (a *anchorSet) add(c *x509.Certificate) {
	for _, have := range a.certs {
		if bytes.Equal(have.Raw, c.Raw) {
			return
		}
	}
	a.certs = append(a.certs, c)
}

// contains reports whether c is byte for byte one of the anchors.
func (a *anchorSet) contains(c *x509.Certificate) bool {
	for _, have := range a.certs {
		if bytes.Equal(have.Raw, c.Raw) {
			return true
		}
	}
	return false
}

// readAnchorFile reads and checks the anchors of one PEM file. Errors start with the
// path, so a configuration error reads "jpki.anchors[1]: /x.pem: no certificate found".
func readAnchorFile(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err // *PathError already names the path
	}
	var certs []*x509.Certificate
	rest := data
	for n := 1; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("%s: PEM block %d is %q, want CERTIFICATE", path, n, block.Type)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: certificate %d: %v", path, n, err)
		}
		if err := checkAnchor(c); err != nil {
			return nil, fmt.Errorf("%s: certificate %d (%s): %v", path, n, c.Subject, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%s: no certificate found", path)
	}
	return certs, nil
}

func checkAnchor(c *x509.Certificate) error {
	if c == nil {
		return errors.New("nil certificate")
	}
	if !c.BasicConstraintsValid || !c.IsCA {
		return errors.New("not a CA (basicConstraints CA:TRUE missing)")
	}
	if c.KeyUsage&x509.KeyUsageCertSign == 0 {
		return errors.New("keyUsage lacks keyCertSign")
	}
	if len(c.UnhandledCriticalExtensions) > 0 {
		// Caught here, or every verification would fail as if the card were malformed.
		return fmt.Errorf("unprocessed critical extension %s", c.UnhandledCriticalExtensions[0])
	}
	return nil
}
