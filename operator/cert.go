package operator

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// keyName is the replicated key (cluster.KeyVault) of the operator CA, named so
// in docs/operators.md. Bootstrap makes it and the service shares it with every
// voter (cluster.ShareKey), so that whichever voter leads signs operator
// certificates; it is not among the keys every join sends.
const keyName = "operator-ca"

// The certificate format. An operator certificate is issued by the operator CA
// with Subject CN = the operator ID, KeyUsage digitalSignature, ExtKeyUsage
// clientAuth, and two URI names in its SubjectAltName: RoleURIPrefix+role and
// IDURIPrefix+ID. The operator's name is not in it.
const (
	roleURIPrefix = "urn:inkan:operator:role:"
	iduriPrefix   = "urn:inkan:operator:id:"
)

const (
	caValidity = 20 * 365 * 24 * time.Hour
	// defaultValidity is how long an operator certificate is valid unless the
	// request says otherwise; MaxValidity is the longest it may be.
	defaultValidity = 365 * 24 * time.Hour
	maxValidity     = 2 * 365 * 24 * time.Hour
	minValidity     = time.Second // tests make certificates that expire at once
)

// Errors of Verify, for the admin API to map to 401 problems by their codes.
var (
	// errNoCertificate: the client showed no certificate.
	errNoCertificate = cluster.NewRefusal("operator.no-certificate", "operator: no client certificate")
	// errUnknownCA: the certificate is not issued by the operator CA.
	errUnknownCA = cluster.NewRefusal("operator.unknown-ca", "operator: certificate not issued by the operator CA")
	// errCertExpired: the certificate is outside its validity.
	errCertExpired = cluster.NewRefusal("operator.cert-expired", "operator: certificate expired or not yet valid")
	// errUnknownOperator: the operator CA issued it, but no operator record
	// holds it (an issuance that was never recorded).
	errUnknownOperator = cluster.NewRefusal("operator.unknown-operator", "operator: certificate belongs to no operator")
	// errRemoved: the operator was removed.
	errRemoved = cluster.NewRefusal("operator.removed", "operator: operator removed")
	// errNoRole: the certificate carries no role, or not the record's.
	errNoRole = cluster.NewRefusal("operator.no-role", "operator: certificate carries no valid role")
)

func randomSerial() (*big.Int, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	b[0] &= 0x7f
	b[0] |= 0x40
	return new(big.Int).SetBytes(b), nil
}

// newCA makes the operator CA's self-signed certificate for key.
func newCA(key crypto.Signer, now time.Time) ([]byte, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "inkan operator CA " + serial.Text(16)[:8]},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("operator: make CA certificate: %w", err)
	}
	return der, nil
}

// issue signs an operator certificate for the key of csr.
func issue(ca *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, id string, role Role, now time.Time, validity time.Duration) ([]byte, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	roleURI, _ := url.Parse(roleURIPrefix + string(role))
	idURI, _ := url.Parse(iduriPrefix + id)
	notAfter := now.Add(validity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{roleURI, idURI},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("operator: issue certificate for %s: %w", id, err)
	}
	return der, nil
}

// parseCSR checks a CSR's signature and returns its public key (P-256, P-384,
// Ed25519 or RSA of at least 2048 bits; what an approval may be signed with).
func parseCSR(der []byte) (crypto.PublicKey, error) {
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, fmt.Errorf("operator: CSR: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("operator: CSR signature: %w", err)
	}
	if _, err := approvalAlgorithm(csr.PublicKey); err != nil {
		return nil, fmt.Errorf("operator: CSR: %w", err)
	}
	return csr.PublicKey, nil
}

// roleOf reads the role a certificate carries: exactly one URI name beginning
// with RoleURIPrefix, naming a known role.
func roleOf(cert *x509.Certificate) (Role, error) {
	var found []Role
	for _, u := range cert.URIs {
		if r, ok := strings.CutPrefix(u.String(), roleURIPrefix); ok {
			found = append(found, Role(r))
		}
	}
	if len(found) != 1 || !found[0].valid() {
		return "", errNoRole
	}
	return found[0], nil
}

// Verify authenticates a client by the certificate chain its TLS handshake
// showed (tls.ConnectionState.PeerCertificates: the leaf first): the leaf must
// be signed by the operator CA in the state, be within its validity at now (and
// the CA too), belong to an operator record that is active, and carry that
// record's role. It refuses with a cluster.Refusal whose code says why:
// operator.no-certificate, operator.unknown-ca, operator.cert-expired,
// operator.unknown-operator, operator.removed, operator.no-role (and
// operator.no-ca before the bootstrap). Intermediates in chain are
// ignored: the operator CA issues operator certificates directly. Run it in the
// transaction of cluster.ViewCurrent for a request that changes state, so that a
// removal committed through another node is seen; View may lag.
func Verify(tx *bbolt.Tx, chain []*x509.Certificate, now time.Time) (Operator, error) {
	if len(chain) == 0 || chain[0] == nil {
		return Operator{}, errNoCertificate
	}
	leaf := chain[0]
	caDER, err := CACertificate(tx)
	if errors.Is(err, errNoCA) {
		return Operator{}, errUnknownCA
	}
	if err != nil {
		return Operator{}, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return Operator{}, fmt.Errorf("operator: CA certificate in the state: %w", err)
	}
	if !bytes.Equal(leaf.RawIssuer, ca.RawSubject) || leaf.CheckSignatureFrom(ca) != nil {
		return Operator{}, errUnknownCA
	}
	if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) || now.Before(ca.NotBefore) || now.After(ca.NotAfter) {
		return Operator{}, errCertExpired
	}
	if !hasClientAuth(leaf) {
		return Operator{}, fmt.Errorf("%w: not for client authentication", errUnknownCA)
	}
	fp := fingerprintOf(leaf.Raw)
	r, err := opByFingerprint(tx, fp[:])
	if err != nil {
		return Operator{}, err
	}
	if r == nil {
		return Operator{}, errUnknownOperator
	}
	if Status(r.Status) != Active {
		return Operator{}, errRemoved
	}
	role, err := roleOf(leaf)
	if err != nil || role != Role(r.Role) {
		return Operator{}, errNoRole
	}
	return r.operator(), nil
}

func hasClientAuth(c *x509.Certificate) bool {
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageClientAuth || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}
