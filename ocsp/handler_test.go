package ocsp

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
	xocsp "golang.org/x/crypto/ocsp"
)

// serve starts the responder on a loopback socket and returns its base URL.
func serve(t *testing.T, r *responder) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(r.ServeFastHTTP)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

// servedPKI caches a good response for leaves[0], a revoked one for leaves[1] and
// nothing for leaves[2].
func servedPKI(t *testing.T) (*testPKI, string, *response) {
	p := getPKI(t)
	c := newCache()
	if err := c.AddIssuer("ca1", p.ca); err != nil {
		t.Fatal(err)
	}
	var good *response
	for _, h := range certIDHashes {
		r := p.signedResponse(t, p.leaves[0], h, xocsp.Good, time.Time{})
		if h == crypto.SHA256 {
			good = r
		}
		if err := c.Put("ca1", h, p.leaves[0].SerialNumber.Bytes(), r); err != nil {
			t.Fatal(err)
		}
		r = p.signedResponse(t, p.leaves[1], h, xocsp.Revoked, time.Now().Add(-time.Hour))
		if err := c.Put("ca1", h, p.leaves[1].SerialNumber.Bytes(), r); err != nil {
			t.Fatal(err)
		}
	}
	return p, serve(t, newResponder(c, nil, nil)), good
}

func writePEM(t *testing.T, dir, name string, cert *x509.Certificate) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestOpenSSLClient(t *testing.T) {
	testenv.Tool(t, "openssl", "openssl")
	p, url, _ := servedPKI(t)
	dir := t.TempDir()
	caPEM := writePEM(t, dir, "ca.pem", p.ca)
	cases := []struct {
		name   string
		leaf   int
		digest string
		want   []string
	}{
		{"good sha1", 0, "-sha1", []string{": good", "Response verify OK"}},
		{"good sha256", 0, "-sha256", []string{": good", "Response verify OK"}},
		{"good sha384", 0, "-sha384", []string{": good", "Response verify OK"}},
		{"good sha512", 0, "-sha512", []string{": good", "Response verify OK"}},
		{"revoked", 1, "-sha1", []string{": revoked", "Reason: keyCompromise"}},
		{"revoked sha256", 1, "-sha256", []string{": revoked", "Reason: keyCompromise"}},
		{"revoked sha512", 1, "-sha512", []string{": revoked", "Reason: keyCompromise"}},
		{"not cached", 2, "-sha1", []string{"unauthorized"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			leafPEM := writePEM(t, dir, "leaf"+strconv.Itoa(tc.leaf)+".pem", p.leaves[tc.leaf])
			out, _ := exec.Command("openssl", "ocsp", tc.digest, "-issuer", caPEM, "-cert", leafPEM,
				"-url", url, "-VAfile", caPEM, "-no_nonce").CombinedOutput()
			for _, w := range tc.want {
				if !strings.Contains(string(out), w) {
					t.Errorf("openssl ocsp output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestGETHeadersAndConditional(t *testing.T) {
	p, url, good := servedPKI(t)
	req := p.request(t, p.leaves[0], crypto.SHA256)
	resp, err := http.Get(url + "/" + base64.StdEncoding.EncodeToString(req))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Equal(body, good.DER) {
		t.Fatalf("status %d, body %d bytes", resp.StatusCode, len(body))
	}
	h := resp.Header
	if h.Get("Content-Type") != "application/ocsp-response" {
		t.Errorf("Content-Type %q", h.Get("Content-Type"))
	}
	cc := h.Get("Cache-Control")
	if !strings.HasPrefix(cc, "max-age=") || !strings.HasSuffix(cc, ", public, no-transform, must-revalidate") {
		t.Errorf("Cache-Control %q", cc)
	}
	age, _ := strconv.Atoi(strings.TrimPrefix(strings.SplitN(cc, ",", 2)[0], "max-age="))
	if until := int(time.Until(good.NextUpdate).Seconds()); age > until || age < until-5 {
		t.Errorf("max-age %d, want about %d (until nextUpdate)", age, until)
	}
	if lm, _ := http.ParseTime(h.Get("Last-Modified")); !lm.Equal(good.ThisUpdate) {
		t.Errorf("Last-Modified %q, want %v", h.Get("Last-Modified"), good.ThisUpdate)
	}
	if ex, _ := http.ParseTime(h.Get("Expires")); !ex.Equal(good.NextUpdate) {
		t.Errorf("Expires %q, want %v", h.Get("Expires"), good.NextUpdate)
	}
	if _, err := xocsp.ParseResponseForCert(body, p.leaves[0], p.ca); err != nil {
		t.Errorf("response does not verify: %v", err)
	}

	conditional := []struct {
		name   string
		header map[string]string
		want   int
	}{
		{"If-None-Match the ETag", map[string]string{"If-None-Match": h.Get("ETag")}, http.StatusNotModified},
		{"If-None-Match another", map[string]string{"If-None-Match": `"other"`}, http.StatusOK},
		{"If-Modified-Since Last-Modified", map[string]string{"If-Modified-Since": h.Get("Last-Modified")}, http.StatusNotModified},
		{"If-Modified-Since later", map[string]string{"If-Modified-Since": good.ThisUpdate.Add(time.Hour).Format(http.TimeFormat)}, http.StatusNotModified},
		{"If-Modified-Since earlier", map[string]string{"If-Modified-Since": good.ThisUpdate.Add(-time.Second).Format(http.TimeFormat)}, http.StatusOK},
		{"If-Modified-Since garbage", map[string]string{"If-Modified-Since": "yesterday"}, http.StatusOK},
		// If-None-Match decides alone when both are sent (RFC 9110 §13.2.2).
		{"If-None-Match another, If-Modified-Since Last-Modified", map[string]string{"If-None-Match": `"other"`, "If-Modified-Since": h.Get("Last-Modified")}, http.StatusOK},
	}
	for _, c := range conditional {
		creq, _ := http.NewRequest("GET", url+"/"+base64.StdEncoding.EncodeToString(req), nil)
		for k, v := range c.header {
			creq.Header.Set(k, v)
		}
		resp2, err := http.DefaultClient.Do(creq)
		if err != nil {
			t.Fatal(err)
		}
		resp2.Body.Close()
		if resp2.StatusCode != c.want {
			t.Errorf("%s: status %d, want %d", c.name, resp2.StatusCode, c.want)
		}
	}
}

// TestStaleIsNeverServed: a response at or past its nextUpdate is answered
// tryLater, and counted, never sent.
func TestStaleIsNeverServed(t *testing.T) {
	p := getPKI(t)
	c := newCache()
	if err := c.AddIssuer("ca1", p.ca); err != nil {
		t.Fatal(err)
	}
	var good *response
	for _, h := range certIDHashes {
		r := p.signedResponse(t, p.leaves[0], h, xocsp.Good, time.Time{})
		if h == crypto.SHA256 {
			good = r
		}
		if err := c.Put("ca1", h, p.leaves[0].SerialNumber.Bytes(), r); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	r := newResponder(c, nil, reg)
	url := serve(t, r)
	ask := func() []byte {
		resp, err := http.Post(url+"/", "application/ocsp-request", bytes.NewReader(p.request(t, p.leaves[0], crypto.SHA256)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return b
	}
	if got := ask(); !bytes.Equal(got, good.DER) {
		t.Fatalf("before nextUpdate: %x, want the response", got)
	}
	for _, at := range []time.Time{good.NextUpdate, good.NextUpdate.Add(time.Hour)} {
		r.now = func() time.Time { return at }
		if got := ask(); !bytes.Equal(got, respTryLater) {
			t.Fatalf("at %v (nextUpdate %v): %x, want tryLater", at, good.NextUpdate, got)
		}
	}
	if v := counterValue(r.results.stale); v != 2 {
		t.Errorf("stale counter %v, want 2", v)
	}
}

func TestBadRequests(t *testing.T) {
	_, url, _ := servedPKI(t)
	post := func(body []byte) (int, []byte) {
		resp, err := http.Post(url+"/", "application/ocsp-request", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for name, body := range map[string][]byte{
		"empty":     {},
		"garbage":   []byte("hello"),
		"truncated": {0x30, 0x82, 0x01},
	} {
		if code, b := post(body); code != 200 || !bytes.Equal(b, respMalformed) {
			t.Errorf("POST %s: %d %x, want malformedRequest", name, code, b)
		}
	}
	if code, _ := post(make([]byte, maxPOSTBody+1)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized POST: status %d, want 413", code)
	}
	// A path no Go client would send: write it on the socket by hand.
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte("GET /%%% HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
	raw, _ := io.ReadAll(conn)
	conn.Close()
	if !bytes.HasSuffix(raw, respMalformed) {
		t.Errorf("GET /%%%%%%: %q, want malformedRequest", raw)
	}
	var resp *http.Response
	req, _ := http.NewRequest("PUT", url+"/", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") == "" {
		t.Errorf("PUT: status %d Allow %q", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

// TestServeZeroAlloc: answering from the cache allocates nothing, by POST or by
// GET, the path plain or escaped, once the request buffers are warm.
func TestServeZeroAlloc(t *testing.T) {
	p := getPKI(t)
	c := newCache()
	if err := c.AddIssuer("ca1", p.ca); err != nil {
		t.Fatal(err)
	}
	good := p.signedResponse(t, p.leaves[0], crypto.SHA1, xocsp.Good, time.Time{})
	if err := c.Put("ca1", crypto.SHA1, p.leaves[0].SerialNumber.Bytes(), good); err != nil {
		t.Fatal(err)
	}
	r := newResponder(c, nil, nil)
	der := p.request(t, p.leaves[0], crypto.SHA1)
	b64 := base64.StdEncoding.EncodeToString(der)
	cases := []struct {
		name, method, uri string
	}{
		{"POST", "POST", "/"},
		{"GET plain", "GET", "/" + b64},
		{"GET escaped", "GET", "/" + url.QueryEscape(b64)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ctx fasthttp.RequestCtx
			serve := func() {
				ctx.Request.Reset()
				ctx.Response.Reset()
				ctx.Request.Header.SetMethod(tc.method)
				ctx.Request.SetRequestURI(tc.uri)
				if tc.method == "POST" {
					ctx.Request.SetBodyRaw(der)
				}
				r.ServeFastHTTP(&ctx)
			}
			serve()
			if !bytes.Equal(ctx.Response.Body(), good.DER) {
				t.Fatalf("answered %x, want the cached response", ctx.Response.Body())
			}
			if allocs := testing.AllocsPerRun(100, serve); allocs != 0 {
				t.Errorf("%v allocations per request, want 0", allocs)
			}
		})
	}
}

// TestConditionalHeaderNamesAnyCase: header names are case-insensitive (RFC
// 9110 §5.1), and the responder looks the conditional ones up by their
// canonical names, so the server must have normalised what the client sent.
// Written on the socket by hand: Go's client canonicalises names itself.
func TestConditionalHeaderNamesAnyCase(t *testing.T) {
	p, base, good := servedPKI(t)
	path := "/" + base64.StdEncoding.EncodeToString(p.request(t, p.leaves[0], crypto.SHA256))
	lastModified := string(good.lastModified)
	cases := []struct {
		name, header string
		want         int
	}{
		{"if-none-match", "if-none-match: " + string(good.etag), http.StatusNotModified},
		{"IF-NONE-MATCH", "IF-NONE-MATCH: " + string(good.etag), http.StatusNotModified},
		{"if-modified-since", "if-modified-since: " + lastModified, http.StatusNotModified},
		{"If-modified-SINCE", "If-modified-SINCE: " + lastModified, http.StatusNotModified},
		{"if-none-match another", "if-none-match: \"other\"\r\nif-modified-since: " + lastModified, http.StatusOK},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			if _, err := conn.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: x\r\n" + tc.header + "\r\nConnection: close\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != tc.want {
				t.Errorf("status %d, want %d", resp.StatusCode, tc.want)
			}
		})
	}
}
