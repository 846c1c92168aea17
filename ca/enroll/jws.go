package enroll

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/jpki"
)

// The proof of possession is a JWS (RFC 7515) in compact serialisation. This is a
// parser of that one form, small enough to read whole, rather than a JOSE library:
// it accepts exactly what a card can make (RS256) and refuses what RFC 7515 leaves
// to the parser's taste (duplicate header names, which it may otherwise resolve to
// the last one; extensions named in crit, which it cannot honour).

// maxProofLen bounds the compact JWS: four certificates of a few KB each, base64'd
// twice, fit well under it; the request body limit bounds it anyway.
const maxProofLen = 48 << 10

// jws is a parsed, not yet verified, compact JWS.
type jws struct {
	alg          string
	x5c          [][]byte // DER certificates, the signer's first
	payload      []byte
	signature    []byte
	signingInput []byte // ASCII(BASE64URL(header) || '.' || BASE64URL(payload))
}

// parseJWS parses a compact JWS. Every error matches errProofInvalid and says what is
// wrong with the form, never what the proof holds.
func parseJWS(s string) (*jws, error) {
	if len(s) > maxProofLen {
		return nil, proofInvalid("proof longer than %d bytes", maxProofLen)
	}
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return nil, proofInvalid("not a compact JWS (want three dot-separated parts, got %d)", len(parts))
	}
	rawHeader, err := decodeSegment(parts[0])
	if err != nil {
		return nil, proofInvalid("protected header: %v", err)
	}
	payload, err := decodeSegment(parts[1])
	if err != nil {
		return nil, proofInvalid("payload: %v", err)
	}
	sig, err := decodeSegment(parts[2])
	if err != nil {
		return nil, proofInvalid("signature: %v", err)
	}
	j := &jws{payload: payload, signature: sig, signingInput: []byte(parts[0] + "." + parts[1])}
	if err := j.parseHeader(rawHeader); err != nil {
		return nil, err
	}
	if len(sig) == 0 {
		return nil, proofInvalid("empty signature")
	}
	return j, nil
}

// parseHeader reads the JOSE header: alg must be RS256, x5c must hold 1 to
// jpki.MaxChain certificates; crit, b64 and the parameters that point at a key other
// than x5c (jku, jwk, x5u) are refused; other parameters are ignored, as RFC 7515
// asks of parameters a parser does not understand.
func (j *jws) parseHeader(raw []byte) error {
	h, err := decodeObject(raw)
	if err != nil {
		return proofInvalid("protected header: %v", err)
	}
	for _, name := range []string{"crit", "b64", "jku", "jwk", "x5u"} {
		if _, ok := h[name]; ok {
			return proofInvalid("protected header: %q is not accepted", name)
		}
	}
	rawAlg, ok := h["alg"]
	if !ok {
		return proofInvalid("protected header: no alg")
	}
	if err := json.Unmarshal(rawAlg, &j.alg); err != nil {
		return proofInvalid("protected header: alg is not a string")
	}
	// RS256 only: RSASSA-PKCS1-v1_5 with SHA-256, which is what a card computes (the
	// host builds the DigestInfo, the card pads and signs).
	if j.alg != enrollapi.AlgRS256 {
		return proofInvalid("protected header: alg %q is not accepted (RS256 only)", clip(j.alg))
	}
	rawX5C, ok := h["x5c"]
	if !ok {
		return proofInvalid("protected header: no x5c")
	}
	var certs []string
	if err := json.Unmarshal(rawX5C, &certs); err != nil {
		return proofInvalid("protected header: x5c is not an array of strings")
	}
	if len(certs) == 0 || len(certs) > jpki.MaxChain {
		return proofInvalid("protected header: x5c holds %d certificates (1 to %d accepted)", len(certs), jpki.MaxChain)
	}
	for i, c := range certs {
		der, err := decodeStdBase64(c)
		if err != nil || len(der) == 0 {
			return proofInvalid("protected header: x5c[%d] is not base64 (RFC 7515 §4.1.6: standard, padded)", i)
		}
		j.x5c = append(j.x5c, der)
	}
	return nil
}

// verify checks the signature with pub: PKCS#1 v1.5 over the SHA-256 DigestInfo of
// the signing input (crypto/rsa insists on that exact encoding), with a key of at
// least 2048 bits.
func (j *jws) verify(pub crypto.PublicKey) error {
	k, ok := pub.(*rsa.PublicKey)
	if !ok {
		return proofInvalid("the certificate's key is not RSA")
	}
	if k.N.BitLen() < 2048 {
		return proofInvalid("the certificate's RSA key is shorter than 2048 bits")
	}
	digest := sha256.Sum256(j.signingInput)
	if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, digest[:], j.signature); err != nil {
		return proofInvalid("the signature does not verify with the certificate's key")
	}
	return nil
}

// decodeSegment decodes one part of a compact JWS: base64url without padding, and
// nothing but the 64 characters of that alphabet (Go's decoder would skip CR and LF).
func decodeSegment(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return nil, errors.New("not base64url without padding")
		}
	}
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, errors.New("not base64url without padding")
	}
	return b, nil
}

// decodeStdBase64 decodes standard, padded base64 with nothing else in it.
func decodeStdBase64(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '+' || c == '/' || c == '=') {
			return nil, errors.New("not base64")
		}
	}
	return base64.StdEncoding.Strict().DecodeString(s)
}

// decodeObject decodes a JSON object into its members, refusing duplicate member
// names (compared after unescaping), invalid UTF-8 (which encoding/json would replace
// silently), and anything after the object. Values stay raw for the caller to decode.
func decodeObject(data []byte) (map[string]json.RawMessage, error) {
	if !utf8.Valid(data) {
		return nil, errors.New("not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	out := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, errors.New("not a JSON object")
		}
		name, ok := t.(string)
		if !ok {
			return nil, errors.New("not a JSON object")
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("member %q given twice", clip(name))
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, errors.New("not a JSON object")
		}
		out[name] = v
	}
	if t, err := dec.Token(); err != nil || t != json.Delim('}') {
		return nil, errors.New("not a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return out, nil
}

// clip quotes at most 32 bytes of an attacker's string in a message.
func clip(s string) string {
	if len(s) > 32 {
		s = s[:32] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// claims are the proof's payload.
type claims struct {
	nonce     []byte // the challenge, decoded (32 bytes)
	aud       string
	iat, exp  int64  // NumericDate, seconds
	csrSHA256 []byte // an enrolment's: the CSR the proof binds
	serial    string // a re-binding's: the derived certificate the proof binds (hex)
}

// maxNumericDate bounds iat and exp (year 9999), so arithmetic on them cannot overflow.
const maxNumericDate = 253402300799

// parseClaims decodes an enrolment proof's payload: a JSON object with nonce
// (base64url of 32 bytes), aud (a string), iat and exp (integer NumericDates), and
// csr_sha256 (base64url of 32 bytes). Other claims are ignored; a claim given twice
// is refused.
func parseClaims(payload []byte) (*claims, error) { return parseClaimsOf(payload, false) }

// parseRebindClaims decodes a re-binding proof's payload: as parseClaims, with the
// claim serial (a string) in place of csr_sha256.
func parseRebindClaims(payload []byte) (*claims, error) { return parseClaimsOf(payload, true) }

func parseClaimsOf(payload []byte, rebind bool) (*claims, error) {
	m, err := decodeObject(payload)
	if err != nil {
		return nil, proofInvalid("claims: %v", err)
	}
	c := &claims{}
	if c.nonce, err = claimB32(m, "nonce"); err != nil {
		return nil, err
	}
	if rebind {
		if c.serial, err = claimString(m, "serial"); err != nil {
			return nil, err
		}
	} else if c.csrSHA256, err = claimB32(m, "csr_sha256"); err != nil {
		return nil, err
	}
	if c.iat, err = claimDate(m, "iat"); err != nil {
		return nil, err
	}
	if c.exp, err = claimDate(m, "exp"); err != nil {
		return nil, err
	}
	if c.aud, err = claimString(m, "aud"); err != nil {
		return nil, err
	}
	return c, nil
}

// claimB32 reads a claim that is base64url (no padding) of 32 bytes.
func claimB32(m map[string]json.RawMessage, name string) ([]byte, error) {
	s, err := claimString(m, name)
	if err != nil {
		return nil, err
	}
	b, err := decodeSegment(s)
	if err != nil || len(b) != 32 {
		return nil, proofInvalid("claims: %s is not base64url of 32 bytes", name)
	}
	return b, nil
}

// claimString reads a string claim.
func claimString(m map[string]json.RawMessage, name string) (string, error) {
	raw, ok := m[name]
	if !ok {
		return "", proofInvalid("claims: no %s", name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", proofInvalid("claims: %s is not a string", name)
	}
	return s, nil
}

// claimDate reads an integer NumericDate claim.
func claimDate(m map[string]json.RawMessage, name string) (int64, error) {
	raw, ok := m[name]
	if !ok {
		return 0, proofInvalid("claims: no %s", name)
	}
	// A JSON number, not a string holding one (which json.Number would take).
	if len(raw) == 0 || raw[0] < '0' || raw[0] > '9' {
		return 0, proofInvalid("claims: %s is not a non-negative number", name)
	}
	v, err := strconv.ParseInt(string(raw), 10, 64)
	if err != nil || v < 0 || v > maxNumericDate {
		return 0, proofInvalid("claims: %s is not an integer NumericDate", name)
	}
	return v, nil
}
