package ocsp

import (
	"crypto"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	xocsp "golang.org/x/crypto/ocsp"
)

// BenchmarkParse compares the in-place CertID parser with x/crypto's ParseRequest.
func BenchmarkParse(b *testing.B) {
	p := getPKI(b)
	der := p.request(b, p.leaves[1], crypto.SHA1)
	b.Run("cryptobyte", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := parseRequest(der); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("x-crypto-ocsp", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := xocsp.ParseRequest(der); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkServePOST is the responder's whole hot path without the socket: parse,
// look up among 100,000 cached serials, set headers, write.
func BenchmarkServePOST(b *testing.B) {
	p := getPKI(b)
	c := newCache()
	if err := c.AddIssuer("ca1", p.ca); err != nil {
		b.Fatal(err)
	}
	resp := p.signedResponse(b, p.leaves[1], crypto.SHA1, xocsp.Good, time.Time{})
	serial := make([]byte, 9)
	for i := range 100_000 {
		serial[0], serial[7], serial[8] = 0x40, byte(i>>8), byte(i)
		serial[6] = byte(i >> 16)
		_ = c.Put("ca1", crypto.SHA1, serial, resp)
	}
	_ = c.Put("ca1", crypto.SHA1, p.leaves[1].SerialNumber.Bytes(), resp)
	r := newResponder(c, nil, nil)
	der := p.request(b, p.leaves[1], crypto.SHA1)
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	for b.Loop() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetBodyRaw(der)
		r.ServeFastHTTP(&ctx)
		if len(ctx.Response.Body()) != len(resp.DER) {
			b.Fatal("wrong answer")
		}
	}
}
