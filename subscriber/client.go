package subscriber

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/inkan-pki/inkan/certserial"
	"github.com/inkan-pki/inkan/enrollapi"
)

// Card is what signs a proof: the JPKI signature key (an RSA key that signs a
// SHA-256 digest with PKCS#1 v1.5, as crypto.Signer) and its certificate chain, the
// signature certificate first. PKCS11Card is a card reached through PKCS#11.
type Card interface {
	crypto.Signer
	Chain() [][]byte
}

// ProofClaims are the claims of a proof (enrollapi.Claims): an enrolment's card
// proof binds the CSR, a re-bind's card proof the serial of the derived
// certificate instead, and a re-bind's key proof (NewKeyProof) the serial and
// the new card's certificate.
type ProofClaims struct {
	Nonce    []byte // from the challenge
	Audience string // the URL the proof is posted to
	IssuedAt time.Time
	Expires  time.Time // at most enrollapi.MaxProofLifetime after IssuedAt
	CSR      []byte    // an enrolment's: the CSR's DER, whose SHA-256 the proof carries
	Serial   string    // a re-bind's: the derived certificate's serial (certserial's form)
	JPKICert []byte    // a key proof's: the new card's certificate (DER), whose SHA-256 it carries
}

// NewProof makes the proof of possession: a compact JWS with protected header
// {"alg":"RS256","typ":"JWT","x5c":[…]} and the claims nonce, aud, iat, exp and
// csr_sha256 (or, for a re-bind, serial), signed by card (for a card through
// PKCS#11: CKM_RSA_PKCS over the SHA-256 DigestInfo).
func NewProof(card crypto.Signer, chain [][]byte, c ProofClaims) (string, error) {
	claims := enrollapi.Claims{
		Nonce: base64.RawURLEncoding.EncodeToString(c.Nonce), Aud: c.Audience,
		Iat: c.IssuedAt.Unix(), Exp: c.Expires.Unix(), Serial: c.Serial,
	}
	switch {
	case c.Serial != "" && c.CSR != nil:
		return "", errors.New("enroll: a proof binds a CSR or a serial, not both")
	case c.JPKICert != nil:
		return "", errors.New("enroll: a card's proof carries its certificate in x5c, not as a claim")
	case c.Serial == "":
		sum := sha256.Sum256(c.CSR)
		claims.CSRSHA256 = base64.RawURLEncoding.EncodeToString(sum[:])
	}
	return signProof(card, chain, claims)
}

// signProof makes the compact JWS of claims, signed RS256 by card with chain as x5c.
func signProof(card crypto.Signer, chain [][]byte, claims enrollapi.Claims) (string, error) {
	if _, ok := card.Public().(*rsa.PublicKey); !ok {
		return "", fmt.Errorf("enroll: the card's key is %T, not RSA", card.Public())
	}
	if len(chain) == 0 {
		return "", errors.New("enroll: no certificate to put in x5c")
	}
	x5c := make([]string, len(chain))
	for i, der := range chain {
		x5c[i] = base64.StdEncoding.EncodeToString(der)
	}
	header, err := json.Marshal(struct {
		Alg string   `json:"alg"`
		Typ string   `json:"typ"`
		X5C []string `json:"x5c"`
	}{enrollapi.AlgRS256, "JWT", x5c})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(input))
	sig, err := card.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("enroll: the card did not sign: %w", err)
	}
	return input + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// NewCSR makes the subscriber's CSR for key. It carries nothing but the key and the
// signature that proves its possession: the policy decides the certificate's contents.
func NewCSR(key crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		return nil, fmt.Errorf("enroll: CSR: %w", err)
	}
	return der, nil
}

// Client talks to a node's enrollment API.
type Client struct {
	// BaseURL is the API's root, "https://ca.example.jp": the client posts to
	// BaseURL+enrollapi.PathChallenge and BaseURL+enrollapi.PathEnroll, and the
	// proof's aud is BaseURL+enrollapi.PathEnroll.
	BaseURL string
	// HTTP sends the requests (http.DefaultClient if nil).
	HTTP *http.Client
	// Now is the clock for iat and exp (time.Now if nil).
	Now func() time.Time
}

// Certificate is an enrolled certificate and the chain above it.
type Certificate struct {
	Serial  *big.Int
	Profile string
	// Chain is the certificate, then the CAs above it.
	Chain []*x509.Certificate
}

// PEM is the chain in PEM, the certificate first: what `inkan enroll --out` writes.
func (c *Certificate) PEM() []byte {
	var out []byte
	for _, cert := range c.Chain {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	return out
}

// Challenge asks for a nonce.
func (c *Client) Challenge(ctx context.Context) (nonce []byte, expires time.Time, err error) {
	var resp enrollapi.ChallengeResponse
	if err := c.post(ctx, enrollapi.PathChallenge, nil, &resp); err != nil {
		return nil, time.Time{}, err
	}
	nonce, err = base64.RawURLEncoding.Strict().DecodeString(resp.Nonce)
	if err != nil || len(nonce) != enrollapi.NonceLen {
		return nil, time.Time{}, errors.New("enroll: the server's nonce is not base64url of 32 bytes")
	}
	return nonce, resp.Expires, nil
}

// Enroll enrolls key: it makes the CSR, fetches a challenge, has card sign the proof,
// and submits them. A refusal is returned as an *enrollapi.Problem. profile may be
// empty (the server's default).
func (c *Client) Enroll(ctx context.Context, card Card, key crypto.Signer, profile string) (*Certificate, error) {
	csr, err := NewCSR(key)
	if err != nil {
		return nil, err
	}
	nonce, _, err := c.Challenge(ctx)
	if err != nil {
		return nil, err
	}
	t := c.now()
	proof, err := NewProof(card, card.Chain(), ProofClaims{
		Nonce: nonce, Audience: strings.TrimSuffix(c.BaseURL, "/") + enrollapi.PathEnroll,
		IssuedAt: t, Expires: t.Add(enrollapi.MaxProofLifetime - time.Minute), CSR: csr,
	})
	if err != nil {
		return nil, err
	}
	return c.Submit(ctx, enrollapi.Request{Proof: proof, CSR: base64.RawURLEncoding.EncodeToString(csr), Profile: profile}, key)
}

// now is the client's clock: Now if set, else the machine's.
func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

// Rebound is the outcome of a re-binding.
type Rebound struct {
	// Action is enrollapi.RebindReleased, RebindRelinked or RebindReissued.
	Action string
	// Certificate is the certificate bound now: the same one, or the new one.
	Certificate *Certificate
	// Replaced is the old certificate's serial when it was reissued (and revoked as
	// superseded); nil otherwise.
	Replaced *big.Int
}

// Rebind re-binds the derived certificate serial to card, the holder's NEW card
// (after a move, or a renewed card), proving both halves: it fetches a challenge,
// has card sign a proof naming serial, has key (the derived certificate's own
// key) sign a key proof over the same nonce, serial and the card's certificate,
// and posts both to enrollapi.PathRebind. A refusal is returned as an
// *enrollapi.Problem.
func (c *Client) Rebind(ctx context.Context, card Card, key crypto.Signer, serial *big.Int) (*Rebound, error) {
	if serial == nil || serial.Sign() <= 0 {
		return nil, errors.New("enroll: rebind: the serial must be positive")
	}
	if key == nil {
		return nil, errors.New("enroll: rebind: the derived certificate's key is required (without it, enrol anew)")
	}
	nonce, _, err := c.Challenge(ctx)
	if err != nil {
		return nil, err
	}
	t := c.now()
	serialHex := certserial.Format(serial)
	aud := strings.TrimSuffix(c.BaseURL, "/") + enrollapi.PathRebind
	chain := card.Chain()
	if len(chain) == 0 {
		return nil, errors.New("enroll: rebind: the card holds no certificate")
	}
	proof, err := NewProof(card, chain, ProofClaims{
		Nonce: nonce, Audience: aud, IssuedAt: t, Expires: t.Add(enrollapi.MaxProofLifetime - time.Minute),
		Serial: serialHex,
	})
	if err != nil {
		return nil, err
	}
	keyProof, err := NewKeyProof(key, ProofClaims{
		Nonce: nonce, Audience: aud, IssuedAt: t, Expires: t.Add(enrollapi.MaxProofLifetime - time.Minute),
		Serial: serialHex, JPKICert: chain[0],
	})
	if err != nil {
		return nil, err
	}
	var resp enrollapi.RebindResponse
	if err := c.post(ctx, enrollapi.PathRebind, enrollapi.RebindRequest{Proof: proof, Serial: serialHex, KeyProof: keyProof}, &resp); err != nil {
		return nil, err
	}
	cert, err := certificateOf(enrollapi.Response{Serial: resp.Serial, Chain: resp.Chain, Profile: resp.Profile})
	if err != nil {
		return nil, err
	}
	out := &Rebound{Action: resp.Action, Certificate: cert}
	switch resp.Action {
	case enrollapi.RebindReleased, enrollapi.RebindRelinked:
		if cert.Serial.Cmp(serial) != 0 {
			return nil, errors.New("enroll: the server re-bound another certificate")
		}
	case enrollapi.RebindReissued:
		var err error
		if out.Replaced, err = certserial.Parse(resp.Replaced); err != nil || out.Replaced.Cmp(serial) != 0 {
			return nil, errors.New("enroll: the server replaced another certificate")
		}
	default:
		return nil, fmt.Errorf("enroll: the server's action %q is unknown", clip(resp.Action))
	}
	return out, nil
}

// Submit posts a prepared request. If key is not nil, the returned certificate must
// be for it.
func (c *Client) Submit(ctx context.Context, req enrollapi.Request, key crypto.Signer) (*Certificate, error) {
	var resp enrollapi.Response
	if err := c.post(ctx, enrollapi.PathEnroll, req, &resp); err != nil {
		return nil, err
	}
	out, err := certificateOf(resp)
	if err != nil {
		return nil, err
	}
	if key != nil && !publicKeysEqual(out.Chain[0].PublicKey, key.Public()) {
		return nil, errors.New("enroll: the certificate is not for the key enrolled")
	}
	return out, nil
}

// certificateOf reads the certificate and chain of an answer.
func certificateOf(resp enrollapi.Response) (*Certificate, error) {
	out := &Certificate{Profile: resp.Profile}
	var err error
	if out.Serial, err = certserial.Parse(resp.Serial); err != nil {
		return nil, fmt.Errorf("enroll: the server's serial %w", err)
	}
	if len(resp.Chain) == 0 {
		return nil, errors.New("enroll: the server sent no certificate")
	}
	for i, s := range resp.Chain {
		der, err := base64.StdEncoding.Strict().DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("enroll: chain[%d] is not base64", i)
		}
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("enroll: chain[%d]: %w", i, err)
		}
		out.Chain = append(out.Chain, cert)
	}
	if out.Chain[0].SerialNumber.Cmp(out.Serial) != 0 {
		return nil, errors.New("enroll: the serial does not match the certificate")
	}
	return out, nil
}

// post sends body as JSON (or nothing) and decodes a 2xx answer into out, or returns
// the problem.
func (c *Client) post(ctx context.Context, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.BaseURL, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json, application/problem+json")
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return &unreachableError{URL: c.BaseURL, Err: err}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("enroll: read the answer: %w", err)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if resp.StatusCode/100 != 2 {
		if mt == "application/problem+json" {
			p := &enrollapi.Problem{}
			if json.Unmarshal(data, p) == nil && p.Type != "" {
				return p
			}
		}
		return fmt.Errorf("enroll: POST %s: HTTP %s", path, resp.Status)
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("enroll: POST %s: answer is not JSON: %w", path, err)
	}
	return nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	k, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && k.Equal(b)
}

// clip quotes at most 32 bytes of a server's string in a message.
func clip(s string) string {
	if len(s) > 32 {
		s = s[:32] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}
