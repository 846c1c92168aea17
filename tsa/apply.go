package tsa

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
)

// Command types of the TSA.
const (
	// commandKeyCreate records a TSA key made in the HSMs (tsa.key.created).
	commandKeyCreate = "tsa.key.create"
	// commandCertInstall records a TSA certificate the CA issued and makes it
	// the one tokens are signed under (tsa.cert.installed).
	commandCertInstall = "tsa.cert.install"
	// commandTokens logs a batch of tokens a node issued, by their SHA-256
	// (tsa.tokens): one command, and one audit leaf, per batch.
	commandTokens = "tsa.tokens"
)

// maxBatch bounds the tokens of one CommandTokens (a leaf of about 35 KB).
const maxBatch = 1024

// Refusals of the TSA's commands.
var (
	errKeyExists    = cluster.NewRefusal("tsa.key-exists", "tsa: a TSA key of that ID exists already")
	errCertMismatch = cluster.NewRefusal("tsa.cert-mismatch", "tsa: not a TSA certificate the CA issued for the key")
	errMalformed    = cluster.NewRefusal("tsa.malformed", "tsa: malformed command")
)

type (
	keyCreateBody struct {
		_         struct{} `cbor:",toarray"`
		ID        string
		Label     string
		Type      string
		PublicKey []byte
		Actor     string
		Request   string
	}
	certInstallBody struct {
		_       struct{} `cbor:",toarray"`
		Key     string
		Cert    []byte
		Chain   [][]byte
		Actor   string
		Request string
	}
	tokensBody struct {
		_      struct{} `cbor:",toarray"`
		Node   string
		Tokens [][]byte // SHA-256 of each token's DER (the ContentInfo)
	}
)

// Handlers returns the cluster handlers of the TSA's commands. Register them
// on every node, with ca.Handlers (a certificate's install reads the CA's
// record of it). Each also describes its applied commands for the audit log
// (Describe, see describedHandler).
func Handlers() []cluster.Handler {
	v1 := []uint{1}
	return []cluster.Handler{
		describedHandler{cluster.NewHandler(commandKeyCreate, v1, [][]byte{bucketKeys, bucketCerts, bucketCounts}, applyKeyCreate)},
		describedHandler{cluster.NewHandler(commandCertInstall, v1, nil, applyCertInstall)},
		describedHandler{cluster.NewHandler(commandTokens, v1, nil, applyTokens)},
	}
}

func malformed(format string, args ...any) error {
	return cluster.Refuse(fmt.Errorf("%w: "+format, append([]any{errMalformed}, args...)...))
}

// validActor: "system" or an operator, "sha256:" and 64 lower-case hex digits
// (the audit log's forms).
func validActor(a string) bool {
	if a == actorSystem {
		return true
	}
	h, ok := strings.CutPrefix(a, "sha256:")
	if !ok || len(h) != 64 {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil && strings.ToLower(h) == h
}

const actorSystem = "system"

// validID: 1-64 of a-z, 0-9 and '-' (key IDs, node IDs, request IDs).
func validID(s string) bool {
	if len(s) < 1 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// keyTypes are the key types a TSA key may have.
var keyTypes = []hsm.KeyType{hsm.ECP256, hsm.ECP384, hsm.RSA3072}

func applyKeyCreate(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b keyCreateBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	switch {
	case !validActor(b.Actor):
		return nil, malformed("actor %q", b.Actor)
	case !validID(b.ID), b.Label == "", len(b.Label) > 128, b.Request != "" && !validID(b.Request):
		return nil, malformed("key %q, label %q, request %q", b.ID, b.Label, b.Request)
	case !slices.Contains(keyTypes, hsm.KeyType(b.Type)):
		return nil, malformed("key type %q", b.Type)
	}
	if _, err := x509.ParsePKIXPublicKey(b.PublicKey); err != nil {
		return nil, malformed("public key: %v", err)
	}
	if existing, err := readKey(tx, b.ID); err != nil {
		return nil, err
	} else if existing != nil {
		return nil, cluster.Refuse(fmt.Errorf("%w: %s", errKeyExists, b.ID))
	}
	v, err := encMode.Marshal(keyRecord{ID: b.ID, Label: b.Label, Type: b.Type, PublicKey: b.PublicKey,
		Created: e.Time.UnixNano(), Actor: b.Actor, Request: b.Request})
	if err != nil {
		return nil, err
	}
	return nil, tx.Bucket(bucketKeys).Put([]byte(b.ID), v)
}

// maxChain bounds the certificates above a TSA certificate.
const maxChain = 8

func applyCertInstall(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b certInstallBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	if !validActor(b.Actor) || b.Request != "" && !validID(b.Request) || len(b.Chain) > maxChain {
		return nil, malformed("actor %q, request %q, %d chain certificates", b.Actor, b.Request, len(b.Chain))
	}
	k, err := readKey(tx, b.Key)
	if err != nil {
		return nil, err
	}
	if k == nil {
		return nil, cluster.Refuse(fmt.Errorf("%w: %q", ErrUnknownKey, b.Key))
	}
	cert, err := x509.ParseCertificate(b.Cert)
	if err != nil {
		return nil, malformed("certificate: %v", err)
	}
	for i, c := range b.Chain {
		if _, err := x509.ParseCertificate(c); err != nil {
			return nil, malformed("chain[%d]: %v", i, err)
		}
	}
	if err := checkTSACert(cert, k.PublicKey); err != nil {
		return nil, cluster.Refuse(fmt.Errorf("%w: %w", errCertMismatch, err))
	}
	// Only a certificate the CA issued through its pipeline: OCSP and CRLs
	// answer for it, and its issuance is on the audit record.
	rec, err := ca.Read(tx).Lookup(cert.SerialNumber)
	switch {
	case errors.Is(err, ca.ErrNotFound):
		return nil, cluster.Refuse(fmt.Errorf("%w: the CA has no record of serial %s", errCertMismatch, certserial.Format(cert.SerialNumber)))
	case err != nil:
		return nil, err
	case rec.Kind != ca.TimeStamping || rec.Status != ca.Good || !bytes.Equal(rec.DER, b.Cert):
		return nil, cluster.Refuse(fmt.Errorf("%w: the CA's record of serial %s is not this good time-stamping certificate", errCertMismatch, certserial.Format(cert.SerialNumber)))
	}
	serial := cert.SerialNumber.Bytes()
	v, err := encMode.Marshal(certRecord{Key: b.Key, DER: b.Cert, Chain: b.Chain, Installed: e.Time.UnixNano(),
		Actor: b.Actor, Request: b.Request})
	if err != nil {
		return nil, err
	}
	certs := tx.Bucket(bucketCerts)
	if err := certs.Put(serial, v); err != nil {
		return nil, err
	}
	return nil, certs.Put(keyCurrent, serial)
}

var oidEKU = asn1.ObjectIdentifier{2, 5, 29, 37}

// checkTSACert checks what RFC 3161 §2.3 asks of a TSA certificate, and that
// it is for the key (PKIX DER).
func checkTSACert(cert *x509.Certificate, key []byte) error {
	pub, err := x509.ParsePKIXPublicKey(key)
	if err != nil {
		return err
	}
	if !publicKeysEqual(pub, cert.PublicKey) {
		return errors.New("the certificate is not for the key")
	}
	critical := false
	for _, ext := range cert.Extensions {
		if ext.Id.Equal(oidEKU) {
			critical = ext.Critical
		}
	}
	if !critical || !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageTimeStamping}) || len(cert.UnknownExtKeyUsage) > 0 {
		return errors.New("the extended key usage is not timeStamping alone, critical")
	}
	if cert.KeyUsage&^(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) != 0 || cert.IsCA {
		return errors.New("the key usage is not digitalSignature or nonRepudiation")
	}
	return nil
}

func applyTokens(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b tokensBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	if !validID(b.Node) || len(b.Tokens) == 0 || len(b.Tokens) > maxBatch {
		return nil, malformed("node %q, %d tokens (want 1-%d)", b.Node, len(b.Tokens), maxBatch)
	}
	for i, h := range b.Tokens {
		if len(h) != sha256.Size {
			return nil, malformed("token %d: a hash of %d bytes", i, len(h))
		}
	}
	counts := tx.Bucket(bucketCounts)
	var n uint64
	if v := counts.Get([]byte(b.Node)); len(v) == 8 {
		n = binary.BigEndian.Uint64(v)
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], n+uint64(len(b.Tokens)))
	return nil, counts.Put([]byte(b.Node), v[:])
}

// Leaf types of the TSA's changes.
const (
	typeKeyCreated    = "tsa.key.created"
	typeCertInstalled = "tsa.cert.installed"
	typeTokens        = "tsa.tokens"
)

// describedHandler is a handler of the TSA's commands that also tells the
// audit log what they changed: node finds Describe on the handlers Handlers
// returns, as on ca's, and hands it to the audit hook.
type describedHandler struct{ cluster.Handler }

// Describe describes an applied command of the TSA for the audit log: one
// leaf per command, made of identifiers and hashes — a batch of tokens as the
// SHA-256 of each token's DER, so that an auditor holding a token can find it
// and prove it was issued. It reads the command's body only.
func (describedHandler) Describe(e cluster.Entry, _ []byte, leaf func(typ, actor string, serial *big.Int, data map[string]any)) error {
	switch e.Command.Type {
	case commandKeyCreate:
		var b keyCreateBody
		if err := e.Command.Decode(&b); err != nil {
			return err
		}
		data := map[string]any{"key": b.ID, "type": b.Type, "label": b.Label,
			"public_key": cluster.FingerprintOf(b.PublicKey).String()}
		if b.Request != "" {
			data["request"] = b.Request
		}
		leaf(typeKeyCreated, b.Actor, nil, data)
		return nil
	case commandCertInstall:
		var b certInstallBody
		if err := e.Command.Decode(&b); err != nil {
			return err
		}
		cert, err := x509.ParseCertificate(b.Cert)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(b.Cert)
		data := map[string]any{"key": b.Key, "cert_sha256": sum[:],
			"not_before": cert.NotBefore.UTC().Format(time.RFC3339), "not_after": cert.NotAfter.UTC().Format(time.RFC3339)}
		if b.Request != "" {
			data["request"] = b.Request
		}
		leaf(typeCertInstalled, b.Actor, cert.SerialNumber, data)
		return nil
	case commandTokens:
		var b tokensBody
		if err := e.Command.Decode(&b); err != nil {
			return err
		}
		leaf(typeTokens, actorSystem, nil, map[string]any{"node": b.Node, "count": len(b.Tokens), "tokens": b.Tokens})
		return nil
	}
	return fmt.Errorf("tsa: describe: %q is not a TSA command", e.Command.Type)
}
