package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"time"

	"github.com/miekg/pkcs11"
)

// KeyType names a key's algorithm and size, as in configuration files.
type KeyType string

// The key types GenerateKey makes. Signer also uses other RSA sizes and P-521
// keys it finds on a token.
const (
	ECP256  KeyType = "ec-p256"
	ECP384  KeyType = "ec-p384"
	RSA2048 KeyType = "rsa-2048"
	RSA3072 KeyType = "rsa-3072"
	rsA4096 KeyType = "rsa-4096"
	Ed25519 KeyType = "ed25519"
)

// KeySpec says what key GenerateKey makes.
type KeySpec struct {
	Type  KeyType
	Label string // required; must not be on the token yet
	ID    []byte // CKA_ID; 16 random bytes if nil; must not be on the token yet
	// Wrappable makes a key that may leave the token, but only wrapped:
	// CKA_EXTRACTABLE=true (it stays CKA_SENSITIVE, so it never leaves in clear),
	// plus CKA_WRAP_WITH_TRUSTED=true where the token lets a user make the trusted
	// wrapping key that the transfer then needs (SoftHSM 2.6.1 does not: only the
	// SO may set CKA_TRUSTED, so there the attribute is left false).
	// The default is a key that can never leave.
	Wrappable bool
}

// KeyInfo describes a key object on a token.
type KeyInfo struct {
	Class string  // "private", "public" or "secret-key", as in a URI's type
	Type  KeyType // empty when the algorithm is not one inkan knows
	Label string
	ID    []byte
	URI   URI
}

// DER of the named curve OIDs, as CKA_EC_PARAMS holds them.
var (
	oidP256    = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	oidP384    = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}
	oidP521    = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23}
	oidEd25519 = []byte{0x06, 0x03, 0x2b, 0x65, 0x70} // 1.3.101.112
)

func attr(typ uint, v any) *pkcs11.Attribute { return pkcs11.NewAttribute(typ, v) }

// GenerateKey makes a key pair on the token and returns its Signer. The private
// key is CKA_TOKEN, CKA_PRIVATE and CKA_SENSITIVE, usable for signing only, and
// non-extractable unless spec.Wrappable. A label or ID already on the token is
// refused with errKeyExists.
func (t *Token) GenerateKey(ctx context.Context, spec KeySpec) (*Signer, error) {
	if spec.Label == "" {
		return nil, fmt.Errorf("hsm: generate key: a label is required")
	}
	id := spec.ID
	if len(id) == 0 {
		id = make([]byte, 16)
		_, _ = rand.Read(id)
	}
	mech, pubT, privT, err := keyTemplates(spec.Type)
	if err != nil {
		return nil, err
	}
	wrapTrusted := spec.Wrappable && t.canTrustKEK(ctx)
	common := []*pkcs11.Attribute{attr(pkcs11.CKA_TOKEN, true), attr(pkcs11.CKA_ID, id), attr(pkcs11.CKA_LABEL, spec.Label)}
	pubT = append(pubT, common...)
	pubT = append(pubT,
		attr(pkcs11.CKA_PRIVATE, false),
		attr(pkcs11.CKA_VERIFY, true),
		attr(pkcs11.CKA_ENCRYPT, false),
		attr(pkcs11.CKA_WRAP, false),
	)
	privT = append(privT, common...)
	privT = append(privT,
		attr(pkcs11.CKA_PRIVATE, true),
		attr(pkcs11.CKA_SENSITIVE, true),
		attr(pkcs11.CKA_EXTRACTABLE, spec.Wrappable),
		attr(pkcs11.CKA_SIGN, true),
		attr(pkcs11.CKA_DECRYPT, false),
		attr(pkcs11.CKA_UNWRAP, false),
		attr(pkcs11.CKA_DERIVE, false),
	)
	if wrapTrusted {
		privT = append(privT, attr(pkcs11.CKA_WRAP_WITH_TRUSTED, true))
	}

	t.keyMu.Lock()
	defer t.keyMu.Unlock()
	var k *Signer
	err = t.creating(ctx, "key generation", spec.Label, func(s *session) error {
		if err := t.refuseTaken(s, spec.Label, id); err != nil {
			return err
		}
		_, priv, err := t.pool.p11.GenerateKeyPair(s.h, []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, pubT, privT)
		if err != nil {
			if mechanismRefused(err) {
				return &mechanismError{Token: t.info.Label, Mechanism: mech, Err: err}
			}
			return err
		}
		k, err = t.signerFor(s, priv)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: generate %s key %q on token %q: %w", spec.Type, spec.Label, t.info.Label, err)
	}
	t.log.Info("hsm: key generated", "token", t.info.Label, "key", k.uri.String(), "type", string(spec.Type), "wrappable", spec.Wrappable)
	return k, nil
}

// keyTemplates returns the generation mechanism and the type-specific parts of the
// public and private templates.
func keyTemplates(kt KeyType) (mech uint, pub, priv []*pkcs11.Attribute, err error) {
	ec := func(params []byte, keyType uint, m uint) (uint, []*pkcs11.Attribute, []*pkcs11.Attribute, error) {
		return m,
			[]*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), attr(pkcs11.CKA_KEY_TYPE, keyType), attr(pkcs11.CKA_EC_PARAMS, params)},
			[]*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), attr(pkcs11.CKA_KEY_TYPE, keyType)},
			nil
	}
	switch kt {
	case ECP256:
		return ec(oidP256, pkcs11.CKK_EC, pkcs11.CKM_EC_KEY_PAIR_GEN)
	case ECP384:
		return ec(oidP384, pkcs11.CKK_EC, pkcs11.CKM_EC_KEY_PAIR_GEN)
	case Ed25519:
		return ec(oidEd25519, ckkECEdwards, ckmECEdwardsKeyPairGen)
	case RSA2048, RSA3072, rsA4096:
		bits, _ := strconv.Atoi(strings.TrimPrefix(string(kt), "rsa-"))
		return pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN,
			[]*pkcs11.Attribute{
				attr(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
				attr(pkcs11.CKA_MODULUS_BITS, bits), attr(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
			},
			[]*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), attr(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA)},
			nil
	}
	return 0, nil, nil, fmt.Errorf("hsm: unknown key type %q", kt)
}

// refuseTaken fails with errKeyExists if a key object on the token already has the
// label or the ID: URIs select keys by either, so both must be unique.
func (t *Token) refuseTaken(s *session, label string, id []byte) error {
	for _, tmpl := range [][]*pkcs11.Attribute{
		{attr(pkcs11.CKA_ID, id)},
		{attr(pkcs11.CKA_LABEL, label)},
	} {
		found, err := t.find(s, tmpl, 1)
		if err != nil {
			return err
		}
		if len(found) > 0 {
			return fmt.Errorf("%w: label %q or ID %x", errKeyExists, label, id)
		}
	}
	return nil
}

// find returns up to max objects matching tmpl.
func (t *Token) find(s *session, tmpl []*pkcs11.Attribute, max int) ([]pkcs11.ObjectHandle, error) {
	p11 := t.pool.p11
	if err := p11.FindObjectsInit(s.h, tmpl); err != nil {
		return nil, err
	}
	found, _, err := p11.FindObjects(s.h, max)
	ferr := p11.FindObjectsFinal(s.h)
	if err != nil {
		return nil, err
	}
	return found, ferr
}

// Signer returns a Signer for the private key that u names on this token. u must
// name the key by ID or object label (or both); a token or serial in u must be
// this token's.
func (t *Token) Signer(ctx context.Context, u URI) (*Signer, error) {
	t.keyMu.RLock()
	k, err := t.signer(ctx, u)
	t.keyMu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("hsm: signer for %s: %w", u, err)
	}
	return k, nil
}

func (t *Token) signer(ctx context.Context, u URI) (*Signer, error) {
	if err := t.matches(u); err != nil {
		return nil, err
	}
	if u.Type != "" && u.Type != "private" {
		return nil, errors.New("a signer needs type=private")
	}
	if len(u.ID) == 0 && u.Object == "" {
		return nil, errors.New("name the key by id or object")
	}
	tmpl := []*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)}
	if len(u.ID) > 0 {
		tmpl = append(tmpl, attr(pkcs11.CKA_ID, u.ID))
	}
	if u.Object != "" {
		tmpl = append(tmpl, attr(pkcs11.CKA_LABEL, u.Object))
	}
	var k *Signer
	err := t.pool.do(ctx, func(s *session) error {
		found, err := t.find(s, tmpl, 2)
		switch {
		case err != nil:
			return err
		case len(found) == 0:
			return fmt.Errorf("%w on token %q", ErrKeyNotFound, t.info.Label)
		case len(found) > 1:
			return fmt.Errorf("more than one private key on token %q matches", t.info.Label)
		}
		k, err = t.signerFor(s, found[0])
		return err
	})
	return k, err
}

func (t *Token) matches(u URI) error {
	if u.Token != "" && u.Token != t.info.Label {
		return fmt.Errorf("URI names token %q, not %q", u.Token, t.info.Label)
	}
	if u.Serial != "" && u.Serial != t.info.Serial {
		return fmt.Errorf("URI names token serial %q, not %q", u.Serial, t.info.Serial)
	}
	return nil
}

// keyURI is the URI of a key on this token. It names the token by label, not
// serial, so that the same key replicated to every node's token has one URI.
func (t *Token) keyURI(label string, id []byte, class string) URI {
	return URI{Token: t.info.Label, Object: label, ID: bytes.Clone(id), Type: class}
}

// signerFor builds the Signer of the private key priv, reading its public key from
// the token, and caches the handle in s.
func (t *Token) signerFor(s *session, priv pkcs11.ObjectHandle) (*Signer, error) {
	p11 := t.pool.p11
	attrs, err := p11.GetAttributeValue(s.h, priv, []*pkcs11.Attribute{
		attr(pkcs11.CKA_KEY_TYPE, nil), attr(pkcs11.CKA_ID, nil), attr(pkcs11.CKA_LABEL, nil),
	})
	if err != nil {
		return nil, fmt.Errorf("read key attributes: %w", err)
	}
	keyType, id, label := ulong(attrs[0].Value), attrs[1].Value, string(attrs[2].Value)
	pub, kt, err := t.readPublic(s, priv, keyType, id, label)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", label, err)
	}
	k, err := newSigner(t, pub, kt, label, id)
	if err != nil {
		return nil, err
	}
	if s.keys == nil {
		s.keys = make(map[string]pkcs11.ObjectHandle)
	}
	s.keys[k.cacheKey] = priv
	return k, nil
}

// readPublic reads the public key of a private key from its public key object
// (same ID, or label when the ID is empty); for RSA, the private key object's own
// modulus and exponent do when no public object is there.
func (t *Token) readPublic(s *session, priv pkcs11.ObjectHandle, keyType uint, id []byte, label string) (crypto.PublicKey, KeyType, error) {
	p11 := t.pool.p11
	tmpl := []*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), attr(pkcs11.CKA_KEY_TYPE, keyType)}
	if len(id) > 0 {
		tmpl = append(tmpl, attr(pkcs11.CKA_ID, id))
	} else {
		tmpl = append(tmpl, attr(pkcs11.CKA_LABEL, label))
	}
	found, err := t.find(s, tmpl, 1)
	if err != nil {
		return nil, "", err
	}
	switch keyType {
	case pkcs11.CKK_RSA:
		obj := priv
		if len(found) > 0 {
			obj = found[0]
		}
		a, err := p11.GetAttributeValue(s.h, obj, []*pkcs11.Attribute{attr(pkcs11.CKA_MODULUS, nil), attr(pkcs11.CKA_PUBLIC_EXPONENT, nil)})
		if err != nil {
			return nil, "", fmt.Errorf("read RSA public key: %w", err)
		}
		return rsaPublic(a[0].Value, a[1].Value)
	case pkcs11.CKK_EC, ckkECEdwards:
		if len(found) == 0 {
			return nil, "", fmt.Errorf("no public key object with the private key's ID %x", id)
		}
		a, err := p11.GetAttributeValue(s.h, found[0], []*pkcs11.Attribute{attr(pkcs11.CKA_EC_PARAMS, nil), attr(pkcs11.CKA_EC_POINT, nil)})
		if err != nil {
			return nil, "", fmt.Errorf("read EC public key: %w", err)
		}
		return ecPublic(a[0].Value, a[1].Value)
	}
	return nil, "", fmt.Errorf("key type 0x%X is not one inkan signs with", keyType)
}

func rsaPublic(modulus, exponent []byte) (crypto.PublicKey, KeyType, error) {
	e := new(big.Int).SetBytes(exponent)
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
		return nil, "", fmt.Errorf("RSA public exponent out of range")
	}
	pub := &rsa.PublicKey{N: new(big.Int).SetBytes(modulus), E: int(e.Int64())}
	return pub, KeyType(fmt.Sprintf("rsa-%d", pub.N.BitLen())), nil
}

// ecPublic decodes CKA_EC_PARAMS and CKA_EC_POINT. The point is a DER OCTET STRING
// by the standard; some tokens give it raw, which is told apart by its length.
func ecPublic(params, point []byte) (crypto.PublicKey, KeyType, error) {
	var curve elliptic.Curve
	var kt KeyType
	switch {
	case bytes.Equal(params, oidP256):
		curve, kt = elliptic.P256(), ECP256
	case bytes.Equal(params, oidP384):
		curve, kt = elliptic.P384(), ECP384
	case bytes.Equal(params, oidP521):
		curve, kt = elliptic.P521(), "ec-p521"
	case bytes.Equal(params, oidEd25519), isEdwards25519Name(params):
		raw := unwrapPoint(point, ed25519.PublicKeySize)
		if len(raw) != ed25519.PublicKeySize {
			return nil, "", fmt.Errorf("Ed25519 public key of %d bytes", len(raw))
		}
		return ed25519.PublicKey(bytes.Clone(raw)), Ed25519, nil
	default:
		return nil, "", fmt.Errorf("EC parameters %x name no curve inkan knows", params)
	}
	size := (curve.Params().BitSize + 7) / 8
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, unwrapPoint(point, 1+2*size))
	if err != nil {
		return nil, "", fmt.Errorf("EC point: %w", err)
	}
	return pub, kt, nil
}

// isEdwards25519Name: PKCS#11 v3.0 also allows the curve as PrintableString "edwards25519".
func isEdwards25519Name(params []byte) bool {
	var name string
	rest, err := asn1.Unmarshal(params, &name)
	return err == nil && len(rest) == 0 && name == "edwards25519"
}

func unwrapPoint(point []byte, rawLen int) []byte {
	if len(point) == rawLen {
		return point
	}
	var inner []byte
	if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
		return inner
	}
	return point
}

// ulong decodes a CK_ULONG attribute value (native byte order, which is little
// endian on every platform inkan runs on).
func ulong(b []byte) uint {
	var v uint
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint(b[i])
	}
	return v
}

// Keys lists the key objects on the token (private, public and secret keys).
func (t *Token) Keys(ctx context.Context) ([]KeyInfo, error) {
	var out []KeyInfo
	err := t.pool.do(ctx, func(s *session) error {
		out = out[:0]
		for _, class := range []uint{pkcs11.CKO_PRIVATE_KEY, pkcs11.CKO_PUBLIC_KEY, pkcs11.CKO_SECRET_KEY} {
			objs, err := t.find(s, []*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, class), attr(pkcs11.CKA_TOKEN, true)}, 10000)
			if err != nil {
				return err
			}
			for _, o := range objs {
				ki, err := t.keyInfo(s, o, class)
				if err != nil {
					return err
				}
				out = append(out, ki)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("hsm: list keys on token %q: %w", t.info.Label, err)
	}
	return out, nil
}

func (t *Token) keyInfo(s *session, o pkcs11.ObjectHandle, class uint) (KeyInfo, error) {
	p11 := t.pool.p11
	a, err := p11.GetAttributeValue(s.h, o, []*pkcs11.Attribute{
		attr(pkcs11.CKA_KEY_TYPE, nil), attr(pkcs11.CKA_ID, nil), attr(pkcs11.CKA_LABEL, nil),
	})
	if err != nil {
		return KeyInfo{}, err
	}
	ki := KeyInfo{Label: string(a[2].Value), ID: a[1].Value}
	switch class {
	case pkcs11.CKO_PRIVATE_KEY:
		ki.Class = "private"
	case pkcs11.CKO_PUBLIC_KEY:
		ki.Class = "public"
	default:
		ki.Class = "secret-key"
	}
	switch ulong(a[0].Value) {
	case pkcs11.CKK_RSA:
		if m, err := p11.GetAttributeValue(s.h, o, []*pkcs11.Attribute{attr(pkcs11.CKA_MODULUS, nil)}); err == nil {
			ki.Type = KeyType(fmt.Sprintf("rsa-%d", new(big.Int).SetBytes(m[0].Value).BitLen()))
		}
	case pkcs11.CKK_EC, ckkECEdwards:
		if p, err := p11.GetAttributeValue(s.h, o, []*pkcs11.Attribute{attr(pkcs11.CKA_EC_PARAMS, nil)}); err == nil {
			switch {
			case bytes.Equal(p[0].Value, oidP256):
				ki.Type = ECP256
			case bytes.Equal(p[0].Value, oidP384):
				ki.Type = ECP384
			case bytes.Equal(p[0].Value, oidP521):
				ki.Type = "ec-p521"
			case bytes.Equal(p[0].Value, oidEd25519), isEdwards25519Name(p[0].Value):
				ki.Type = Ed25519
			}
		}
	case pkcs11.CKK_AES:
		ki.Type = "aes"
	}
	ki.URI = t.keyURI(ki.Label, ki.ID, ki.Class)
	return ki, nil
}

// creating runs create, a step that makes objects on the token and leaves none
// behind when it fails, and runs it again (at most three times in all) when it
// fails as SoftHSM's file store now and then fails a creation that races another
// session's use of the token (one start in tens). create checks the label free
// again on each try.
func (t *Token) creating(ctx context.Context, what, label string, create func(*session) error) error {
	for attempt := 1; ; attempt++ {
		err := t.pool.do(ctx, create)
		if attempt == 3 || !transientCreate(err) || ctx.Err() != nil {
			return err
		}
		t.log.Warn("hsm: "+what+" failed in the token; trying again", "token", t.info.Label, "label", label, "err", err)
		time.Sleep(time.Duration(attempt) * 50 * time.Millisecond)
	}
}

// transientCreate reports an object creation failure that SoftHSM's file
// store gives when it races another session (CKR_GENERAL_ERROR,
// CKR_TEMPLATE_INCONSISTENT for a template that is consistent).
func transientCreate(err error) bool {
	var e pkcs11.Error
	return errors.As(err, &e) && (e == pkcs11.CKR_GENERAL_ERROR || e == pkcs11.CKR_TEMPLATE_INCONSISTENT)
}
