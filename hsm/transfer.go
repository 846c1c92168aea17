package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// keyTransfer moves a private key from one token to another without the key ever
// being in clear outside a token. The receiver makes a transportKey and sends its
// public half to the sender; the sender Exports the key wrapped for it; the
// receiver Imports the wrappedKey. transportKey and wrappedKey marshal to a stable,
// versioned encoding, so the steps can run on different machines; Token's
// TransportKey, ExportKey and ImportKey are the three steps on those bytes, which
// is all another package needs of them.
//
// wrapTransfer implements it with standard PKCS#11 wrapping; an HSM with vendor
// cloning (a security world, a backup domain) would implement it with that.
type keyTransfer interface {
	// NewTransportKey makes a key pair on the receiving token for keys to be
	// wrapped to.
	NewTransportKey(ctx context.Context) (*transportKey, error)
	// Export wraps the private key that key names for the receiver's transport key.
	Export(ctx context.Context, key URI, to *transportKey) (*wrappedKey, error)
	// Import unwraps w into the receiving token, with the sender's label and ID,
	// and returns its Signer.
	Import(ctx context.Context, w *wrappedKey, opts importOptions) (*Signer, error)
	// DeleteTransportKey destroys a transport key once the keys sent to it are in.
	DeleteTransportKey(ctx context.Context, tp *transportKey) error
}

// importOptions are the receiver's choices for an imported key.
type importOptions struct {
	// Wrappable keeps the imported key extractable (only wrapped; it stays
	// sensitive) for onward transfer. By default it can never leave the token.
	Wrappable bool
}

// transportKey is the public half of a receiver's RSA transport key, named by the
// ID of its private half on the receiving token.
type transportKey struct {
	ID     []byte
	Public *rsa.PublicKey
}

// wrappedKey is a private key wrapped for one transport key. Version 1 means: KEK
// is an AES-256 key wrapped with CKM_RSA_PKCS_OAEP (SHA-1, MGF1-SHA-1, no label)
// under the transport key; Key is the private key (PKCS#8, as the token wraps it)
// wrapped with CKM_AES_KEY_WRAP_PAD (RFC 5649) under the KEK.
type wrappedKey struct {
	Type      KeyType
	Label     string
	ID        []byte
	Public    []byte // PKIX DER of the public key
	Transport []byte // ID of the transport key on the receiving token
	KEK       []byte
	Key       []byte
}

// transferVersion is the encoding version of transportKey and wrappedKey.
const transferVersion = 1

// transportLabelPrefix marks transport keys, so DeleteTransportKey cannot be
// pointed at a signing key.
const transportLabelPrefix = "inkan-transport-"

// transportBits: 3072-bit RSA (128-bit strength), to match the AES-256 KEK and
// P-256 keys it carries better than 2048 would.
const transportBits = 3072

// Limits on decoded fields, so a hostile blob cannot make the token chew on much.
const (
	maxBlobField = 16 << 10
	maxLabel     = 256
)

type transportKeyJSON struct {
	V      int    `json:"v"`
	ID     []byte `json:"id"`
	Public []byte `json:"public"` // PKIX DER
}

type wrappedKeyJSON struct {
	V         int     `json:"v"`
	Type      KeyType `json:"type"`
	Label     string  `json:"label"`
	ID        []byte  `json:"id"`
	Public    []byte  `json:"public"`
	Transport []byte  `json:"transport"`
	KEK       []byte  `json:"kek"`
	Key       []byte  `json:"key"`
}

// MarshalBinary encodes tp as versioned JSON: {"v":1,"id":…,"public":…} with
// base64 byte fields and the public key as PKIX DER.
func (tp *transportKey) MarshalBinary() ([]byte, error) {
	if tp.Public == nil || len(tp.ID) == 0 {
		return nil, errors.New("hsm: marshal transport key: incomplete")
	}
	der, err := x509.MarshalPKIXPublicKey(tp.Public)
	if err != nil {
		return nil, fmt.Errorf("hsm: marshal transport key: %w", err)
	}
	return json.Marshal(transportKeyJSON{V: transferVersion, ID: tp.ID, Public: der})
}

// UnmarshalBinary decodes what MarshalBinary wrote, refusing other versions.
func (tp *transportKey) UnmarshalBinary(b []byte) error {
	var j transportKeyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("hsm: transport key: %w", err)
	}
	if j.V != transferVersion {
		return fmt.Errorf("hsm: transport key: version %d, want %d", j.V, transferVersion)
	}
	if len(j.ID) == 0 || len(j.ID) > maxLabel {
		return errors.New("hsm: transport key: bad ID")
	}
	pub, err := x509.ParsePKIXPublicKey(j.Public)
	if err != nil {
		return fmt.Errorf("hsm: transport key: %w", err)
	}
	rpub, ok := pub.(*rsa.PublicKey)
	if !ok || rpub.N.BitLen() < 2048 {
		return errors.New("hsm: transport key: not an RSA key of at least 2048 bits")
	}
	*tp = transportKey{ID: j.ID, Public: rpub}
	return nil
}

// Errors of key transfer, for the tests to tell apart (export_test.go).
var (
	errUnextractable    = errors.New("non-extractable and can never leave the token")
	errNotWrappable     = errors.New("cannot wrap")
	errKeyMismatch      = errors.New("self-test: the unwrapped key does not match the public key sent with it")
	errWrappedKey       = errors.New("hsm: wrapped key")
	errTransportKeyName = errors.New("transport key name")
)

// MarshalBinary encodes w as versioned JSON with base64 byte fields:
// {"v":1,"type":…,"label":…,"id":…,"public":…,"transport":…,"kek":…,"key":…}.
func (w *wrappedKey) MarshalBinary() ([]byte, error) {
	if err := w.check(); err != nil {
		return nil, fmt.Errorf("hsm: marshal wrapped key: %w", err)
	}
	return json.Marshal(wrappedKeyJSON{V: transferVersion, Type: w.Type, Label: w.Label, ID: w.ID,
		Public: w.Public, Transport: w.Transport, KEK: w.KEK, Key: w.Key})
}

// UnmarshalBinary decodes what MarshalBinary wrote, refusing other versions and
// incomplete or oversized blobs.
func (w *wrappedKey) UnmarshalBinary(b []byte) error {
	var j wrappedKeyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return fmt.Errorf("%w: %w", errWrappedKey, err)
	}
	if j.V != transferVersion {
		return fmt.Errorf("%w: version %d, want %d", errWrappedKey, j.V, transferVersion)
	}
	v := wrappedKey{Type: j.Type, Label: j.Label, ID: j.ID, Public: j.Public, Transport: j.Transport, KEK: j.KEK, Key: j.Key}
	if err := v.check(); err != nil {
		return fmt.Errorf("%w: %w", errWrappedKey, err)
	}
	*w = v
	return nil
}

func (w *wrappedKey) check() error {
	switch {
	case w.Label == "" || len(w.Label) > maxLabel:
		return errors.New("label missing or too long")
	case len(w.ID) == 0 || len(w.ID) > maxLabel:
		return errors.New("ID missing or too long")
	case len(w.Transport) == 0 || len(w.Transport) > maxLabel:
		return errors.New("transport key ID missing or too long")
	case len(w.KEK) == 0 || len(w.KEK) > maxBlobField || len(w.Key) == 0 || len(w.Key) > maxBlobField:
		return errors.New("wrapped KEK or key missing or too long")
	}
	pub, err := x509.ParsePKIXPublicKey(w.Public)
	if err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	switch kt := publicKeyType(pub); {
	case kt == "":
		return fmt.Errorf("public key of type %T", pub)
	case kt != w.Type:
		return fmt.Errorf("public key is %s, blob says %q", kt, w.Type)
	}
	return nil
}

// publicKeyType names the KeyType of a Go public key, or "" for one inkan does not use.
func publicKeyType(pub crypto.PublicKey) KeyType {
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		switch p.Curve.Params().Name {
		case "P-256":
			return ECP256
		case "P-384":
			return ECP384
		case "P-521":
			return "ec-p521"
		}
	case *rsa.PublicKey:
		return KeyType(fmt.Sprintf("rsa-%d", p.N.BitLen()))
	case ed25519.PublicKey:
		return Ed25519
	}
	return ""
}

// wrapTransfer is the keyTransfer of standard PKCS#11 key wrapping (see wrappedKey).
// The exported key must have been made Wrappable.
type wrapTransfer struct{ t *Token }

// newWrapTransfer returns the wrapTransfer for tok, which plays sender or receiver.
func newWrapTransfer(tok *Token) *wrapTransfer { return &wrapTransfer{t: tok} }

var _ keyTransfer = (*wrapTransfer)(nil)

// TransportKey returns the public half of the token's standing transport key
// named name (see wrapTransfer.StandingTransportKey), encoded for a sender's
// ExportKey, making the key pair first if there is none. Its private half may
// only unwrap and never leaves the token.
func (t *Token) TransportKey(ctx context.Context, name string) ([]byte, error) {
	tp, err := newWrapTransfer(t).StandingTransportKey(ctx, name)
	if err != nil {
		return nil, err
	}
	return tp.MarshalBinary()
}

// TransportPublicKey is the RSA public key of a transport key to as TransportKey
// encoded it: the key that ExportKey wraps for, given the same bytes, so the
// one whose fingerprint operators approve.
func TransportPublicKey(to []byte) (*rsa.PublicKey, error) {
	var tp transportKey
	if err := tp.UnmarshalBinary(to); err != nil {
		return nil, err
	}
	return tp.Public, nil
}

// ExportKey wraps the private key that key names (made Wrappable) for the
// receiver's transport key to (as its TransportKey encoded it) and returns the
// wrapped key encoded for the receiver's ImportKey. Only the token holding that
// transport key can unwrap it.
func (t *Token) ExportKey(ctx context.Context, key URI, to []byte) ([]byte, error) {
	var tp transportKey
	if err := tp.UnmarshalBinary(to); err != nil {
		return nil, err
	}
	wk, err := newWrapTransfer(t).Export(ctx, key, &tp)
	if err != nil {
		return nil, err
	}
	return wk.MarshalBinary()
}

// ImportKey unwraps a key that a sender's ExportKey wrapped for this token's
// transport key into the token, with the sender's label and ID, and returns
// its Signer. The blob must name the key label (else errWrappedKey), so a
// key sent under one name is never taken in as another. The key stays
// sensitive; it can leave again, only wrapped, if wrappable (for onward
// transfer), and never otherwise.
func (t *Token) ImportKey(ctx context.Context, label string, blob []byte, wrappable bool) (*Signer, error) {
	var wk wrappedKey
	if err := wk.UnmarshalBinary(blob); err != nil {
		return nil, err
	}
	if wk.Label != label {
		return nil, fmt.Errorf("%w: it is %q, not %q", errWrappedKey, wk.Label, label)
	}
	return newWrapTransfer(t).Import(ctx, &wk, importOptions{Wrappable: wrappable})
}

func oaep() []*pkcs11.Mechanism {
	// SoftHSM 2.6.1 does OAEP with SHA-1 only (SHA-256 gives CKR_ARGUMENTS_BAD).
	// Only the 32-byte KEK travels under it, where SHA-1 in OAEP is still sound.
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP,
		pkcs11.NewOAEPParams(pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1, pkcs11.CKZ_DATA_SPECIFIED, nil))}
}

func kwp() []*pkcs11.Mechanism {
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}
}

// NewTransportKey makes an RSA key pair on the token whose private half may only
// unwrap (sensitive, non-extractable, token object so it outlives sessions).
func (w *wrapTransfer) NewTransportKey(ctx context.Context) (*transportKey, error) {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	return w.newTransportKey(ctx, id, transportLabelPrefix+hex.EncodeToString(id[:8]))
}

// StandingTransportKey returns the token's transport key labelled
// "inkan-transport-" + name, making it first if there is none. It is a node's
// standing key for receiving: its fingerprint is approved once, and every key
// sent to the node later is wrapped for it and nothing else. Delete it with
// DeleteTransportKey like any other.
func (w *wrapTransfer) StandingTransportKey(ctx context.Context, name string) (*transportKey, error) {
	t := w.t
	label := transportLabelPrefix + name
	if name == "" || len(label) > maxLabel {
		return nil, fmt.Errorf("hsm: %w %q: want 1-%d bytes", errTransportKeyName, name, maxLabel-len(transportLabelPrefix))
	}
	t.keyMu.Lock()
	defer t.keyMu.Unlock()
	var tp *transportKey
	err := t.pool.do(ctx, func(s *session) error {
		p11 := t.pool.p11
		pubs, err := t.find(s, []*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), attr(pkcs11.CKA_LABEL, label)}, 2)
		if err != nil || len(pubs) == 0 {
			return err
		}
		if len(pubs) > 1 {
			return fmt.Errorf("two transport keys labelled %q", label)
		}
		a, err := p11.GetAttributeValue(s.h, pubs[0], []*pkcs11.Attribute{
			attr(pkcs11.CKA_MODULUS, nil), attr(pkcs11.CKA_PUBLIC_EXPONENT, nil), attr(pkcs11.CKA_ID, nil)})
		if err != nil {
			return err
		}
		privs, err := t.find(s, []*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), attr(pkcs11.CKA_ID, a[2].Value),
			attr(pkcs11.CKA_LABEL, label)}, 2)
		if err != nil {
			return err
		}
		if len(privs) != 1 {
			return fmt.Errorf("transport key %q has no private half: %w", label, ErrKeyNotFound)
		}
		rpub, _, err := rsaPublic(a[0].Value, a[1].Value)
		if err != nil {
			return err
		}
		tp = &transportKey{ID: a[2].Value, Public: rpub.(*rsa.PublicKey)}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: transport key %q on token %q: %w", label, t.info.Label, err)
	}
	if tp != nil {
		return tp, nil
	}
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	return w.newTransportKey(ctx, id, label)
}

func (w *wrapTransfer) newTransportKey(ctx context.Context, id []byte, label string) (*transportKey, error) {
	t := w.t
	pubT := []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		attr(pkcs11.CKA_MODULUS_BITS, transportBits), attr(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		attr(pkcs11.CKA_TOKEN, true), attr(pkcs11.CKA_PRIVATE, false), attr(pkcs11.CKA_ID, id), attr(pkcs11.CKA_LABEL, label),
		attr(pkcs11.CKA_WRAP, true), attr(pkcs11.CKA_ENCRYPT, false), attr(pkcs11.CKA_VERIFY, false),
	}
	privT := []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		attr(pkcs11.CKA_TOKEN, true), attr(pkcs11.CKA_PRIVATE, true), attr(pkcs11.CKA_ID, id), attr(pkcs11.CKA_LABEL, label),
		attr(pkcs11.CKA_SENSITIVE, true), attr(pkcs11.CKA_EXTRACTABLE, false),
		attr(pkcs11.CKA_UNWRAP, true), attr(pkcs11.CKA_DECRYPT, false), attr(pkcs11.CKA_SIGN, false), attr(pkcs11.CKA_DERIVE, false),
	}
	var tp *transportKey
	err := t.creating(ctx, "transport key generation", label, func(s *session) error {
		pub, _, err := t.pool.p11.GenerateKeyPair(s.h,
			[]*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}, pubT, privT)
		if err != nil {
			return err
		}
		a, err := t.pool.p11.GetAttributeValue(s.h, pub, []*pkcs11.Attribute{attr(pkcs11.CKA_MODULUS, nil), attr(pkcs11.CKA_PUBLIC_EXPONENT, nil)})
		if err != nil {
			return err
		}
		rpub, _, err := rsaPublic(a[0].Value, a[1].Value)
		if err != nil {
			return err
		}
		tp = &transportKey{ID: id, Public: rpub.(*rsa.PublicKey)}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: make transport key on token %q: %w", t.info.Label, err)
	}
	t.log.Info("hsm: transport key made", "token", t.info.Label, "label", label)
	return tp, nil
}

// DeleteTransportKey destroys the transport key pair tp names. It refuses keys that
// NewTransportKey did not make.
func (w *wrapTransfer) DeleteTransportKey(ctx context.Context, tp *transportKey) error {
	t := w.t
	err := t.pool.do(ctx, func(s *session) error {
		for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY} {
			objs, err := t.find(s, []*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, class), attr(pkcs11.CKA_ID, tp.ID)}, 4)
			if err != nil {
				return err
			}
			for _, o := range objs {
				a, err := t.pool.p11.GetAttributeValue(s.h, o, []*pkcs11.Attribute{attr(pkcs11.CKA_LABEL, nil)})
				if err != nil {
					return err
				}
				if !strings.HasPrefix(string(a[0].Value), transportLabelPrefix) {
					return fmt.Errorf("key %q is not a transport key", a[0].Value)
				}
				if err := t.pool.p11.DestroyObject(s.h, o); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("hsm: delete transport key %x on token %q: %w", tp.ID, t.info.Label, err)
	}
	return nil
}

// Export wraps the private key named by key for the transport key to: it loads
// to's public key into a session object, makes a one-off AES-256 KEK in the
// token, wraps the KEK under to (RSA-OAEP) and the key under the KEK
// (AES key wrap with padding), and destroys the KEK and the loaded public key.
func (w *wrapTransfer) Export(ctx context.Context, key URI, to *transportKey) (*wrappedKey, error) {
	t := w.t
	if to == nil || to.Public == nil {
		return nil, errors.New("hsm: export: no transport key")
	}
	k, err := t.signer(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("hsm: export %s: %w", key, err)
	}
	pkix, err := x509.MarshalPKIXPublicKey(k.pub)
	if err != nil {
		return nil, fmt.Errorf("hsm: export %s: %w", k.uri, err)
	}
	trusted := t.canTrustKEK(ctx)
	out := &wrappedKey{Type: k.typ, Label: k.uri.Object, ID: k.uri.ID, Public: pkix, Transport: to.ID}
	err = t.pool.do(ctx, func(s *session) error {
		p11 := t.pool.p11
		found, err := t.find(s, k.find, 2)
		if err != nil {
			return err
		}
		if len(found) != 1 {
			return ErrKeyNotFound
		}
		priv := found[0]
		wrapPub, err := p11.CreateObject(s.h, []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
			attr(pkcs11.CKA_TOKEN, false), attr(pkcs11.CKA_PRIVATE, false),
			attr(pkcs11.CKA_MODULUS, to.Public.N.Bytes()), attr(pkcs11.CKA_PUBLIC_EXPONENT, bigEndian(to.Public.E)),
			attr(pkcs11.CKA_WRAP, true), attr(pkcs11.CKA_ENCRYPT, false), attr(pkcs11.CKA_VERIFY, false),
		})
		if err != nil {
			return fmt.Errorf("load transport public key: %w", err)
		}
		defer p11.DestroyObject(s.h, wrapPub)
		kek, err := p11.GenerateKey(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, kekTemplate(true, trusted))
		if err != nil {
			return fmt.Errorf("make KEK: %w", w.mechErr(err, pkcs11.CKM_AES_KEY_GEN))
		}
		defer p11.DestroyObject(s.h, kek)
		if out.KEK, err = p11.WrapKey(s.h, oaep(), wrapPub, kek); err != nil {
			return fmt.Errorf("wrap KEK: %w", w.mechErr(err, pkcs11.CKM_RSA_PKCS_OAEP))
		}
		if out.Key, err = p11.WrapKey(s.h, kwp(), kek, priv); err != nil {
			switch rv(err) {
			case pkcs11.CKR_KEY_UNEXTRACTABLE:
				return fmt.Errorf("the key was made %w: %w", errUnextractable, err)
			case pkcs11.CKR_KEY_NOT_WRAPPABLE:
				return fmt.Errorf("token %q %w %s keys (or not under this KEK): %w", t.info.Label, errNotWrappable, k.typ, err)
			}
			return fmt.Errorf("wrap key: %w", w.mechErr(err, pkcs11.CKM_AES_KEY_WRAP_PAD))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: export %s: %w", k.uri, err)
	}
	t.log.Info("hsm: key exported wrapped", "token", t.info.Label, "key", k.uri.String())
	return out, nil
}

// Import unwraps w: the KEK under the transport key (a session object, destroyed
// after), then the private key under the KEK as a sensitive token object with w's
// label and ID, non-extractable unless opts.Wrappable. It recreates the public key
// object from w.Public, and signs once and verifies under w.Public, so a key that
// does not match its public key is never left on the token.
func (w *wrapTransfer) Import(ctx context.Context, wk *wrappedKey, opts importOptions) (*Signer, error) {
	t := w.t
	if err := wk.check(); err != nil {
		return nil, fmt.Errorf("hsm: import: %w", err)
	}
	pub, _ := x509.ParsePKIXPublicKey(wk.Public) // parsed by check
	keyType, pubT, err := publicTemplate(pub)
	if err != nil {
		return nil, fmt.Errorf("hsm: import %q: %w", wk.Label, err)
	}
	common := []*pkcs11.Attribute{attr(pkcs11.CKA_TOKEN, true), attr(pkcs11.CKA_ID, wk.ID), attr(pkcs11.CKA_LABEL, wk.Label)}
	pubT = append(pubT, common...)
	privT := append([]*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), attr(pkcs11.CKA_KEY_TYPE, keyType),
		attr(pkcs11.CKA_PRIVATE, true), attr(pkcs11.CKA_SENSITIVE, true), attr(pkcs11.CKA_EXTRACTABLE, opts.Wrappable),
		attr(pkcs11.CKA_SIGN, true), attr(pkcs11.CKA_DECRYPT, false), attr(pkcs11.CKA_UNWRAP, false), attr(pkcs11.CKA_DERIVE, false),
	}, common...)
	if opts.Wrappable && t.canTrustKEK(ctx) {
		privT = append(privT, attr(pkcs11.CKA_WRAP_WITH_TRUSTED, true))
	}

	t.keyMu.Lock()
	defer t.keyMu.Unlock()
	var k *Signer
	err = t.creating(ctx, "key import", wk.Label, func(s *session) error {
		p11 := t.pool.p11
		if err := t.refuseTaken(s, wk.Label, wk.ID); err != nil {
			return err
		}
		found, err := t.find(s, []*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), attr(pkcs11.CKA_ID, wk.Transport)}, 2)
		if err != nil {
			return err
		}
		if len(found) != 1 {
			return fmt.Errorf("transport key %x: %w", wk.Transport, ErrKeyNotFound)
		}
		kek, err := p11.UnwrapKey(s.h, oaep(), found[0], wk.KEK, kekTemplate(false, false))
		if err != nil {
			return fmt.Errorf("unwrap KEK: %w", w.mechErr(err, pkcs11.CKM_RSA_PKCS_OAEP))
		}
		defer p11.DestroyObject(s.h, kek)
		priv, err := p11.UnwrapKey(s.h, kwp(), kek, wk.Key, privT)
		if err != nil {
			return fmt.Errorf("unwrap key: %w", w.mechErr(err, pkcs11.CKM_AES_KEY_WRAP_PAD))
		}
		pubObj, err := p11.CreateObject(s.h, pubT)
		if err != nil {
			_ = p11.DestroyObject(s.h, priv)
			return fmt.Errorf("create public key object: %w", err)
		}
		if k, err = t.signerFor(s, priv); err == nil {
			err = k.selfTest(s)
		}
		if err != nil {
			_ = p11.DestroyObject(s.h, priv)
			_ = p11.DestroyObject(s.h, pubObj)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: import %q into token %q: %w", wk.Label, t.info.Label, err)
	}
	t.log.Info("hsm: key imported", "token", t.info.Label, "key", k.uri.String(), "wrappable", opts.Wrappable)
	return k, nil
}

func (w *wrapTransfer) mechErr(err error, mech uint) error {
	if mechanismRefused(err) {
		return &mechanismError{Token: w.t.info.Label, Mechanism: mech, Err: err}
	}
	return err
}

// kekTemplate is the template of the one-off AES-256 KEK: made by the sender
// (wrap only, extractable so it can travel wrapped), or unwrapped by the receiver
// (unwrap only, never extractable).
func kekTemplate(sender, trusted bool) []*pkcs11.Attribute {
	t := []*pkcs11.Attribute{
		attr(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		attr(pkcs11.CKA_TOKEN, false), attr(pkcs11.CKA_PRIVATE, true), attr(pkcs11.CKA_SENSITIVE, true),
		attr(pkcs11.CKA_EXTRACTABLE, sender), attr(pkcs11.CKA_WRAP, sender), attr(pkcs11.CKA_UNWRAP, !sender),
		attr(pkcs11.CKA_ENCRYPT, false), attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_SIGN, false), attr(pkcs11.CKA_VERIFY, false), attr(pkcs11.CKA_DERIVE, false),
	}
	if sender {
		t = append(t, attr(pkcs11.CKA_VALUE_LEN, 32))
	}
	if trusted {
		t = append(t, attr(pkcs11.CKA_TRUSTED, true))
	}
	return t
}

// canTrustKEK reports whether a user session may make a secret key with
// CKA_TRUSTED=true. Only then can a key made CKA_WRAP_WITH_TRUSTED be wrapped under a
// KEK, so only then does GenerateKey set CKA_WRAP_WITH_TRUSTED. PKCS#11 lets only
// the SO set CKA_TRUSTED, and SoftHSM 2.6.1 enforces it (CKR_ATTRIBUTE_READ_ONLY).
// The answer is asked of the token once.
func (t *Token) canTrustKEK(ctx context.Context) bool {
	t.trustedOnce.Do(func() {
		err := t.pool.do(ctx, func(s *session) error {
			kek, err := t.pool.p11.GenerateKey(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, kekTemplate(true, true))
			if err != nil {
				return err
			}
			return t.pool.p11.DestroyObject(s.h, kek)
		})
		t.trustedKEK = err == nil
		t.log.Debug("hsm: probed CKA_TRUSTED on a user-made KEK", "token", t.info.Label, "allowed", t.trustedKEK, "err", err)
	})
	return t.trustedKEK
}

// publicTemplate returns the key type and the type-specific public key object
// attributes for pub.
func publicTemplate(pub crypto.PublicKey) (uint, []*pkcs11.Attribute, error) {
	base := func(kt uint) []*pkcs11.Attribute {
		return []*pkcs11.Attribute{
			attr(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), attr(pkcs11.CKA_KEY_TYPE, kt), attr(pkcs11.CKA_PRIVATE, false),
			attr(pkcs11.CKA_VERIFY, true), attr(pkcs11.CKA_ENCRYPT, false), attr(pkcs11.CKA_WRAP, false),
		}
	}
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		var params []byte
		switch p.Curve.Params().Name {
		case "P-256":
			params = oidP256
		case "P-384":
			params = oidP384
		case "P-521":
			params = oidP521
		default:
			return 0, nil, fmt.Errorf("curve %s", p.Curve.Params().Name)
		}
		raw, err := p.Bytes()
		if err != nil {
			return 0, nil, err
		}
		return pkcs11.CKK_EC, append(base(pkcs11.CKK_EC), attr(pkcs11.CKA_EC_PARAMS, params), attr(pkcs11.CKA_EC_POINT, octetString(raw))), nil
	case ed25519.PublicKey:
		return ckkECEdwards, append(base(ckkECEdwards), attr(pkcs11.CKA_EC_PARAMS, oidEd25519), attr(pkcs11.CKA_EC_POINT, octetString(p))), nil
	case *rsa.PublicKey:
		return pkcs11.CKK_RSA, append(base(pkcs11.CKK_RSA), attr(pkcs11.CKA_MODULUS, p.N.Bytes()), attr(pkcs11.CKA_PUBLIC_EXPONENT, bigEndian(p.E))), nil
	}
	return 0, nil, fmt.Errorf("public key of type %T", pub)
}

// octetString is the DER OCTET STRING of b (short enough for one length byte or two).
func octetString(b []byte) []byte {
	if len(b) < 128 {
		return append([]byte{0x04, byte(len(b))}, b...)
	}
	return append([]byte{0x04, 0x81, byte(len(b))}, b...)
}

func bigEndian(v int) []byte {
	var b []byte
	for ; v > 0; v >>= 8 {
		b = append([]byte{byte(v)}, b...)
	}
	return b
}

// selfTest signs a random digest in s and verifies it under the Signer's public key.
func (k *Signer) selfTest(s *session) error {
	msg := make([]byte, 32)
	_, _ = rand.Read(msg)
	digest := sha256.Sum256(msg)
	var opts crypto.SignerOpts = crypto.SHA256
	in := digest[:]
	if _, ok := k.pub.(ed25519.PublicKey); ok {
		opts, in = crypto.Hash(0), msg
	}
	mech, input, err := k.prepare(in, opts)
	if err != nil {
		return err
	}
	sig, err := k.signIn(s, mech, input)
	if err != nil {
		return fmt.Errorf("self-test signature: %w", err)
	}
	ok := false
	switch p := k.pub.(type) {
	case *ecdsa.PublicKey:
		ok = len(sig) == 2*k.size && ecdsa.VerifyASN1(p, in, ecdsaASN1(sig))
	case *rsa.PublicKey:
		ok = rsa.VerifyPKCS1v15(p, crypto.SHA256, in, sig) == nil
	case ed25519.PublicKey:
		ok = ed25519.Verify(p, in, sig)
	}
	if !ok {
		return errKeyMismatch
	}
	return nil
}
