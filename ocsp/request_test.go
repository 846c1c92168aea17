package ocsp

import (
	"bytes"
	"crypto"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"

	xocsp "golang.org/x/crypto/ocsp"
)

func TestParseRequestMatchesXCrypto(t *testing.T) {
	p := getPKI(t)
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		for _, leaf := range p.leaves {
			der := p.request(t, leaf, h)
			got, err := parseRequest(der)
			if err != nil {
				t.Fatalf("%v serial %x: %v", h, leaf.SerialNumber, err)
			}
			want, err := xocsp.ParseRequest(der)
			if err != nil {
				t.Fatal(err)
			}
			if got.hash != h || !bytes.Equal(got.nameHash, want.IssuerNameHash) ||
				!bytes.Equal(got.keyHash, want.IssuerKeyHash) || !bytes.Equal(got.serial, want.SerialNumber.Bytes()) {
				t.Errorf("%v serial %x: parsed %+v, x/crypto %+v", h, leaf.SerialNumber, got, want)
			}
		}
	}
}

func TestParseRequestZeroAlloc(t *testing.T) {
	p := getPKI(t)
	der := p.request(t, p.leaves[1], crypto.SHA1)
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := parseRequest(der); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("parseRequest allocates %v times per call, want 0", allocs)
	}
}

func TestParseRequestMalformed(t *testing.T) {
	p := getPKI(t)
	good := p.request(t, p.leaves[0], crypto.SHA1)
	twoRequests := func() []byte {
		// SEQUENCE { SEQUENCE { SEQUENCE { Request, Request } } }
		id, _ := parseRequest(good)
		_ = id
		r, _ := xocsp.ParseRequest(good)
		_ = r
		inner := good[6:] // the Request element inside the three SEQUENCE headers (short form lengths)
		list := append([]byte{0x30, byte(2 * len(inner))}, append(append([]byte{}, inner...), inner...)...)
		tbs := append([]byte{0x30, byte(len(list))}, list...)
		return append([]byte{0x30, byte(len(tbs))}, tbs...)
	}()
	cases := map[string][]byte{
		"empty":             {},
		"truncated":         good[:len(good)-3],
		"trailing data":     append(append([]byte{}, good...), 0),
		"not a sequence":    {0x04, 0x00},
		"two requests":      twoRequests,
		"random":            []byte("not an ocsp request at all"),
		"negative serial":   bytes.Replace(good, []byte{0x02, 0x02, 0x12, 0x34}, []byte{0x02, 0x02, 0x92, 0x34}, 1),
		"non-minimal zero":  bytes.Replace(good, []byte{0x02, 0x02, 0x12, 0x34}, []byte{0x02, 0x02, 0x00, 0x34}, 1),
		"short name hash":   bytes.Replace(good, []byte{0x04, 0x14}, []byte{0x04, 0x13}, 1),
		"length past input": {0x30, 0x82, 0xff, 0xff, 0x30},
	}
	for name, der := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := parseRequest(der); !errors.Is(err, errMalformed) {
				t.Fatalf("parseRequest(%x): %v, want errMalformed", der, err)
			}
		})
	}
	// The fallback (what encoding/asn1 reads) refuses several CertIDs too:
	// x/crypto would read the first alone, and the answer leave the rest out.
	if _, err := parseRequestStrict(twoRequests); !errors.Is(err, errMalformed) {
		t.Errorf("parseRequestStrict(two requests): %v, want errMalformed", err)
	}
	if _, err := parseRequestStrict(good); err != nil {
		t.Errorf("parseRequestStrict(one request): %v", err)
	}
}

func TestDecodeGETPath(t *testing.T) {
	p := getPKI(t)
	// A request whose base64 holds '+', '/' and '=' is what trips proxies up; look for one.
	var der []byte
	var b64 string
	for _, leaf := range p.leaves {
		for _, h := range certIDHashes {
			d := p.request(t, leaf, h)
			s := base64.StdEncoding.EncodeToString(d)
			if der == nil || strings.Contains(s, "+") && strings.Contains(s, "/") {
				der, b64 = d, s
			}
		}
	}
	if !strings.Contains(b64, "+") {
		t.Fatalf("no request among the fixtures has a '+' in its base64: %s", b64)
	}
	cases := map[string]string{
		"plain":                     "/" + b64,
		"doubled slash":             "//" + b64,
		"url escaped":               "/" + url.PathEscape(b64),
		"query escaped":             "/" + url.QueryEscape(b64),
		"plus as space":             "/" + strings.ReplaceAll(b64, "+", " "),
		"plus as %20":               "/" + strings.ReplaceAll(b64, "+", "%20"),
		"slash as %2F, plus as %20": "/" + strings.ReplaceAll(strings.ReplaceAll(b64, "/", "%2F"), "+", "%20"),
		"no padding":                "/" + strings.TrimRight(b64, "="),
		"url-safe alphabet":         "/" + base64.URLEncoding.EncodeToString(der),
		"lower-case escape":         "/" + strings.ReplaceAll(strings.ReplaceAll(url.QueryEscape(b64), "%2F", "%2f"), "%2B", "%2b"),
	}
	for name, path := range cases {
		t.Run(name, func(t *testing.T) {
			got, err := decodeGETPath(nil, []byte(path))
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			if !bytes.Equal(got, der) {
				t.Fatalf("decoded %x, want %x", got, der)
			}
		})
	}
	for _, bad := range []string{"/", "", "/%zz", "/%4", "/!!!!", "/" + strings.Repeat("A", maxGETPath+1)} {
		if _, err := decodeGETPath(nil, []byte(bad)); !errors.Is(err, errMalformed) {
			t.Errorf("decodeGETPath(%.20q): %v, want errMalformed", bad, err)
		}
	}
}

func FuzzParseRequest(f *testing.F) {
	p := getPKI(f)
	for _, leaf := range p.leaves {
		f.Add(p.request(f, leaf, crypto.SHA1))
		f.Add(p.request(f, leaf, crypto.SHA256))
	}
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, der []byte) {
		fast, ferr := parseRequest(der)
		if ferr != nil {
			_, _ = parseRequestStrict(der)
			return
		}
		// Whatever the fast parser accepts, the x/crypto parser reads the same way.
		strict, err := xocsp.ParseRequest(der)
		if err != nil {
			return // x/crypto is stricter about some encodings; refusing them is fine
		}
		if !bytes.Equal(fast.serial, strict.SerialNumber.Bytes()) || !bytes.Equal(fast.keyHash, strict.IssuerKeyHash) {
			t.Fatalf("fast parser read %+v, x/crypto %+v", fast, strict)
		}
	})
}

// FuzzDecodeGETPath: whatever the path, decodeGETPath answers as the
// normalise-then-decode reference does, and what it decodes the CertID parser
// survives.
func FuzzDecodeGETPath(f *testing.F) {
	f.Add([]byte("/MEowSDBGMEQwQjAJBgUrDgMCGgUABBQ%2B"))
	f.Add([]byte("//ME ow=="))
	f.Add([]byte("/MEow=="))
	f.Add([]byte("/ME=ow"))
	f.Add([]byte("/MEow?x=1"))
	f.Add([]byte("/ME\now"))
	f.Fuzz(func(t *testing.T, path []byte) {
		checkDecodeGETPath(t, path)
		der, err := decodeGETPath(nil, path)
		if err == nil {
			_, _ = parseRequest(der)
		}
	})
}

// decodeGETPathReference is decodeGETPath as issue 20 left it: every path
// normalised into a buffer, then decoded. The fast path (plain base64 decoded in
// place) must answer as it does, byte for byte and error for error.
func decodeGETPathReference(path []byte) ([]byte, error) {
	for len(path) > 0 && path[0] == '/' {
		path = path[1:]
	}
	if len(path) == 0 || len(path) > maxGETPath {
		return nil, errMalformed
	}
	b64 := make([]byte, 0, len(path))
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '?' || c == '#':
			i = len(path)
			continue
		case c == '%':
			if i+2 >= len(path) {
				return nil, errMalformed
			}
			hi, ok1 := unhex(path[i+1])
			lo, ok2 := unhex(path[i+2])
			if !ok1 || !ok2 {
				return nil, errMalformed
			}
			c = hi<<4 | lo
			i += 2
		}
		switch c {
		case ' ', '-':
			c = '+'
		case '_':
			c = '/'
		}
		if c == '=' {
			continue
		}
		b64 = append(b64, c)
	}
	der, err := base64.RawStdEncoding.DecodeString(string(b64))
	if err != nil {
		return nil, errMalformed
	}
	return der, nil
}

// checkDecodeGETPath fails t unless decodeGETPath gives for path what the
// reference gives, appending after what dst already held and leaving that alone.
func checkDecodeGETPath(t *testing.T, path []byte) {
	t.Helper()
	want, wantErr := decodeGETPathReference(path)
	for _, dst := range [][]byte{nil, []byte("kept"), make([]byte, 0, 4096)} {
		prefix := string(dst)
		got, err := decodeGETPath(dst, path)
		if !errors.Is(err, wantErr) && !(err == nil && wantErr == nil) {
			t.Fatalf("%q: error %v, the reference %v", path, err, wantErr)
		}
		if string(got[:len(prefix)]) != prefix {
			t.Fatalf("%q: what dst held became %q", path, got[:len(prefix)])
		}
		if err == nil && !bytes.Equal(got[len(prefix):], want) {
			t.Fatalf("%q: decoded %x, the reference %x", path, got[len(prefix):], want)
		}
		if err != nil && len(got) != len(prefix) {
			t.Fatalf("%q: refused, but dst grew to %d bytes", path, len(got))
		}
	}
}

// TestDecodeGETPathMatchesReference: plain base64, which is decoded where it
// lies, and every form that needs rewriting answer as the reference does.
func TestDecodeGETPathMatchesReference(t *testing.T) {
	p := getPKI(t)
	der := p.request(t, p.leaves[1], crypto.SHA256)
	b64 := base64.StdEncoding.EncodeToString(der)
	raw := base64.RawStdEncoding.EncodeToString(der)
	cases := []struct{ name, path string }{
		{"plain", "/" + b64},
		{"plain unpadded", "/" + raw},
		{"one pad of two", "/" + raw + "="},
		{"more padding than base64 has", "/" + raw + "===="},
		{"doubled slash", "//" + b64},
		{"no leading slash", b64},
		{"padding inside", "/" + raw[:8] + "==" + raw[8:]},
		{"query", "/" + b64 + "?nonce=1"},
		{"fragment", "/" + b64 + "#x"},
		{"query only", "/?x"},
		{"escaped", "/" + url.QueryEscape(b64)},
		{"plus as space", "/" + strings.ReplaceAll(b64, "+", " ")},
		{"url-safe", "/" + base64.URLEncoding.EncodeToString(der)},
		{"newline inside", "/" + raw[:8] + "\n" + raw[8:]},
		{"only padding", "/=="},
		{"one char", "/M"},
		{"five chars", "/MEowS"},
		{"bad char", "/ME*w"},
		{"bad escape", "/ME%zz"},
		{"cut escape", "/MEow%2"},
		{"empty", ""},
		{"slashes only", "///"},
		{"longest", "/" + strings.Repeat("A", maxGETPath)},
		{"too long", "/" + strings.Repeat("A", maxGETPath+1)},
		{"longest escaped", "/" + strings.Repeat("%41", maxGETPath/3)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { checkDecodeGETPath(t, []byte(c.path)) })
	}
}

// TestDecodeGETPathNoAlloc: into a pooled buffer with room, decoding a GET path
// allocates nothing, plain or escaped.
func TestDecodeGETPathNoAlloc(t *testing.T) {
	p := getPKI(t)
	der := p.request(t, p.leaves[1], crypto.SHA1)
	buf := make([]byte, 0, maxPOSTBody)
	for _, path := range []string{
		"/" + base64.StdEncoding.EncodeToString(der),
		"/" + url.QueryEscape(base64.StdEncoding.EncodeToString(der)),
	} {
		allocs := testing.AllocsPerRun(100, func() {
			if _, err := decodeGETPath(buf, []byte(path)); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %v allocations per call, want 0", path, allocs)
		}
	}
}
