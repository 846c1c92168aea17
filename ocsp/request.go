package ocsp

import (
	"bytes"
	"crypto"
	"encoding/asn1"
	"encoding/base64"
	"errors"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
	xocsp "golang.org/x/crypto/ocsp"
)

// certID is what an OCSP request asks about. Its slices alias the request bytes, so
// parsing one costs no allocation; it must not outlive the request buffer.
type certID struct {
	hash     crypto.Hash
	nameHash []byte
	keyHash  []byte
	serial   []byte // big-endian magnitude, minimal: no leading zero byte
}

var (
	errMalformed       = errors.New("ocsp: malformed request")
	errUnsupportedHash = errors.New("ocsp: unsupported CertID hash algorithm")
)

// DER contents of the hash algorithm OIDs a CertID may use.
var (
	oidSHA1   = []byte{0x2b, 0x0e, 0x03, 0x02, 0x1a}
	oidSHA256 = []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01}
	oidSHA384 = []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02}
	oidSHA512 = []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03}
)

// parseRequest reads the single CertID of a DER OCSPRequest (RFC 6960 §4.1.1) without
// allocating. RFC 5019 clients send exactly one Request; a request list of any other
// length is malformed here. The optional signature, requestor name and extensions
// (the nonce among them) are skipped: responses come from the cache and carry no nonce.
func parseRequest(der []byte) (certID, error) {
	var id certID
	in := cryptobyte.String(der)
	var req, tbs, list, one, cid, alg, oid cryptobyte.String
	if !in.ReadASN1(&req, cbasn1.SEQUENCE) || !in.Empty() ||
		!req.ReadASN1(&tbs, cbasn1.SEQUENCE) {
		return id, errMalformed
	}
	if !req.Empty() && (!req.SkipASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) || !req.Empty()) {
		return id, errMalformed
	}
	// version [0] EXPLICIT INTEGER DEFAULT v1(0); read by hand, since cryptobyte's
	// optional-integer reader takes an interface and so allocates.
	if tbs.PeekASN1Tag(cbasn1.Tag(0).Constructed().ContextSpecific()) {
		var explicit, version cryptobyte.String
		if !tbs.ReadASN1(&explicit, cbasn1.Tag(0).Constructed().ContextSpecific()) ||
			!explicit.ReadASN1(&version, cbasn1.INTEGER) || !explicit.Empty() ||
			len(version) != 1 || version[0] != 0 {
			return id, errMalformed
		}
	}
	if !tbs.SkipOptionalASN1(cbasn1.Tag(1).Constructed().ContextSpecific()) ||
		!tbs.ReadASN1(&list, cbasn1.SEQUENCE) ||
		!tbs.SkipOptionalASN1(cbasn1.Tag(2).Constructed().ContextSpecific()) || !tbs.Empty() {
		return id, errMalformed
	}
	if !list.ReadASN1(&one, cbasn1.SEQUENCE) || !list.Empty() ||
		!one.ReadASN1(&cid, cbasn1.SEQUENCE) ||
		!one.SkipOptionalASN1(cbasn1.Tag(0).Constructed().ContextSpecific()) || !one.Empty() {
		return id, errMalformed
	}
	if !cid.ReadASN1(&alg, cbasn1.SEQUENCE) || !alg.ReadASN1(&oid, cbasn1.OBJECT_IDENTIFIER) {
		return id, errMalformed
	}
	if !alg.Empty() { // parameters: absent or NULL
		var null cryptobyte.String
		if !alg.ReadASN1(&null, cbasn1.NULL) || len(null) != 0 || !alg.Empty() {
			return id, errMalformed
		}
	}
	var nameHash, keyHash, serial cryptobyte.String
	if !cid.ReadASN1(&nameHash, cbasn1.OCTET_STRING) ||
		!cid.ReadASN1(&keyHash, cbasn1.OCTET_STRING) ||
		!cid.ReadASN1(&serial, cbasn1.INTEGER) || !cid.Empty() {
		return id, errMalformed
	}
	// A serial is a positive INTEGER in minimal form.
	if len(serial) == 0 || serial[0]&0x80 != 0 ||
		(len(serial) > 1 && serial[0] == 0 && serial[1]&0x80 == 0) {
		return id, errMalformed
	}
	if serial[0] == 0 {
		serial = serial[1:]
	}
	id.hash = hashByOID(oid)
	if id.hash == 0 {
		return id, errUnsupportedHash
	}
	if len(nameHash) != id.hash.Size() || len(keyHash) != id.hash.Size() {
		return id, errMalformed
	}
	id.nameHash, id.keyHash, id.serial = nameHash, keyHash, serial
	return id, nil
}

// requestList is an OCSPRequest read only as far as its requestList (RFC 6960
// §4.1.1), to count the CertIDs asked about.
type requestList struct {
	TBS struct {
		Version asn1.RawValue   `asn1:"optional,explicit,tag:0"`
		Name    asn1.RawValue   `asn1:"optional,explicit,tag:1"`
		List    []asn1.RawValue // Request
		Ext     asn1.RawValue   `asn1:"optional,explicit,tag:2"`
	}
	Signature asn1.RawValue `asn1:"optional,explicit,tag:0"`
}

// parseRequestStrict is the fallback for a request the fast parser refused: the
// x/crypto parser, which allocates but reads what encoding/asn1 accepts. Like
// the fast parser it takes a request about exactly one certificate: x/crypto
// reads only the first of several, and a response about that one alone would
// leave the others unanswered without saying so (a pre-signed response is
// about one certificate; RFC 5019 clients ask about one).
func parseRequestStrict(der []byte) (certID, error) {
	var l requestList
	if rest, err := asn1.Unmarshal(der, &l); err != nil || len(rest) != 0 || len(l.TBS.List) != 1 {
		return certID{}, errMalformed
	}
	r, err := xocsp.ParseRequest(der)
	if err != nil {
		return certID{}, errMalformed
	}
	if !r.HashAlgorithm.Available() || r.SerialNumber.Sign() <= 0 {
		return certID{}, errUnsupportedHash
	}
	switch r.HashAlgorithm {
	case crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512:
	default:
		return certID{}, errUnsupportedHash
	}
	return certID{
		hash:     r.HashAlgorithm,
		nameHash: r.IssuerNameHash,
		keyHash:  r.IssuerKeyHash,
		serial:   r.SerialNumber.Bytes(),
	}, nil
}

func hashByOID(oid []byte) crypto.Hash {
	switch {
	case bytes.Equal(oid, oidSHA1):
		return crypto.SHA1
	case bytes.Equal(oid, oidSHA256):
		return crypto.SHA256
	case bytes.Equal(oid, oidSHA384):
		return crypto.SHA384
	case bytes.Equal(oid, oidSHA512):
		return crypto.SHA512
	}
	return 0
}

// decodeGETPath turns the path of an RFC 5019 GET (everything after the leading
// slashes) into the DER request, appending to dst. It tolerates what real clients and
// proxies send: percent-encoding (%2F, %2B, %3D), '+' turned into a space by form
// decoding (sent as ' ' or as %20), doubled leading slashes (a base URL ending in '/'), missing padding and the
// URL-safe alphabet. Slashes inside the path are base64 and are kept: the caller must
// pass the raw request URI, never a cleaned path.
//
// A path that is plain base64 (the standard alphabet, padded or not, as RFC 5019
// clients send it) is decoded where it lies; only one that needs unescaping or
// rewriting is copied, into dst's spare room, never onto the stack: a responder
// goroutine serves one connection for its life, and a large frame zeroed on every
// request is as many cache lines written per request on each of them.
func decodeGETPath(dst, path []byte) ([]byte, error) {
	for len(path) > 0 && path[0] == '/' {
		path = path[1:]
	}
	if len(path) == 0 || len(path) > maxGETPath {
		return dst, errMalformed
	}
	enc := base64.RawStdEncoding
	// The fast path: padding stripped, what is left decodes as it is. It holds no
	// byte the slow path rewrites or stops at ('%', ' ', '-', '_', '=', '?', '#':
	// none is in the alphabet), so the slow path would decode the same bytes.
	plain := path
	for len(plain) > 0 && plain[len(plain)-1] == '=' {
		plain = plain[:len(plain)-1]
	}
	start := len(dst)
	dst = grow(dst, enc.DecodedLen(len(plain)))
	if m, err := enc.Decode(dst[start:], plain); err == nil {
		return dst[:start+m], nil
	}
	// The slow path normalises into the room after the decoded bytes' and
	// decodes from there; the two regions do not overlap.
	out := enc.DecodedLen(len(path))
	dst = grow(dst[:start], out+len(path))
	b64 := dst[start+out : start+out+len(path)]
	n := 0
	for i := 0; i < len(path); i++ {
		c := path[i]
		switch {
		case c == '?' || c == '#':
			i = len(path) // a query or fragment is not part of the request
			continue
		case c == '%':
			if i+2 >= len(path) {
				return dst[:start], errMalformed
			}
			hi, ok1 := unhex(path[i+1])
			lo, ok2 := unhex(path[i+2])
			if !ok1 || !ok2 {
				return dst[:start], errMalformed
			}
			c = hi<<4 | lo
			i += 2
		}
		// After percent-decoding: a space is a '+' that form encoding turned
		// into one, whether it came as ' ' or as %20; '-' and '_' are the
		// URL-safe alphabet's '+' and '/'.
		switch c {
		case ' ', '-':
			c = '+'
		case '_':
			c = '/'
		}
		if c == '=' {
			continue // padding is recomputed: RawStdEncoding below
		}
		b64[n] = c
		n++
	}
	m, err := enc.Decode(dst[start:start+out], b64[:n])
	if err != nil {
		return dst[:start], errMalformed
	}
	return dst[:start+m], nil
}

// grow returns dst with n more bytes after its length, reallocated only if its
// capacity is short.
func grow(dst []byte, n int) []byte {
	start := len(dst)
	if cap(dst)-start < n {
		nd := make([]byte, start, start+n)
		copy(nd, dst)
		dst = nd
	}
	return dst[:start+n]
}

// maxGETPath bounds a GET path: a 2 KiB request in base64 with every byte escaped.
const maxGETPath = 8 << 10

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
