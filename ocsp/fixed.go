package ocsp

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/valyala/fasthttp"
	xocsp "golang.org/x/crypto/ocsp"
)

// errFixedNotGood refuses a fixed response that does not say good.
var errFixedNotGood = errors.New("ocsp: fixed response: not good")

// FixedResponder is the node's OCSP responder and cache answering one signed,
// good response (der, which issuer signed) for each of serials under the SHA-1
// CertID, without the cluster: deploy/bench/ocspserve measures the request path
// with it. A request for any other serial is answered unauthorized, as on a node.
func FixedResponder(issuer *x509.Certificate, der []byte, serials ...[]byte) (fasthttp.RequestHandler, error) {
	r, err := xocsp.ParseResponse(der, issuer)
	if err != nil {
		return nil, fmt.Errorf("ocsp: fixed response: %w", err)
	}
	if r.Status != xocsp.Good {
		return nil, errFixedNotGood
	}
	resp := newResponse(der, certStatus{Status: statusGood, Reason: -1}, r.ThisUpdate, r.NextUpdate)
	c := newCache()
	const id = "fixed"
	if err := c.AddIssuer(id, issuer); err != nil {
		return nil, err
	}
	for _, s := range serials {
		if err := c.Put(id, crypto.SHA1, s, resp); err != nil {
			return nil, err
		}
	}
	return newResponder(c, nil, nil).ServeFastHTTP, nil
}
