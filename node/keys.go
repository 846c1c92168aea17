package node

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/inkan-pki/inkan/hsm"
)

// Keys the node keeps in its HSM besides the cluster's own (node key, cluster
// CA key) and the services' (CA keys, the audit key).
const (
	// linkKeyName is the replicated key the cluster's keyed hashes come from:
	// the link of a derived certificate to its JPKI certificate, the person
	// hash, the pseudonym in authentication certificates. Every voter holds it
	// (wrapped transfer at join, like the CA key); no hash key is ever stored
	// outside the HSM in clear.
	linkKeyName = "link-key"
	// responderKeyName is this node's own OCSP responder key; it never leaves
	// the node's HSM.
	responderKeyName = "ocsp-responder"
)

// ensureLinkKey makes the link key on the cluster's first node. It is RSA
// because an RSA PKCS#1 v1.5 signature is deterministic: every voter's copy
// of the key signs the same label to the same bytes, which deriveSecrets turns
// into the same hash keys on every node.
func ensureLinkKey(ctx context.Context, tok *hsm.Token) error {
	_, err := tok.Signer(ctx, hsm.URI{Object: linkKeyName, Type: "private"})
	if errors.Is(err, hsm.ErrKeyNotFound) {
		_, err = tok.GenerateKey(ctx, hsm.KeySpec{Type: hsm.RSA2048, Label: linkKeyName, Wrappable: true})
	}
	if err != nil {
		return fmt.Errorf("node: link key: %w", err)
	}
	return nil
}

// hashSecrets are the keys of the cluster's keyed hashes, the same on every
// voter. They live in the process's memory only.
type hashSecrets struct {
	link      []byte // enroll.Config.LinkKey: links and person hashes
	pseudonym []byte // the pseudonyms authentication certificates carry
}

// deriveSecrets signs a fixed label with the link key and derives the hash
// keys from the signature (hsm.ErrKeyNotFound if the node lacks the key).
func deriveSecrets(ctx context.Context, tok *hsm.Token) (hashSecrets, error) {
	key, err := tok.Signer(ctx, hsm.URI{Object: linkKeyName, Type: "private"})
	if err != nil {
		return hashSecrets{}, err
	}
	if _, ok := key.Public().(*rsa.PublicKey); !ok {
		return hashSecrets{}, fmt.Errorf("node: link key %s is not an RSA key", linkKeyName)
	}
	label := sha256.Sum256([]byte("inkan/link-key/v1"))
	sig, err := key.Sign(rand.Reader, label[:], crypto.SHA256)
	if err != nil {
		return hashSecrets{}, fmt.Errorf("node: link key: %w", err)
	}
	master := sha256.Sum256(sig)
	derive := func(purpose string) []byte {
		m := hmac.New(sha256.New, master[:])
		m.Write([]byte(purpose))
		return m.Sum(nil)
	}
	return hashSecrets{link: derive("inkan/link"), pseudonym: derive("inkan/pseudonym")}, nil
}

// responderKey returns this node's OCSP responder key, making it on first use.
func responderKey(ctx context.Context, tok *hsm.Token) (crypto.Signer, error) {
	key, err := tok.Signer(ctx, hsm.URI{Object: responderKeyName, Type: "private"})
	if errors.Is(err, hsm.ErrKeyNotFound) {
		key, err = tok.GenerateKey(ctx, hsm.KeySpec{Type: hsm.ECP256, Label: responderKeyName})
	}
	if err != nil {
		return nil, fmt.Errorf("node: OCSP responder key: %w", err)
	}
	return key, nil
}
