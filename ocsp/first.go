package ocsp

import (
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// First responses make a new certificate answerable on every node the moment that
// node learns of it, without waiting for its own pre-signer. The leader signs a
// serial's responses (every CertID hash, status good) with its own responder key
// before it commits the serial's intent, and the bytes travel in the intent's Raft
// entry; each node installs them into its cache as it applies the entry (Install),
// and serves them until its own pre-signer replaces them at their refresh. A
// response signed by another node's responder key is as good to a relying party as
// one of this node's: both keys are certified by the same CA.
//
// The bundle is the responses without the responder certificate each repeats, and
// the certificate once:
//
//	version(1)=1 thisUpdate(8) nextUpdate(8) status(1) reason(1, 0xff for none)
//	revokedAt(8) certsLen(2) certs, then per hash of CertIDHashes: length(2) body
//
// with times in Unix seconds, big-endian, and bodies as the store keeps them.
const firstVersion = 1

// errNoResponder is returned by FirstResponses when this node has no responder
// certificate from the issuer: it cannot sign for it.
var errNoResponder = errors.New("ocsp: this node has no responder certificate from the issuer")

// errBadFirstResponses is returned by Install for a bundle that does not decode, or
// whose responses are not for the issuer, serial and status they are installed for.
var errBadFirstResponses = errors.New("ocsp: first responses do not decode or do not match")

// FirstResponses signs the responses stating st for a serial of issuerID, under
// every CertID hash, with this node's responder key, and returns them as a bundle
// for Install on every node. It does not cache them.
func (p *presigner) FirstResponses(issuerID string, st certStatus) ([]byte, error) {
	is := p.signing(issuerID)
	if is == nil {
		return nil, fmt.Errorf("%w %q", errNoResponder, issuerID)
	}
	resps, err := p.signAll(is, st)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 1+26+2+700+len(resps)*340)
	var certs []byte
	for i, r := range resps {
		body, c, ok := split(r.DER)
		if !ok || len(body) > 0xffff || len(c) > 0xffff {
			return nil, fmt.Errorf("ocsp: first responses: response %d does not split", i)
		}
		if i == 0 {
			certs = c
			out = append(out, firstVersion)
			out = appendStatusHeader(out, r)
			out = binary.BigEndian.AppendUint16(out, uint16(len(certs)))
			out = append(out, certs...)
		}
		out = binary.BigEndian.AppendUint16(out, uint16(len(body)))
		out = append(out, body...)
	}
	return out, nil
}

// appendStatusHeader appends thisUpdate, nextUpdate, status, reason and revokedAt
// as the store's values begin (26 bytes).
func appendStatusHeader(dst []byte, r *response) []byte {
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.ThisUpdate.Unix()))
	dst = binary.BigEndian.AppendUint64(dst, uint64(r.NextUpdate.Unix()))
	dst = append(dst, byte(r.Status))
	var revokedAt int64
	reason := byte(0xff)
	if r.Status == statusRevoked {
		revokedAt = r.RevokedAt.Unix()
		if r.Reason >= 0 {
			reason = byte(r.Reason)
		}
	}
	dst = append(dst, reason)
	return binary.BigEndian.AppendUint64(dst, uint64(revokedAt))
}

// Install puts a bundle made by FirstResponses (on the leader) into the cache, for
// a serial whose status is st here: each response must name the issuer's CertID
// under its hash, the serial, and st. A response the cache holds already that
// is not older is kept, whatever it says: it was signed for a later state (a
// node replaying old entries, or catching up, applies an intent after its
// store or its pre-signer gave it the revocation that followed). It never
// signs and never blocks on the HSM
// or the disk (it runs as the node applies a Raft entry): the responses are
// queued for the store if there is room, and a restart signs again any that were
// not stored.
func (p *presigner) Install(issuerID string, serial []byte, st certStatus, bundle []byte) error {
	return p.install(issuerID, serial, st, bundle, false)
}

// installChange is Install for the responses a status change's entry carries,
// st being the status the entry set: a cached response that says another
// status is replaced even if it is not older (it was signed for the status
// before, maybe in the same second, or refreshed while the change was being
// committed); one that says st and is not older is kept. A node that applies
// an older change after a later one (replaying its log) installs its status
// for a moment, until it applies the later entry, which sets its own.
func (p *presigner) installChange(issuerID string, serial []byte, st certStatus, bundle []byte) error {
	return p.install(issuerID, serial, st, bundle, true)
}

func (p *presigner) install(issuerID string, serial []byte, st certStatus, bundle []byte, change bool) error {
	e := p.cache.issuer(issuerID)
	if e == nil {
		return fmt.Errorf("%w %q", errUnknownIssuer, issuerID)
	}
	resps, err := decodeFirst(bundle, e, trimSerial(serial), st)
	if err != nil {
		return err
	}
	now := p.cfg.Now()
	if !now.Before(resps[0].NextUpdate) {
		return fmt.Errorf("%w: serial %x: past nextUpdate", errBadFirstResponses, serial)
	}
	stored := storedSerial{issuerID: issuerID, serial: trimSerial(serial)}
	for i, h := range certIDHashes {
		r := resps[i]
		if cur := p.cache.Get(issuerID, h, serial); cur != nil && !cur.ThisUpdate.Before(r.ThisUpdate) && (!change || cur.says(st)) {
			r = cur
		} else if err := p.cache.Put(issuerID, h, serial, r); err != nil {
			return err
		}
		stored.resps[i] = r
	}
	if p.persist != nil {
		select {
		case p.persist <- stored:
		default: // the writer is behind: the responses are served, not stored
		}
	}
	p.metrics.installed.Add(float64(len(certIDHashes)))
	return nil
}

// decodeFirst rebuilds a bundle's responses and checks them against the issuer's
// CertIDs, the serial and st.
func decodeFirst(b []byte, e *issuerEntry, serial []byte, st certStatus) ([len(certIDHashes)]*response, error) {
	var out [len(certIDHashes)]*response
	bad := func(what string) error {
		return fmt.Errorf("%w: serial %x: %s", errBadFirstResponses, serial, what)
	}
	if len(b) < 1+26+2 || b[0] != firstVersion {
		return out, bad("header")
	}
	hdr := b[1:27]
	got := certStatus{Status: status(hdr[16]), Reason: -1}
	if got.Status > unknown {
		return out, bad("status")
	}
	if got.Status == statusRevoked {
		got.RevokedAt = time.Unix(int64(binary.BigEndian.Uint64(hdr[18:])), 0).UTC()
		if hdr[17] != 0xff {
			got.Reason = int(hdr[17])
		}
	}
	r := &response{Status: got.Status, RevokedAt: got.RevokedAt, Reason: got.Reason}
	if !r.says(st) {
		return out, bad("another status")
	}
	this := time.Unix(int64(binary.BigEndian.Uint64(hdr[0:])), 0).UTC()
	next := time.Unix(int64(binary.BigEndian.Uint64(hdr[8:])), 0).UTC()
	rest := b[27:]
	n := int(binary.BigEndian.Uint16(rest))
	if len(rest) < 2+n {
		return out, bad("certificates")
	}
	certs, rest := rest[2:2+n], rest[2+n:]
	for i := range out {
		if len(rest) < 2 || len(rest) < 2+int(binary.BigEndian.Uint16(rest)) {
			return out, bad("length")
		}
		n := int(binary.BigEndian.Uint16(rest))
		der := wrap(rest[2:2+n], certs)
		rest = rest[2+n:]
		t := &e.tables[i]
		if !namesCertID(der, t.hash, t.nameHash, t.keyHash, serial) {
			return out, bad(fmt.Sprintf("response %d names another certificate", i))
		}
		out[i] = newResponse(der, got, this, next)
	}
	if len(rest) != 0 {
		return out, bad("trailing bytes")
	}
	return out, nil
}

// namesCertID reports whether the response der has one SingleResponse and that it
// names the CertID (hash, nameHash, keyHash, serial). It reads the structure the
// pre-signer encodes; it does not check the signature (the bundle came through
// the cluster's authenticated log, from its leader).
func namesCertID(der []byte, h crypto.Hash, nameHash, keyHash, serial []byte) bool {
	body, _, ok := split(der)
	if !ok {
		return false
	}
	in := cryptobyte.String(body)
	var tbs, responses, single, cid, alg, oid cryptobyte.String
	var skip cryptobyte.String
	if !in.ReadASN1(&tbs, cbasn1.SEQUENCE) ||
		!tbs.ReadAnyASN1Element(&skip, nil) || // responderID
		!tbs.SkipASN1(cbasn1.GeneralizedTime) || // producedAt
		!tbs.ReadASN1(&responses, cbasn1.SEQUENCE) ||
		!responses.ReadASN1(&single, cbasn1.SEQUENCE) || !responses.Empty() ||
		!single.ReadASN1(&cid, cbasn1.SEQUENCE) ||
		!cid.ReadASN1(&alg, cbasn1.SEQUENCE) || !alg.ReadASN1(&oid, cbasn1.OBJECT_IDENTIFIER) {
		return false
	}
	var nh, kh, sn cryptobyte.String
	if hashByOID(oid) != h || !cid.ReadASN1(&nh, cbasn1.OCTET_STRING) || !cid.ReadASN1(&kh, cbasn1.OCTET_STRING) ||
		!cid.ReadASN1(&sn, cbasn1.INTEGER) || !cid.Empty() {
		return false
	}
	if len(sn) > 1 && sn[0] == 0 {
		sn = sn[1:]
	}
	return string(nh) == string(nameHash) && string(kh) == string(keyHash) && string(sn) == string(serial)
}
