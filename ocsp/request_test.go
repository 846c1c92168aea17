package ocsp

import (
	"bytes"
	"crypto"
	"encoding/base64"
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
			if _, err := parseRequest(der); err == nil {
				t.Fatalf("parsed %x", der)
			}
		})
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
		if _, err := decodeGETPath(nil, []byte(bad)); err == nil {
			t.Errorf("decodeGETPath(%.20q) accepted", bad)
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

func FuzzDecodeGETPath(f *testing.F) {
	f.Add([]byte("/MEowSDBGMEQwQjAJBgUrDgMCGgUABBQ%2B"))
	f.Add([]byte("//ME ow=="))
	f.Fuzz(func(t *testing.T, path []byte) {
		der, err := decodeGETPath(nil, path)
		if err == nil {
			_, _ = parseRequest(der)
		}
	})
}
