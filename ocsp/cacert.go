package ocsp

import (
	"bytes"

	"github.com/valyala/fasthttp"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca"
)

// caCertificates serves GET /ca/<issuer-id>.crt (the caIssuers URL of every
// certificate: the CA certificate, DER) and hands every other request to next.
func caCertificates(view func(func(*bbolt.Tx) error) error, next fasthttp.RequestHandler) fasthttp.RequestHandler {
	prefix, suffix := []byte("/ca/"), []byte(".crt")
	return func(ctx *fasthttp.RequestCtx) {
		p := ctx.Path()
		if !bytes.HasPrefix(p, prefix) || !(ctx.IsGet() || ctx.IsHead()) {
			next(ctx)
			return
		}
		id, ok := bytes.CutSuffix(p[len(prefix):], suffix)
		var der []byte
		if ok && len(id) > 0 {
			_ = view(func(tx *bbolt.Tx) error {
				if is, err := ca.Read(tx).LookupIssuer(string(id)); err == nil && is.Cert != nil {
					der = is.Cert.Raw
				}
				return nil
			})
		}
		if der == nil {
			ctx.SetStatusCode(fasthttp.StatusNotFound)
			ctx.SetContentType("text/plain; charset=utf-8")
			ctx.SetBodyString("no such CA certificate\n")
			return
		}
		ctx.SetContentType("application/pkix-cert")
		ctx.Response.Header.Set("Cache-Control", "max-age=3600, public")
		ctx.SetBody(der)
	}
}
