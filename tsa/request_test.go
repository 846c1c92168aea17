package tsa

import (
	"bytes"
	"crypto"
	"encoding/asn1"
	"errors"
	"testing"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// An extension list: one non-critical extension with an empty value.
var oneExtension = func() []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(asn1.ObjectIdentifier{1, 2, 3, 4})
		b.AddASN1OctetString(nil)
	})
	return b.BytesOrPanic()
}()

func TestParseRequest(t *testing.T) {
	with := func(f func(*request)) []byte {
		r := goodRequest()
		f(&r)
		return r.der()
	}
	for _, c := range []struct {
		name string
		der  []byte
		want failureInfo // -1: accepted
		hash crypto.Hash
	}{
		{"sha256", goodRequest().der(), -1, crypto.SHA256},
		{"sha384", with(func(r *request) { r.hashOID, r.digest = sha384OID, make([]byte, 48) }), -1, crypto.SHA384},
		{"sha512 with NULL parameters", with(func(r *request) { r.hashOID, r.digest, r.params = sha512OID, make([]byte, 64), []byte{5, 0} }), -1, crypto.SHA512},
		{"policy, nonce and certReq", with(func(r *request) { r.policy, r.nonce, r.certReq = testPolicy, []byte{0x01, 0x02}, ptr(true) }), -1, crypto.SHA256},
		{"explicit certReq FALSE", with(func(r *request) { r.certReq = ptr(false) }), -1, crypto.SHA256},
		{"negative nonce", with(func(r *request) { r.nonce = []byte{0xff, 0x00} }), -1, crypto.SHA256},
		{"empty", nil, badDataFormat, 0},
		{"garbage", []byte("not a request"), badDataFormat, 0},
		{"trailing data", with(func(r *request) { r.trailing = []byte{0} }), badDataFormat, 0},
		{"truncated", goodRequest().der()[:20], badDataFormat, 0},
		{"BER length", append([]byte{0x30, 0x81, 0x05}, bytes.Repeat([]byte{0}, 5)...), badDataFormat, 0},
		{"version 2", with(func(r *request) { r.version = 2 }), badRequest, 0},
		{"version 0", with(func(r *request) { r.version = 0 }), badRequest, 0},
		{"SHA-1", with(func(r *request) { r.hashOID, r.digest = sha1OID, make([]byte, 20) }), badAlg, 0},
		{"MD5", with(func(r *request) { r.hashOID, r.digest = md5OID, make([]byte, 16) }), badAlg, 0},
		{"parameters not NULL", with(func(r *request) { r.params = []byte{4, 0} }), badAlg, 0},
		{"short digest", with(func(r *request) { r.digest = make([]byte, 31) }), badDataFormat, 0},
		{"SHA-384 OID with a SHA-256 digest", with(func(r *request) { r.hashOID = sha384OID }), badDataFormat, 0},
		{"non-minimal nonce", with(func(r *request) { r.nonce = []byte{0x00, 0x01} }), badDataFormat, 0},
		{"empty nonce", with(func(r *request) { r.nonce = []byte{} }), badDataFormat, 0},
		{"long nonce", with(func(r *request) { r.nonce = append([]byte{1}, make([]byte, 32)...) }), badDataFormat, 0},
		{"extension", with(func(r *request) { r.ext = oneExtension }), unacceptedExtension, 0},
		{"malformed extension", with(func(r *request) { r.ext = []byte{0x30, 0x00} }), badDataFormat, 0},
		{"empty extensions", with(func(r *request) { r.ext = []byte{} }), badDataFormat, 0},
		{"oversized", append(goodRequest().der(), make([]byte, maxRequestSize)...), badDataFormat, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, err := parseRequest(c.der)
			if c.want == -1 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if req.Hash != c.hash || len(req.Digest) != c.hash.Size() || !bytes.Contains(c.der, req.Imprint) {
					t.Fatalf("parsed %+v", req)
				}
				return
			}
			var f *failure
			if !errors.As(err, &f) || !errors.Is(err, &failure{Info: c.want}) {
				t.Fatalf("got %v, want %s", err, c.want)
			}
		})
	}
}

// FuzzParseRequest: no input makes ParseRequest panic, every refusal is a
// *Failure with a failure info of RFC 3161, and what it accepts is consistent
// (the imprint and digest inside the input, the digest of the hash's size).
func FuzzParseRequest(f *testing.F) {
	f.Add(goodRequest().der())
	r := goodRequest()
	r.policy, r.nonce, r.certReq = testPolicy, []byte{0x7f, 0x01}, ptr(true)
	f.Add(r.der())
	r.ext = oneExtension
	f.Add(r.der())
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, der []byte) {
		req, err := parseRequest(der)
		if err != nil {
			var f *failure
			if !errors.As(err, &f) {
				t.Fatalf("refusal %T %v is not a *Failure", err, err)
			}
			switch f.Info {
			case badAlg, badRequest, badDataFormat, unacceptedExtension:
			default:
				t.Fatalf("failure info %s from the parser", f.Info)
			}
			_ = rejection(f)
			return
		}
		if len(req.Digest) != req.Hash.Size() || !bytes.Contains(der, req.Imprint) || !bytes.Contains(req.Imprint, req.Digest) ||
			len(req.Nonce) > maxNonce {
			t.Fatalf("accepted inconsistently: %+v", req)
		}
	})
}

// TestRejectionEncoding: every failure info encodes as a DER BIT STRING with
// that bit alone, and statusString says why.
func TestRejectionEncoding(t *testing.T) {
	for _, fi := range []failureInfo{badAlg, badRequest, badDataFormat, timeNotAvailable, unacceptedPolicy, unacceptedExtension, systemFailure} {
		t.Run(fi.String(), func(t *testing.T) {
			r := parseReply(t, rejection(failf(fi, "because")))
			if r.status != statusRejection || r.failInfo != int(fi) || r.text != "because" || r.token != nil {
				t.Fatalf("%+v", r)
			}
		})
	}
}
