package tsa

import (
	"crypto"
	"encoding/asn1"
	"fmt"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// maxRequestSize bounds a TimeStampReq. One with a SHA-512 imprint, a policy
// and a 256-bit nonce is under 150 bytes; the rest is room for what a client
// may add (and will be refused: no extension is accepted).
const maxRequestSize = 4096

// maxNonce bounds a request's nonce (RFC 3161 asks for a large random number;
// OpenSSL sends 64 bits).
const maxNonce = 32

// timeStampReq is a parsed TimeStampReq (RFC 3161 §2.4.1). Its slices alias the
// request's bytes.
type timeStampReq struct {
	// Hash is the message imprint's algorithm: SHA-256, SHA-384 or SHA-512.
	Hash crypto.Hash
	// Imprint is the DER of the MessageImprint, as the request carried it: the
	// token's TSTInfo repeats it byte for byte.
	Imprint []byte
	// Digest is the hashed message.
	Digest []byte
	// Policy is the TSA policy asked for, or nil.
	Policy asn1.ObjectIdentifier
	// Nonce is the content octets of the nonce INTEGER, or nil.
	Nonce []byte
	// CertReq asks for the TSA's certificate in the token.
	CertReq bool
}

// DER contents of the hash algorithm OIDs.
var (
	oidSHA1   = []byte{0x2b, 0x0e, 0x03, 0x02, 0x1a}
	oidSHA256 = []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01}
	oidSHA384 = []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02}
	oidSHA512 = []byte{0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03}
)

// imprintHash is the hash an accepted imprint algorithm names, or 0.
func imprintHash(oid []byte) crypto.Hash {
	switch string(oid) {
	case string(oidSHA256):
		return crypto.SHA256
	case string(oidSHA384):
		return crypto.SHA384
	case string(oidSHA512):
		return crypto.SHA512
	}
	return 0
}

// parseRequest reads a DER TimeStampReq strictly: one SEQUENCE and nothing
// after it, minimal lengths and integers (cryptobyte's DER rules), version 1,
// a message imprint of SHA-256, SHA-384 or SHA-512 whose parameters are absent
// or NULL and whose digest has the hash's length, a nonce of at most 32 bytes,
// and no extensions. A refusal is a *Failure whose Info is the RFC 3161
// failure info to answer with: BadDataFormat for what does not parse (or is
// larger than MaxRequestSize), BadRequest for another version, BadAlg for
// another hash, UnacceptedExtension for any extension. An explicit certReq
// FALSE, which DER would omit, is read as FALSE.
func parseRequest(der []byte) (*timeStampReq, error) {
	if len(der) > maxRequestSize {
		return nil, failf(badDataFormat, "the request has more than %d bytes", maxRequestSize)
	}
	var req timeStampReq
	in := cryptobyte.String(der)
	var body cryptobyte.String
	if !in.ReadASN1(&body, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, failf(badDataFormat, "the request is not one DER SEQUENCE")
	}
	var version int64
	if !body.ReadASN1Int64WithTag(&version, cbasn1.INTEGER) {
		return nil, failf(badDataFormat, "version: not an INTEGER")
	}
	if version != 1 {
		return nil, failf(badRequest, "version %d: only version 1 is supported", version)
	}
	if err := req.readImprint(&body); err != nil {
		return nil, err
	}
	if body.PeekASN1Tag(cbasn1.OBJECT_IDENTIFIER) {
		var oid asn1.ObjectIdentifier
		if !body.ReadASN1ObjectIdentifier(&oid) {
			return nil, failf(badDataFormat, "reqPolicy: not an OBJECT IDENTIFIER")
		}
		req.Policy = oid
	}
	if body.PeekASN1Tag(cbasn1.INTEGER) {
		var nonce cryptobyte.String
		if !body.ReadASN1(&nonce, cbasn1.INTEGER) || !minimalInteger(nonce) {
			return nil, failf(badDataFormat, "nonce: not a DER INTEGER")
		}
		if len(nonce) > maxNonce {
			return nil, failf(badDataFormat, "nonce: %d bytes, more than %d", len(nonce), maxNonce)
		}
		req.Nonce = nonce
	}
	if body.PeekASN1Tag(cbasn1.BOOLEAN) {
		if !body.ReadASN1Boolean(&req.CertReq) {
			return nil, failf(badDataFormat, "certReq: not a DER BOOLEAN")
		}
	}
	extTag := cbasn1.Tag(0).Constructed().ContextSpecific()
	if body.PeekASN1Tag(extTag) {
		var exts cryptobyte.String
		if !body.ReadASN1(&exts, extTag) || !wellFormedExtensions(exts) {
			return nil, failf(badDataFormat, "extensions: not a DER list of extensions")
		}
		if !body.Empty() {
			return nil, failf(badDataFormat, "data after the extensions")
		}
		return nil, failf(unacceptedExtension, "the request has extensions; this TSA accepts none")
	}
	if !body.Empty() {
		return nil, failf(badDataFormat, "unexpected fields after messageImprint")
	}
	return &req, nil
}

// readImprint reads the MessageImprint.
func (req *timeStampReq) readImprint(body *cryptobyte.String) error {
	var imprint, mi, alg, oid, digest cryptobyte.String
	if !body.ReadASN1Element(&imprint, cbasn1.SEQUENCE) {
		return failf(badDataFormat, "messageImprint: not a SEQUENCE")
	}
	outer := imprint
	if !outer.ReadASN1(&mi, cbasn1.SEQUENCE) || !mi.ReadASN1(&alg, cbasn1.SEQUENCE) ||
		!alg.ReadASN1(&oid, cbasn1.OBJECT_IDENTIFIER) || !validOID(oid) {
		return failf(badDataFormat, "messageImprint: hashAlgorithm: not an AlgorithmIdentifier")
	}
	if !alg.Empty() {
		var null cryptobyte.String
		if !alg.ReadASN1(&null, cbasn1.NULL) || len(null) != 0 || !alg.Empty() {
			return failf(badAlg, "messageImprint: hashAlgorithm: parameters other than NULL")
		}
	}
	if !mi.ReadASN1(&digest, cbasn1.OCTET_STRING) || !mi.Empty() {
		return failf(badDataFormat, "messageImprint: hashedMessage: not an OCTET STRING")
	}
	req.Hash = imprintHash(oid)
	if req.Hash == 0 {
		name := oidString(oid)
		if string(oid) == string(oidSHA1) {
			name += " (SHA-1)"
		}
		return failf(badAlg, "messageImprint: hash algorithm %s is not accepted; use SHA-256, SHA-384 or SHA-512", name)
	}
	if len(digest) != req.Hash.Size() {
		return failf(badDataFormat, "messageImprint: a %s digest has %d bytes, not %d", req.Hash, req.Hash.Size(), len(digest))
	}
	req.Imprint, req.Digest = imprint, digest
	return nil
}

// minimalInteger reports whether b is the content of a DER INTEGER.
func minimalInteger(b []byte) bool {
	switch {
	case len(b) == 0:
		return false
	case len(b) == 1:
		return true
	}
	return !(b[0] == 0 && b[1]&0x80 == 0) && !(b[0] == 0xff && b[1]&0x80 != 0)
}

// validOID reports whether b is the content of a DER OBJECT IDENTIFIER.
func validOID(b []byte) bool {
	s := cryptobyte.String(append([]byte{0x06, byte(len(b))}, b...))
	if len(b) > 127 {
		return false
	}
	var oid asn1.ObjectIdentifier
	return s.ReadASN1ObjectIdentifier(&oid)
}

// oidString is the dotted form of an OID's content, or "?" if it does not parse.
func oidString(b []byte) string {
	if len(b) > 127 {
		return "?"
	}
	s := cryptobyte.String(append([]byte{0x06, byte(len(b))}, b...))
	var oid asn1.ObjectIdentifier
	if !s.ReadASN1ObjectIdentifier(&oid) {
		return "?"
	}
	return oid.String()
}

// wellFormedExtensions reports whether exts is a non-empty list of DER
// Extensions (RFC 5280: extnID, critical DEFAULT FALSE, extnValue).
func wellFormedExtensions(exts cryptobyte.String) bool {
	if exts.Empty() {
		return false
	}
	for !exts.Empty() {
		var ext, id, value cryptobyte.String
		if !exts.ReadASN1(&ext, cbasn1.SEQUENCE) || !ext.ReadASN1(&id, cbasn1.OBJECT_IDENTIFIER) || !validOID(id) {
			return false
		}
		if ext.PeekASN1Tag(cbasn1.BOOLEAN) {
			var critical bool
			if !ext.ReadASN1Boolean(&critical) {
				return false
			}
		}
		if !ext.ReadASN1(&value, cbasn1.OCTET_STRING) || !ext.Empty() {
			return false
		}
	}
	return true
}

// failure is a refused request: the RFC 3161 failure info the response
// carries, and why in words (the response's statusString).
type failure struct {
	Info   failureInfo
	Reason string
}

func (f *failure) Error() string { return fmt.Sprintf("tsa: %s: %s", f.Info, f.Reason) }

// Is matches a *Failure of the same Info: errors.Is(err, &Failure{Info: BadAlg}).
func (f *failure) Is(target error) bool {
	t, ok := target.(*failure)
	return ok && t.Info == f.Info
}

func failf(info failureInfo, format string, args ...any) *failure {
	return &failure{Info: info, Reason: fmt.Sprintf(format, args...)}
}

// failureInfo is a bit of RFC 3161's PKIFailureInfo.
type failureInfo int

// The failure infos (RFC 3161 §2.4.2).
const (
	badAlg              failureInfo = 0  // unrecognized or unsupported algorithm
	badRequest          failureInfo = 2  // transaction not permitted or supported
	badDataFormat       failureInfo = 5  // the data submitted has the wrong format
	timeNotAvailable    failureInfo = 14 // the TSA's time source is not available
	unacceptedPolicy    failureInfo = 15 // the requested TSA policy is not supported
	unacceptedExtension failureInfo = 16 // the requested extension is not supported
	addInfoNotAvailable failureInfo = 17 // the additional information requested is not available
	systemFailure       failureInfo = 25 // the request cannot be handled due to system failure
)

// String is the name RFC 3161 gives the bit.
func (f failureInfo) String() string {
	switch f {
	case badAlg:
		return "badAlg"
	case badRequest:
		return "badRequest"
	case badDataFormat:
		return "badDataFormat"
	case timeNotAvailable:
		return "timeNotAvailable"
	case unacceptedPolicy:
		return "unacceptedPolicy"
	case unacceptedExtension:
		return "unacceptedExtension"
	case addInfoNotAvailable:
		return "addInfoNotAvailable"
	case systemFailure:
		return "systemFailure"
	}
	return fmt.Sprintf("failureInfo(%d)", int(f))
}
