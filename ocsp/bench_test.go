package ocsp

import (
	"bufio"
	"crypto"
	"encoding/base64"
	"errors"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
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

// benchResponder is what deploy/bench/ocspserve serves: a response for leaves[1]
// among 100,000 cached serials. It returns the responder, the response and the
// SHA-1 request for it.
func benchResponder(b *testing.B) (*responder, *response, []byte) {
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
	return newResponder(c, nil, nil), resp, p.request(b, p.leaves[1], crypto.SHA1)
}

// BenchmarkServe is the responder's whole hot path without the socket, for a
// POST and for the same request as an RFC 5019 GET: decode the path (GET), parse,
// look up among 100,000 cached serials, set headers, write.
func BenchmarkServe(b *testing.B) {
	r, resp, der := benchResponder(b)
	uri := "/" + base64.StdEncoding.EncodeToString(der)
	for _, method := range []string{"GET", "POST"} {
		b.Run(method, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			b.ReportAllocs()
			for b.Loop() {
				ctx.Request.Reset()
				ctx.Response.Reset()
				ctx.Request.Header.SetMethod(method)
				if method == "GET" {
					ctx.Request.SetRequestURI(uri)
				} else {
					ctx.Request.SetBodyRaw(der)
				}
				r.ServeFastHTTP(&ctx)
				if len(ctx.Response.Body()) != len(resp.DER) {
					b.Fatal("wrong answer")
				}
			}
		})
	}
}

// BenchmarkListener measures what deploy/bench/ocsp.sh measures with wrk, inside
// go test: the responder on NewServer over loopback, 256 keep-alive connections,
// each sending its next request when it has read the answer to the last. ns/op is
// wall time per request over all connections; allocs/op counts the whole process
// (the clients reuse their buffers, so it is the server's); p50 and p99 are each
// request's time from write to last byte read. The clients share the CPU with the
// server, so compare GET with POST and one build with another in the same run, not
// these figures with wrk's.
func BenchmarkListener(b *testing.B) {
	r, resp, der := benchResponder(b)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := NewServer(r.ServeFastHTTP)
	go func() { _ = srv.Serve(ln) }()
	b.Cleanup(func() { _ = srv.Shutdown() })
	addr := ln.Addr().String()
	requests := map[string][]byte{
		"GET": []byte("GET /" + base64.StdEncoding.EncodeToString(der) + " HTTP/1.1\r\nHost: " + addr + "\r\n\r\n"),
		"POST": append([]byte("POST / HTTP/1.1\r\nHost: "+addr+"\r\nContent-Type: application/ocsp-request\r\n"+
			"Content-Length: "+strconv.Itoa(len(der))+"\r\n\r\n"), der...),
	}
	const conns = 256
	for _, method := range []string{"GET", "POST"} {
		b.Run(method, func(b *testing.B) {
			req := requests[method]
			clients := make([]*benchClient, conns)
			for i := range clients {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				clients[i] = &benchClient{conn: c, br: bufio.NewReaderSize(c, 4096)}
				defer c.Close()
				if err := clients[i].do(req, len(resp.DER)); err != nil { // warm the connection
					b.Fatal(err)
				}
			}
			lat := make([]time.Duration, b.N)
			var next atomic.Int64
			var wg sync.WaitGroup
			errs := make(chan error, conns)
			b.ReportAllocs()
			b.ResetTimer()
			for _, c := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for {
						i := next.Add(1) - 1
						if i >= int64(len(lat)) {
							return
						}
						t0 := time.Now()
						if err := c.do(req, len(resp.DER)); err != nil {
							errs <- err
							return
						}
						lat[i] = time.Since(t0)
					}
				}()
			}
			wg.Wait()
			b.StopTimer()
			select {
			case err := <-errs:
				b.Fatal(err)
			default:
			}
			slices.Sort(lat)
			b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
		})
	}
}

// benchClient is one keep-alive connection of BenchmarkListener.
type benchClient struct {
	conn net.Conn
	br   *bufio.Reader
	resp fasthttp.Response
}

// do sends req and reads the answer, which must be 200 with a body of n bytes.
func (c *benchClient) do(req []byte, n int) error {
	if _, err := c.conn.Write(req); err != nil {
		return err
	}
	c.resp.Reset()
	if err := c.resp.Read(c.br); err != nil {
		return err
	}
	if c.resp.StatusCode() != fasthttp.StatusOK || len(c.resp.Body()) != n {
		return errBenchAnswer
	}
	return nil
}

var errBenchAnswer = errors.New("ocsp bench: not the cached response")
