package enroll

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/subscriber"
)

// seedProof is a proof of the right form (its certificate and signature are random
// bytes: the parsers do not look inside them) and a real CSR, made without the
// fixture so that fuzz workers start at once.
func seedProof(f *testing.F) (string, string) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	csr, err := subscriber.NewCSR(key)
	if err != nil {
		f.Fatal(err)
	}
	cert, sig := make([]byte, 1200), make([]byte, 256)
	_, _ = rand.Read(cert)
	_, _ = rand.Read(sig)
	sum := sha256.Sum256(csr)
	now := time.Now()
	proof := forge(f, map[string]any{"alg": "RS256", "typ": "JWT", "x5c": x5c([][]byte{cert})},
		claimsOf(bytes.Repeat([]byte{9}, enrollapi.NonceLen), "https://ca.example.jp/v1/enroll", now, now.Add(time.Minute), sum[:]),
		func([]byte) []byte { return sig })
	return proof, base64.RawURLEncoding.EncodeToString(csr)
}

// FuzzParseJWS: the proof parser (compact JWS, header, claims) never panics, and what
// it accepts is RS256 with one to four certificates, its signing input the first two
// parts as sent.
func FuzzParseJWS(f *testing.F) {
	proof, _ := seedProof(f)
	f.Add(proof)
	parts := strings.Split(proof, ".")
	f.Add(parts[0] + "." + parts[1] + ".")
	f.Add("eyJhbGciOiJub25lIn0.e30.")                                            // {"alg":"none"}
	f.Add("eyJhbGciOiJSUzI1NiIsImFsZyI6IlJTMjU2In0.e30.AA")                      // duplicate alg
	f.Add("eyJhbGciOiJSUzI1NiIsIng1YyI6WyJBQT09Il0sImNyaXQiOlsiZXhwIl19.e30.AA") // crit
	f.Add("a.b.c.d")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		j, err := parseJWS(s)
		if err != nil {
			return
		}
		if j.alg != enrollapi.AlgRS256 || len(j.x5c) == 0 || len(j.x5c) > 4 || len(j.signature) == 0 {
			t.Fatalf("accepted alg %q with %d certificates", j.alg, len(j.x5c))
		}
		dot := strings.LastIndexByte(s, '.')
		if string(j.signingInput) != s[:dot] {
			t.Fatal("signing input is not what was sent")
		}
		c, err := parseClaims(j.payload)
		if err != nil {
			return
		}
		if len(c.nonce) != enrollapi.NonceLen || len(c.csrSHA256) != 32 || c.iat < 0 || c.exp < 0 {
			t.Fatalf("accepted claims %+v", c)
		}
	})
}

// FuzzParseCSR: the CSR intake never panics, and a CSR it accepts re-parses to the
// same request and carries a signature that verifies.
func FuzzParseCSR(f *testing.F) {
	_, csr := seedProof(f)
	f.Add(csr)
	der, _ := base64.RawURLEncoding.DecodeString(csr)
	f.Add(base64.RawURLEncoding.EncodeToString(der[:len(der)-1]))
	f.Add(base64.StdEncoding.EncodeToString(der))
	f.Add("MIIB")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		req, der, err := parseCSR(s)
		if err != nil {
			return
		}
		if req.CheckSignature() != nil {
			t.Fatal("accepted a CSR whose signature does not verify")
		}
		again, err := x509.ParseCertificateRequest(der)
		if err != nil || !bytes.Equal(again.Raw, req.Raw) {
			t.Fatal("accepted DER does not re-parse to itself")
		}
	})
}

// FuzzDecodeRequest: the request body decoder never panics and accepts only objects
// with a proof and a CSR.
func FuzzDecodeRequest(f *testing.F) {
	proof, csr := seedProof(f)
	f.Add([]byte(`{"proof":"` + proof + `","csr":"` + csr + `"}`))
	f.Add([]byte(`{"proof":"a","csr":"b","proof":"c"}`))
	f.Add([]byte(`{"proof":null,"csr":"b"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeRequest(body)
		if err == nil && (req.Proof == "" || req.CSR == "") {
			t.Fatal("accepted a request without proof or CSR")
		}
	})
}

// FuzzDecodeRebindRequest: the re-binding body decoder and the serial parser never
// panic; an accepted body has a proof and a serial, and an accepted serial is
// positive and written back as it was sent.
func FuzzDecodeRebindRequest(f *testing.F) {
	proof, _ := seedProof(f)
	f.Add([]byte(`{"proof":"` + proof + `","serial":"5f3a01"}`))
	f.Add([]byte(`{"proof":"a","serial":"0"}`))
	f.Add([]byte(`{"proof":"a","serial":"05f"}`))
	f.Add([]byte(`{"proof":"a","serial":"-1"}`))
	f.Add([]byte(`{"proof":"a","serial":"5F"}`))
	f.Add([]byte(`{"proof":"a","serial":"1","csr":"b"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := decodeRebindRequest(body)
		if err != nil {
			return
		}
		if req.Proof == "" || req.Serial == "" {
			t.Fatal("accepted a body without a proof or a serial")
		}
		n, err := parseSerial(req.Serial)
		if err != nil {
			return
		}
		if n.Sign() <= 0 || hex.EncodeToString(n.Bytes()) != req.Serial {
			t.Fatalf("serial %q read as %x", req.Serial, n)
		}
	})
}

// FuzzParseRebindClaims: a re-binding proof's claims parse without panic, and an
// accepted payload names a 32-byte nonce.
func FuzzParseRebindClaims(f *testing.F) {
	f.Add([]byte(`{"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","aud":"https://x/v1/enroll/rebind","iat":1,"exp":2,"serial":"5f"}`))
	f.Add([]byte(`{"nonce":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","aud":"a","iat":1,"exp":2,"serial":5}`))
	f.Add([]byte(`{"serial":"1","serial":"2"}`))
	f.Fuzz(func(t *testing.T, payload []byte) {
		c, err := parseRebindClaims(payload)
		if err != nil {
			return
		}
		if len(c.nonce) != enrollapi.NonceLen || c.csrSHA256 != nil {
			t.Fatalf("accepted claims with a %d-byte nonce", len(c.nonce))
		}
	})
}

// FuzzParseKeyProof: a re-bind's key proof parses without panic; an accepted one
// has an algorithm of the list, a 32-byte nonce and card hash, and a signature; and
// verifying it with a key never panics either.
func FuzzParseKeyProof(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	kp, err := subscriber.NewKeyProof(key, subscriber.ProofClaims{Nonce: make([]byte, 32), Audience: "https://x/v1/enroll/rebind",
		IssuedAt: now, Expires: now.Add(time.Minute), Serial: "5f", JPKICert: []byte("card")})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(kp)
	f.Add("e30.e30.AAAA")
	f.Add("eyJhbGciOiJub25lIn0.e30.AA")
	f.Fuzz(func(t *testing.T, s string) {
		p, err := parseKeyProof(s)
		if err != nil {
			return
		}
		if len(p.claims.nonce) != 32 || len(p.claims.jpkiSHA256) != 32 || len(p.signature) == 0 {
			t.Fatalf("accepted a key proof with a %d-byte nonce", len(p.claims.nonce))
		}
		_ = p.verify(&key.PublicKey)
	})
}
