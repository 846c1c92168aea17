package cluster

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// KeyVault is what cluster needs of the node's HSM. cluster never sees key
// material: it signs through crypto.Signer and moves replicated keys only
// as opaque blobs wrapped for another node's HSM (NewHSMVault is it on a
// PKCS#11 token; a vendor's cloning would fit the same shape).
type KeyVault interface {
	// NodeKey returns this node's TLS key, made on first use and never
	// exported.
	NodeKey(ctx context.Context) (crypto.Signer, error)
	// ReplicatedKey returns the named key that every voter holds (the
	// cluster CA key is CAKeyName), making it first — exportable only
	// wrapped — if create is set.
	ReplicatedKey(ctx context.Context, name string, create bool) (crypto.Signer, error)
	// TransportKey returns the public half of this node's standing
	// transport key, encoded for a sender's ExportKey, making the key pair
	// first if there is none. The node keeps it: operators approve its
	// fingerprint when the node joins, and every key sent to the node is
	// wrapped for it and for nothing else.
	TransportKey(ctx context.Context) ([]byte, error)
	// TransportKeyFingerprint is the fingerprint of a transport key as a
	// TransportKey encoded it: the SHA-256 of its SubjectPublicKeyInfo. It is
	// the key ExportKey wraps for, given the same bytes.
	TransportKeyFingerprint(transportKey []byte) (KeyFingerprint, error)
	// ExportKey wraps the named replicated key for the receiver's
	// transport key (as its TransportKey encoded it).
	ExportKey(ctx context.Context, name string, transportKey []byte) ([]byte, error)
	// ImportKey unwraps a blob made by a peer's ExportKey into this node's
	// HSM as the replicated key name, itself exportable only wrapped (this
	// voter may lead and admit the next one).
	ImportKey(ctx context.Context, name string, blob []byte) error
}

// KeyFingerprint names a public key: the SHA-256 of its SubjectPublicKeyInfo
// (DER). Operators compare them in the form String gives.
type KeyFingerprint [32]byte

// FingerprintOf is the fingerprint of a public key's SubjectPublicKeyInfo.
func FingerprintOf(spki []byte) KeyFingerprint { return sha256.Sum256(spki) }

// fingerprintKey is the fingerprint of a public key.
func fingerprintKey(pub crypto.PublicKey) (KeyFingerprint, error) {
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return KeyFingerprint{}, err
	}
	return FingerprintOf(spki), nil
}

// String is "sha256:" and 64 lower-case hex digits.
func (f KeyFingerprint) String() string { return "sha256:" + hex.EncodeToString(f[:]) }

// IsZero reports whether f names no key.
func (f KeyFingerprint) IsZero() bool { return f == KeyFingerprint{} }

// errFingerprint: a key fingerprint not in the form String gives.
var errFingerprint = errors.New(`cluster: key fingerprint: want "sha256:" and 64 lower-case hex digits`)

// ParseKeyFingerprint reads the form String gives, and nothing else.
func ParseKeyFingerprint(s string) (KeyFingerprint, error) {
	var f KeyFingerprint
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return f, errFingerprint
	}
	if _, err := hex.Decode(f[:], []byte(h)); err != nil {
		return f, errFingerprint
	}
	return f, nil
}

// CAKeyName names the cluster's internal CA key among the replicated keys.
const CAKeyName = "cluster-ca"

const (
	caValidity   = 20 * 365 * 24 * time.Hour
	nodeValidity = 5 * 365 * 24 * time.Hour
	caFile       = "cluster-ca.pem"
	nodeCertFile = "node.pem"
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

// newClusterCA makes the self-signed internal CA certificate for key.
func newClusterCA(key crypto.Signer, now time.Time) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "inkan cluster CA " + serial.Text(16)[:8]},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("cluster: make CA certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// issueNodeCert signs a node certificate: CN is the node ID, OU its role.
func issueNodeCert(ca *x509.Certificate, caKey crypto.Signer, pub crypto.PublicKey, id string, role Role, now time.Time) ([]byte, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id, OrganizationalUnit: []string{string(role)}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(nodeValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, pub, caKey)
	if err != nil {
		return nil, fmt.Errorf("cluster: issue node certificate for %s: %w", id, err)
	}
	return der, nil
}

// caFingerprint is the SHA-256 of the CA's SubjectPublicKeyInfo.
func caFingerprint(ca *x509.Certificate) []byte {
	h := sha256.Sum256(ca.RawSubjectPublicKeyInfo)
	return h[:]
}

func writePEM(path, typ string, der []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		return err
	}
	f, err := os.Open(tmp)
	if err == nil {
		err = f.Sync()
		f.Close()
	}
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("cluster: %s: no certificate", path)
	}
	return x509.ParseCertificate(blk.Bytes)
}

// loadCredentials reads the node's certificates from dir and binds them to
// its HSM key.
func loadCredentials(ctx context.Context, dir string, vault KeyVault) (*credentials, error) {
	ca, err := readCert(filepath.Join(dir, caFile))
	if err != nil {
		return nil, fmt.Errorf("cluster: read cluster CA: %w", err)
	}
	node, err := readCert(filepath.Join(dir, nodeCertFile))
	if err != nil {
		return nil, fmt.Errorf("cluster: read node certificate: %w", err)
	}
	key, err := vault.NodeKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("cluster: node key: %w", err)
	}
	return makeCredentials(ca, node, key)
}

func makeCredentials(ca, node *x509.Certificate, key crypto.Signer) (*credentials, error) {
	if !publicKeysEqual(node.PublicKey, key.Public()) {
		return nil, errors.New("cluster: node certificate does not match the node key")
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	if err := verifyNodeCert([]*x509.Certificate{node}, pool, x509.ExtKeyUsageClientAuth); err != nil {
		return nil, err
	}
	role := roleOf(node)
	return &credentials{
		ca:     ca,
		pool:   pool,
		nodeID: node.Subject.CommonName,
		role:   role,
		cert:   tlsCertificate(node, ca, key),
	}, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ae, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ae.Equal(b)
}

func tlsCertificate(node, ca *x509.Certificate, key crypto.Signer) tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{node.Raw, ca.Raw}, PrivateKey: key, Leaf: node}
}

// roleOf reads the role a node certificate was issued for (its OU).
func roleOf(cert *x509.Certificate) Role {
	if len(cert.Subject.OrganizationalUnit) == 1 && Role(cert.Subject.OrganizationalUnit[0]) == Voter {
		return Voter
	}
	return Nonvoter
}
