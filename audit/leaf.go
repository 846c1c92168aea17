package audit

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/inkan-pki/inkan/certserial"
)

// Leaf is one entry of the audit log: one change committed to the cluster's state.
//
// Its encoding (see EncodeLeaf) is CBOR in core deterministic mode, so every node that
// applies the same change produces the same bytes and the same tree. Index is given by
// the node's log (audit/log) as it appends the leaf; the rest comes from the change.
// Time must be the time carried in the committed command, never the applying node's
// clock, or replicas would disagree.
type Leaf struct {
	Index     uint64    // position in the log, from 0
	RaftIndex uint64    // the Raft log index of the entry that made the change
	Type      string    // what changed, e.g. "cert.issued"
	Time      time.Time // when, as recorded in the command (UTC on the wire)
	Actor     string    // OperatorActor(cert), "enrollment" or ActorSystem
	Serial    string    // certificate serial, lowercase hex, for certificate changes
	Data      []byte    // the change's own data: one deterministic CBOR item
}

// Leaf types built by this package. Other packages choose their own types for their
// changes ("policy.set", "node.added", …) and build the leaf with NewLeaf.
const (
	typeIssued  = "cert.issued"
	typeRevoked = "cert.revoked"
)

// TypeKeyTransferred is the leaf of a replicated key wrapped for a voter's
// transport key, which Verify reads into Report.KeyTransfers. The node's log
// (audit/log) writes it with cluster's other membership leaves.
const TypeKeyTransferred = "cluster.key.transferred"

// Actors that are not an operator.
const (
	actorEnrollment = "enrollment" // a subscriber through the enrollment API
	ActorSystem     = "system"     // the appliance itself (renewals, resolving dangling intents)
)

// maxLeafSize bounds one encoded leaf; the log refuses larger ones.
const maxLeafSize = 1 << 20

// leafVersion is the "v" field of every leaf this code writes.
const leafVersion = 1

// leafWire is the encoded form. Keys are short text so that a leaf read with any CBOR
// tool explains itself; core deterministic mode sorts them.
type leafWire struct {
	V         uint            `cbor:"v"`
	Index     uint64          `cbor:"index"`
	RaftIndex uint64          `cbor:"raft"`
	Type      string          `cbor:"type"`
	Time      time.Time       `cbor:"time"`
	Actor     string          `cbor:"actor"`
	Serial    string          `cbor:"serial,omitempty"`
	Data      cbor.RawMessage `cbor:"data,omitempty"`
}

// errNotDeterministic reports a leaf, or a leaf's data, that is well-formed CBOR but
// not in core deterministic encoding.
var errNotDeterministic = errors.New("audit: not in deterministic CBOR encoding")

var cborModes = sync.OnceValues(func() (cbor.EncMode, cbor.DecMode) {
	eo := cbor.CoreDetEncOptions()
	eo.Time = cbor.TimeRFC3339NanoUTC
	em, err := eo.EncMode()
	if err != nil {
		panic(err) // static options: a failure is a programming error
	}
	dm, err := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsForbidden,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		MaxNestedLevels:   16,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return em, dm
})

// Meta is what every leaf records about a change besides its data.
type Meta struct {
	RaftIndex uint64
	Time      time.Time // from the committed command
	Actor     string
}

// NewLeaf builds a leaf of the given type whose data is v in deterministic CBOR.
// serial may be nil for changes that are not about one certificate.
//
// v must not hold personal data in clear: give such values as keyed hashes (HMAC),
// and certificates as their SHA-256.
func NewLeaf(m Meta, typ string, serial *big.Int, v any) (Leaf, error) {
	em, _ := cborModes()
	data, err := em.Marshal(v)
	if err != nil {
		return Leaf{}, fmt.Errorf("audit: encode %s data: %w", typ, err)
	}
	l := Leaf{RaftIndex: m.RaftIndex, Type: typ, Time: m.Time, Actor: m.Actor, Data: data}
	if serial != nil {
		l.Serial = serialHex(serial)
	}
	if err := l.check(); err != nil {
		return Leaf{}, err
	}
	return l, nil
}

// serialHex is the form serials take in leaves, part of what the tree hashes and
// so kept as it has always been: lower-case hex without leading zeros (an odd
// number of digits when the top digit would be 0). It is not how a serial is
// printed: print certserial.Format.
func serialHex(serial *big.Int) string { return serial.Text(16) }

// normalizeSerial reads a serial in any form certserial.Parse accepts (as openssl
// or inkan prints it, with colons, 0x, or the leaves' own form) and returns it in
// the form serialHex gives.
func normalizeSerial(s string) (string, error) {
	n, err := certserial.Parse(s)
	if err != nil {
		return "", fmt.Errorf("audit: serial %w", err)
	}
	return serialHex(n), nil
}

// printedSerial is a leaf's serial as inkan prints serials everywhere else.
func printedSerial(leafSerial string) string {
	if n, err := certserial.Parse(leafSerial); err == nil {
		return certserial.Format(n)
	}
	return leafSerial
}

// OperatorActor names an operator by the SHA-256 of their certificate.
func OperatorActor(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// certHash is how a certificate appears in the log: the SHA-256 of its DER.
func certHash(der []byte) []byte {
	sum := sha256.Sum256(der)
	return sum[:]
}

// check validates the fields a caller fills. It keeps free text out of the fields
// that are not data, so that no name or address can slip into Actor or Serial.
func (l Leaf) check() error {
	if l.Type == "" || len(l.Type) > 64 || strings.Trim(l.Type, "abcdefghijklmnopqrstuvwxyz0123456789._-") != "" {
		return fmt.Errorf("audit: leaf type %q: want 1-64 of [a-z0-9._-]", l.Type)
	}
	if l.Time.IsZero() {
		return fmt.Errorf("audit: %s leaf: no time", l.Type)
	}
	if !validActor(l.Actor) {
		return fmt.Errorf("audit: %s leaf: actor %q: want %q, %q or sha256:<64 hex>", l.Type, l.Actor, actorEnrollment, ActorSystem)
	}
	if l.Serial != "" {
		if n, err := normalizeSerial(l.Serial); err != nil || n != l.Serial {
			return fmt.Errorf("audit: %s leaf: serial %q: want lowercase hex without leading zeros", l.Type, l.Serial)
		}
	}
	if len(l.Data) > 0 {
		if err := checkDeterministic(l.Data); err != nil {
			return fmt.Errorf("audit: %s leaf data: %w", l.Type, err)
		}
	}
	return nil
}

func validActor(a string) bool {
	if a == actorEnrollment || a == ActorSystem {
		return true
	}
	h, ok := strings.CutPrefix(a, "sha256:")
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return false
	}
	_, err := hex.DecodeString(h)
	return err == nil
}

// EncodeLeaf returns the bytes of l that the tree hashes.
func EncodeLeaf(l Leaf) ([]byte, error) {
	if err := l.check(); err != nil {
		return nil, err
	}
	em, _ := cborModes()
	b, err := em.Marshal(leafWire{
		V: leafVersion, Index: l.Index, RaftIndex: l.RaftIndex, Type: l.Type,
		Time: l.Time.UTC(), Actor: l.Actor, Serial: l.Serial, Data: l.Data,
	})
	if err != nil {
		return nil, fmt.Errorf("audit: encode leaf %d: %w", l.Index, err)
	}
	if len(b) > maxLeafSize {
		return nil, fmt.Errorf("audit: leaf %d: %d bytes, more than %d", l.Index, len(b), maxLeafSize)
	}
	return b, nil
}

// ParseLeaf decodes an encoded leaf and checks that it is exactly what EncodeLeaf
// would write for it (ErrNotDeterministic otherwise).
func ParseLeaf(b []byte) (Leaf, error) {
	_, dm := cborModes()
	var w leafWire
	if err := dm.Unmarshal(b, &w); err != nil {
		return Leaf{}, fmt.Errorf("audit: parse leaf: %w", err)
	}
	if w.V != leafVersion {
		return Leaf{}, fmt.Errorf("audit: parse leaf: version %d, want %d", w.V, leafVersion)
	}
	l := Leaf{
		Index: w.Index, RaftIndex: w.RaftIndex, Type: w.Type, Time: w.Time,
		Actor: w.Actor, Serial: w.Serial, Data: []byte(w.Data),
	}
	again, err := EncodeLeaf(l)
	if err != nil {
		return Leaf{}, err
	}
	if !bytes.Equal(again, b) {
		return Leaf{}, errNotDeterministic
	}
	return l, nil
}

// checkDeterministic checks that b is one CBOR item in core deterministic encoding,
// without tags: decoding and encoding it again must give the same bytes.
func checkDeterministic(b []byte) error {
	em, dm := cborModes()
	var v any
	if err := dm.Unmarshal(b, &v); err != nil {
		return err
	}
	again, err := em.Marshal(v)
	if err != nil {
		return err
	}
	if !bytes.Equal(again, b) {
		return errNotDeterministic
	}
	return nil
}
