package audit

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Checkpoint is a signed statement of the tree's head: the log called Origin had
// Size leaves with root hash Root at Time.
//
// Its signed body is plain text, four lines each ended by "\n":
//
//	<origin>
//	<size, decimal>
//	<root, standard base64>
//	time <UTC, RFC 3339 with milliseconds, e.g. 2026-11-24T23:33:39.123Z>
//
// The first three lines are the C2SP tlog-checkpoint note body; the fourth is an
// extension line. Signature is ECDSA P-256 over SHA-256 of the body, ASN.1 DER: what
// `openssl dgst -sha256 -sign` writes and `openssl dgst -sha256 -verify` reads.
type Checkpoint struct {
	Origin    string
	Size      uint64
	Root      []byte
	Time      time.Time
	Signature []byte
}

const checkpointTimeLayout = "2006-01-02T15:04:05.000Z07:00"

// ErrBadSignature: a checkpoint's signature does not verify with the audit key.
var ErrBadSignature = errors.New("audit: checkpoint signature does not verify")

// Body is the text the signature covers.
func (c Checkpoint) Body() []byte {
	var b bytes.Buffer
	b.WriteString(c.Origin)
	b.WriteByte('\n')
	b.WriteString(strconv.FormatUint(c.Size, 10))
	b.WriteByte('\n')
	b.WriteString(base64.StdEncoding.EncodeToString(c.Root))
	b.WriteByte('\n')
	b.WriteString("time ")
	b.WriteString(c.Time.UTC().Format(checkpointTimeLayout))
	b.WriteByte('\n')
	return b.Bytes()
}

// ParseCheckpoint reads a checkpoint body and its detached signature. It accepts only
// the exact text Body writes; it does not check the signature (Verify does).
func ParseCheckpoint(body, sig []byte) (Checkpoint, error) {
	s := string(body)
	if !strings.HasSuffix(s, "\n") {
		return Checkpoint{}, errors.New("audit: checkpoint: body does not end with a newline")
	}
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) != 4 {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint: %d lines, want 4", len(lines))
	}
	c := Checkpoint{Origin: lines[0], Signature: sig}
	if err := CheckOrigin(c.Origin); err != nil {
		return Checkpoint{}, err
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil || strconv.FormatUint(size, 10) != lines[1] {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint: size %q", lines[1])
	}
	c.Size = size
	root, err := base64.StdEncoding.Strict().DecodeString(lines[2])
	if err != nil || len(root) != sha256.Size {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint: root %q: want base64 of 32 bytes", lines[2])
	}
	c.Root = root
	ts, ok := strings.CutPrefix(lines[3], "time ")
	if !ok {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint: line 4 %q: want time <RFC 3339>", lines[3])
	}
	t, err := time.Parse(checkpointTimeLayout, ts)
	if err != nil || t.UTC().Format(checkpointTimeLayout) != ts {
		return Checkpoint{}, fmt.Errorf("audit: checkpoint: time %q: want UTC with milliseconds, e.g. 2026-11-24T23:33:39.123Z", ts)
	}
	c.Time = t.UTC()
	return c, nil
}

// CheckOrigin checks a log's name (a checkpoint's first line): 1-255 bytes of
// UTF-8, no control characters, no surrounding space.
func CheckOrigin(o string) error {
	if o == "" || len(o) > 255 || !utf8.ValidString(o) || strings.TrimSpace(o) != o {
		return fmt.Errorf("audit: origin %q: want 1-255 bytes of UTF-8 without surrounding space", o)
	}
	for _, r := range o {
		if unicode.IsControl(r) {
			return fmt.Errorf("audit: origin %q: control character", o)
		}
	}
	return nil
}

// Sign signs the checkpoint with the audit key, which must be ECDSA P-256 (in
// production a key in the HSM). The signature is checked before it is kept, so a
// faulty signer cannot leave a checkpoint that nobody can verify.
//
// There is no context: a crypto.Signer cannot be cancelled; the HSM session bounds it.
func (c *Checkpoint) Sign(s crypto.Signer) error {
	pub, err := auditKey(s.Public())
	if err != nil {
		return err
	}
	digest := sha256.Sum256(c.Body())
	sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return fmt.Errorf("audit: sign checkpoint %d: %w", c.Size, err)
	}
	if !ecdsa.VerifyASN1(pub, digest[:], sig) {
		return fmt.Errorf("audit: sign checkpoint %d: the signer's signature does not verify", c.Size)
	}
	c.Signature = sig
	return nil
}

// Verify checks the signature with the audit public key.
func (c Checkpoint) Verify(pub crypto.PublicKey) error {
	k, err := auditKey(pub)
	if err != nil {
		return err
	}
	digest := sha256.Sum256(c.Body())
	if !ecdsa.VerifyASN1(k, digest[:], c.Signature) {
		return ErrBadSignature
	}
	return nil
}

// CheckKey checks that pub can be the audit key: ECDSA P-256.
func CheckKey(pub crypto.PublicKey) error {
	_, err := auditKey(pub)
	return err
}

func auditKey(pub crypto.PublicKey) (*ecdsa.PublicKey, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return nil, fmt.Errorf("audit: audit key is %T, want ECDSA P-256", pub)
	}
	return k, nil
}

// MarshalPublicKey is the audit public key as a PEM "PUBLIC KEY" block, the form
// openssl reads.
func MarshalPublicKey(pub crypto.PublicKey) ([]byte, error) {
	if _, err := auditKey(pub); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("audit: public key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublicKey reads an audit public key written by MarshalPublicKey (or by
// `openssl pkey -pubout`).
func ParsePublicKey(pemBytes []byte) (crypto.PublicKey, error) {
	blk, _ := pem.Decode(pemBytes)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		return nil, errors.New("audit: public key: no PEM PUBLIC KEY block")
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if err != nil {
		return nil, fmt.Errorf("audit: public key: %w", err)
	}
	if _, err := auditKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// KeyFingerprint names a public key by the SHA-256 of its PKIX DER, so an auditor can
// compare it with the one published out of band.
func KeyFingerprint(pub crypto.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "unknown"
	}
	sum := sha256.Sum256(der)
	return "sha256:" + hex.EncodeToString(sum[:])
}
