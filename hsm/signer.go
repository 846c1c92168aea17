package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"

	"github.com/miekg/pkcs11"
)

// Signer is a private key on a token, as a crypto.Signer. It holds no session: each
// signature borrows one from the token's pool, so one Signer serves any number of
// goroutines, as fast in parallel as the token allows.
type Signer struct {
	tok      *Token
	cacheKey string // the key's ID and label: its entry in each session's handle cache
	uri      URI
	typ      KeyType
	pub      crypto.PublicKey
	find     []*pkcs11.Attribute // finds the private key in a session that has no handle yet
	mech     []*pkcs11.Mechanism // the mechanism for every signature but RSA-PSS
	size     int                 // RSA modulus bytes, or ECDSA coordinate bytes
}

func newSigner(t *Token, pub crypto.PublicKey, kt KeyType, label string, id []byte) (*Signer, error) {
	k := &Signer{tok: t, cacheKey: string(id) + "\x00" + label, uri: t.keyURI(label, id, "private"), typ: kt, pub: pub}
	k.find = []*pkcs11.Attribute{attr(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY), attr(pkcs11.CKA_ID, id)}
	if label != "" {
		k.find = append(k.find, attr(pkcs11.CKA_LABEL, label))
	}
	switch p := pub.(type) {
	case *ecdsa.PublicKey:
		k.mech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)}
		k.size = (p.Curve.Params().BitSize + 7) / 8
	case *rsa.PublicKey:
		k.mech = []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS, nil)}
		k.size = p.Size()
	case ed25519.PublicKey:
		k.mech = []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmEdDSA, nil)}
	default:
		return nil, fmt.Errorf("public key of type %T", pub)
	}
	return k, nil
}

// Public returns the public key read from the token: *ecdsa.PublicKey,
// *rsa.PublicKey or ed25519.PublicKey.
func (k *Signer) Public() crypto.PublicKey { return k.pub }

// URI names the private key: token label, object label, ID and type=private.
func (k *Signer) URI() URI { return k.uri }

// Sign signs digest as crypto.Signer says: ECDSA returns an ASN.1 signature over
// digest; RSA uses PKCS#1 v1.5, or PSS when opts is *rsa.PSSOptions (its salt
// length respected), with SHA-256, SHA-384 or SHA-512; Ed25519 signs the whole
// message (opts.HashFunc() must be 0). rand is ignored: the token has its own.
func (k *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	return k.SignContext(context.Background(), digest, opts)
}

// SignContext is Sign with a context that bounds the wait for a session.
func (k *Signer) SignContext(ctx context.Context, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	mech, input, err := k.prepare(digest, opts)
	if err != nil {
		return nil, fmt.Errorf("hsm: sign with %s: %w", k.uri, err)
	}
	p := k.tok.pool
	var sig []byte
	for range attempts {
		var s *session
		if s, err = p.get(ctx); err != nil {
			break
		}
		sig, err = k.signIn(s, mech, input)
		var retry bool
		if retry, err = p.recover(s, err); !retry {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("hsm: sign with %s: %w", k.uri, err)
	}
	if _, ok := k.pub.(*ecdsa.PublicKey); ok {
		if len(sig) != 2*k.size {
			return nil, fmt.Errorf("hsm: sign with %s: token returned a %d-byte ECDSA signature", k.uri, len(sig))
		}
		return ecdsaASN1(sig), nil
	}
	return sig, nil
}

// signIn signs in one session, finding the key's handle there if it is not cached
// or no longer valid.
func (k *Signer) signIn(s *session, mech []*pkcs11.Mechanism, input []byte) ([]byte, error) {
	p11 := k.tok.pool.p11
	h, ok := s.keys[k.cacheKey]
	for try := 0; ; try++ {
		if !ok {
			found, err := k.tok.find(s, k.find, 2)
			switch {
			case err != nil:
				return nil, err
			case len(found) != 1:
				return nil, fmt.Errorf("%w (%d matches on token %q)", ErrKeyNotFound, len(found), k.tok.info.Label)
			}
			h = found[0]
			if s.keys == nil {
				s.keys = make(map[string]pkcs11.ObjectHandle)
			}
			s.keys[k.cacheKey] = h
		}
		err := p11.SignInit(s.h, mech, h)
		if err == nil {
			break
		}
		if handleStale(err) && try == 0 {
			delete(s.keys, k.cacheKey)
			ok = false
			continue
		}
		if mechanismRefused(err) {
			return nil, &mechanismError{Token: k.tok.info.Label, Mechanism: mech[0].Mechanism, Err: err}
		}
		return nil, err
	}
	return p11.Sign(s.h, input)
}

var errOpts = errors.New("unsupported signer options")

// prepare picks the mechanism and the bytes the token signs.
func (k *Signer) prepare(digest []byte, opts crypto.SignerOpts) ([]*pkcs11.Mechanism, []byte, error) {
	if opts == nil {
		return nil, nil, fmt.Errorf("%w: nil opts", errOpts)
	}
	hash := opts.HashFunc()
	switch pub := k.pub.(type) {
	case ed25519.PublicKey:
		if hash != 0 {
			return nil, nil, fmt.Errorf("%w: Ed25519ph is not supported; pass crypto.Hash(0) and the message", errOpts)
		}
		if o, ok := opts.(*ed25519.Options); ok && o.Context != "" {
			return nil, nil, fmt.Errorf("%w: Ed25519ctx is not supported", errOpts)
		}
		return k.mech, digest, nil
	case *ecdsa.PublicKey:
		if hash != 0 && len(digest) != hash.Size() {
			return nil, nil, fmt.Errorf("%w: %d-byte digest for %v", errOpts, len(digest), hash)
		}
		return k.mech, digest, nil
	case *rsa.PublicKey:
		h, ok := rsaHashes[hash]
		if !ok && hash != 0 {
			return nil, nil, fmt.Errorf("%w: hash %v (use SHA-256, SHA-384 or SHA-512)", errOpts, hash)
		}
		if ok && len(digest) != hash.Size() {
			return nil, nil, fmt.Errorf("%w: %d-byte digest for %v", errOpts, len(digest), hash)
		}
		if pss, isPSS := opts.(*rsa.PSSOptions); isPSS {
			if !ok {
				return nil, nil, fmt.Errorf("%w: PSS needs a hash", errOpts)
			}
			salt, err := pssSaltLength(pss.SaltLength, pub.N.BitLen(), hash.Size())
			if err != nil {
				return nil, nil, err
			}
			params := pkcs11.NewPSSParams(h.mech, h.mgf, uint(salt))
			return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, params)}, digest, nil
		}
		if !ok { // crypto.Hash(0): sign the bytes as given, as rsa.SignPKCS1v15 does
			return k.mech, digest, nil
		}
		in := make([]byte, 0, len(h.prefix)+len(digest))
		return k.mech, append(append(in, h.prefix...), digest...), nil
	}
	return nil, nil, fmt.Errorf("%w: key type %T", errOpts, k.pub)
}

// pssSaltLength resolves rsa.PSSOptions.SaltLength as crypto/rsa does when signing:
// Auto is the largest salt that fits, EqualsHash the hash length.
func pssSaltLength(saltLength, modBits, hashLen int) (int, error) {
	emLen := (modBits - 1 + 7) / 8
	maxSalt := emLen - hashLen - 2
	switch {
	case saltLength == rsa.PSSSaltLengthAuto:
		return maxSalt, nil
	case saltLength == rsa.PSSSaltLengthEqualsHash:
		return hashLen, nil
	case saltLength > 0 && saltLength <= maxSalt:
		return saltLength, nil
	}
	return 0, fmt.Errorf("%w: PSS salt length %d (at most %d for this key)", errOpts, saltLength, maxSalt)
}

type rsaHash struct {
	mech, mgf uint
	prefix    []byte // DER of DigestInfo up to the digest (RFC 8017 section 9.2 note 1)
}

var rsaHashes = map[crypto.Hash]rsaHash{
	crypto.SHA256: {pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256,
		[]byte{0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20}},
	crypto.SHA384: {pkcs11.CKM_SHA384, pkcs11.CKG_MGF1_SHA384,
		[]byte{0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02, 0x05, 0x00, 0x04, 0x30}},
	crypto.SHA512: {pkcs11.CKM_SHA512, pkcs11.CKG_MGF1_SHA512,
		[]byte{0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03, 0x05, 0x00, 0x04, 0x40}},
}

// ecdsaASN1 turns the r||s a token returns into the DER SEQUENCE { r, s } Go and
// X.509 use, in one allocation.
func ecdsaASN1(rs []byte) []byte {
	n := len(rs) / 2
	r, s := trimInt(rs[:n]), trimInt(rs[n:])
	rl, sl := intLen(r), intLen(s)
	body := 2 + rl + 2 + sl
	if rl > 127 || sl > 127 {
		panic("hsm: ECDSA integer too long") // impossible for curves up to P-521
	}
	out := make([]byte, 0, 3+body)
	out = append(out, 0x30)
	if body > 127 {
		out = append(out, 0x81)
	}
	out = append(out, byte(body))
	out = appendInt(out, r)
	out = appendInt(out, s)
	return out
}

func trimInt(b []byte) []byte {
	for len(b) > 1 && b[0] == 0 {
		b = b[1:]
	}
	return b
}

func intLen(b []byte) int {
	if b[0]&0x80 != 0 {
		return len(b) + 1
	}
	return len(b)
}

func appendInt(out, b []byte) []byte {
	out = append(out, 0x02, byte(intLen(b)))
	if b[0]&0x80 != 0 {
		out = append(out, 0)
	}
	return append(out, b...)
}
