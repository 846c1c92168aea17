package enroll

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
)

// maxCSRLen bounds the CSR's DER: a CSR for an RSA-4096 key with a few attributes is
// under 2 KB.
const maxCSRLen = 16 << 10

// parseCSR is the CSR intake: the request's csr field is base64url (no padding) of a
// DER PKCS#10 request, with nothing after it, signed by the key it carries with an
// algorithm of SHA-256 or stronger (that signature is the proof of possession of the
// new key). What the CSR asks for beyond its key (subject, extensions) is not used:
// the policy decides the certificate's contents. Which key types are allowed is the
// profile's decision, not the intake's. Every error matches errCSRInvalid.
func parseCSR(b64 string) (*x509.CertificateRequest, []byte, error) {
	if len(b64) > maxCSRLen*4/3+4 {
		return nil, nil, csrInvalid("longer than %d bytes", maxCSRLen)
	}
	der, err := decodeSegment(b64)
	if err != nil {
		return nil, nil, csrInvalid("not base64url without padding")
	}
	if len(der) == 0 {
		return nil, nil, csrInvalid("empty")
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, nil, csrInvalid("not a DER PKCS#10 request")
	}
	switch csr.SignatureAlgorithm {
	case x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA,
		x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS,
		x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512, x509.PureEd25519:
	default:
		return nil, nil, csrInvalid("signature algorithm %v not accepted", csr.SignatureAlgorithm)
	}
	switch csr.PublicKey.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
	default:
		return nil, nil, csrInvalid("public key of an unknown type")
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, csrInvalid("its signature does not verify with its key")
	}
	return csr, der, nil
}
