package crl

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// Published CRLs are replicated, so every node serves the same bytes and every CRL
// ever published stays available as evidence. A large CRL (a full CRL of a million
// entries is tens of megabytes) does not fit one Raft entry, so the leader sends it
// in parts (crl.part) and then publishes it (crl.publish), which checks that every
// part arrived and that they hash to what the leader signed.
//
// Since version 3 of crl.publish the state keeps the bytes of each shard's newest
// CRL only: applying a publish writes the CRL to the node's archive (archive.go)
// and drops the bytes of the shard's older CRLs from the state, so the state grows
// by an index entry per CRL rather than by the CRL. The index entries (Meta) of a
// shard form a hash chain (Meta.Chain), so an index copied or restored can be
// checked whole (verifyIndex), and each archived file against its entry's SHA-256.
//
// Layout, bucket "crl":
//
//	<ca-id> / <shard key> / "latest"                 -> number (8 bytes)
//	<ca-id> / <shard key> / "meta"  / number(8)      -> CBOR Meta
//	<ca-id> / <shard key> / "parts" / number(8)part(4) -> bytes (the newest CRL; every
//	                                                      CRL published before version 3)
//
// and bucket "crl-staging": <ca-id> \x00 <shard key> \x00 number(8) part(4) -> bytes.
// The shard key is the shard number in decimal, "full" or "delta".
var (
	bucketCRL     = []byte("crl")
	bucketStaging = []byte("crl-staging")
	keyLatest     = []byte("latest")
	keyMeta       = []byte("meta")
	keyParts      = []byte("parts")
)

// Command types.
const (
	commandPart    = "crl.part"
	commandPublish = "crl.publish"
)

// partSize bounds the CRL bytes one crl.part command carries.
const partSize = 256 << 10

// Meta describes a published CRL.
type Meta struct {
	CA         string    `cbor:"1,keyasint"`
	Shard      int       `cbor:"2,keyasint"` // Full for the full CRL
	Number     uint64    `cbor:"3,keyasint"`
	ThisUpdate time.Time `cbor:"4,keyasint"`
	NextUpdate time.Time `cbor:"5,keyasint"`
	SHA256     []byte    `cbor:"6,keyasint"`
	Parts      int       `cbor:"7,keyasint"`
	Size       int       `cbor:"8,keyasint"`
	Entries    int       `cbor:"9,keyasint"`
	Published  time.Time `cbor:"10,keyasint"` // the leader's time of the publish entry
	// Chain is SHA-256 over the chain of the shard's CRL before it and this
	// entry's fields (chainHash); set by apply from version 3 on, and on the
	// entries before it the first time a version 3 publish is applied.
	Chain []byte `cbor:"11,keyasint,omitempty"`
}

type partBody struct {
	CA     string `cbor:"1,keyasint"`
	Shard  int    `cbor:"2,keyasint"`
	Number uint64 `cbor:"3,keyasint"`
	Part   int    `cbor:"4,keyasint"`
	Data   []byte `cbor:"5,keyasint"`
}

// Errors a submitter sees as refusals.
var (
	errNumberNotGreater = cluster.NewRefusal("crl.number-not-greater", "crl: CRL number not greater than the last published")
	errPartsMissing     = cluster.NewRefusal("crl.parts-missing", "crl: parts missing or not matching the hash")
	errMalformed        = cluster.NewRefusal("crl.malformed", "crl: malformed command")
)

func shardKey(shard int) []byte {
	switch shard {
	case Full:
		return []byte("full")
	case Delta:
		return []byte("delta")
	}
	return fmt.Appendf(nil, "%d", shard)
}

func u64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func stagingPrefix(ca string, shard int, number uint64) []byte {
	k := append([]byte(ca), 0)
	k = append(k, shardKey(shard)...)
	k = append(k, 0)
	return binary.BigEndian.AppendUint64(k, number)
}

// publishVersion is the version of crl.publish the publisher sends: version 3
// archives the CRL and keeps only the newest in the state, with a chained index
// entry; a replica of a release before it stops at one (the upgrade order makes
// sure none is left) rather than keep every CRL while the others drop them.
const publishVersion = 3

// commandVersion is the version of crl.part for a shard: delta CRLs came at
// version 2, so that a replica of a release before them stops at one (the
// upgrade order makes sure none is left) rather than refuse it while the
// others keep it.
func commandVersion(shard int) uint {
	if shard == Delta {
		return 2
	}
	return 1
}

// lowestShard is the lowest shard a command version may name.
func lowestShard(version uint) int {
	if version >= 2 {
		return Delta
	}
	return Full
}

// Handlers are the state machine handlers of published CRLs; the node passes them to
// cluster.Open. Each also describes its applied commands for the audit log
// (Describe, see describedHandler).
func Handlers() []cluster.Handler {
	return []cluster.Handler{
		describedHandler{cluster.NewHandler(commandPart, []uint{1, 2}, [][]byte{bucketStaging}, applyPart)},
		describedHandler{cluster.NewHandler(commandPublish, []uint{1, 2, 3}, [][]byte{bucketCRL}, applyPublish)},
	}
}

func applyPart(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b partBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	if b.CA == "" || b.Shard < lowestShard(e.Command.Version) || b.Part < 0 || len(b.Data) == 0 || len(b.Data) > partSize {
		return nil, cluster.Refuse(fmt.Errorf("%w: part", errMalformed))
	}
	if latest := scopeNumber(tx, b.CA, b.Shard); b.Number <= latest && latest != 0 {
		return nil, cluster.Refuse(errNumberNotGreater)
	}
	k := binary.BigEndian.AppendUint32(stagingPrefix(b.CA, b.Shard, b.Number), uint32(b.Part))
	return nil, tx.Bucket(bucketStaging).Put(k, b.Data)
}

func applyPublish(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var m Meta
	if err := e.Command.Decode(&m); err != nil {
		return nil, cluster.Refuse(err)
	}
	if m.CA == "" || m.Shard < lowestShard(e.Command.Version) || m.Parts < 1 || len(m.SHA256) != sha256.Size || m.Number == 0 {
		return nil, cluster.Refuse(fmt.Errorf("%w: publish", errMalformed))
	}
	if m.Number <= scopeNumber(tx, m.CA, m.Shard) {
		return nil, cluster.Refuse(errNumberNotGreater)
	}
	staging := tx.Bucket(bucketStaging)
	prefix := stagingPrefix(m.CA, m.Shard, m.Number)
	h := sha256.New()
	size := 0
	for i := range m.Parts {
		p := staging.Get(binary.BigEndian.AppendUint32(append([]byte{}, prefix...), uint32(i)))
		if p == nil {
			return nil, cluster.Refuse(fmt.Errorf("%w: part %d of %d", errPartsMissing, i, m.Parts))
		}
		h.Write(p)
		size += len(p)
	}
	if !bytes.Equal(h.Sum(nil), m.SHA256) {
		return nil, cluster.Refuse(errPartsMissing)
	}
	sb, err := shardBucket(tx, m.CA, m.Shard)
	if err != nil {
		return nil, err
	}
	m.Chain = nil
	if e.Command.Version >= 3 {
		if err := archiveNew(tx, sb, m, staging, prefix, size); err != nil {
			return nil, err
		}
	}
	parts, err := sb.CreateBucketIfNotExists(keyParts)
	if err != nil {
		return nil, err
	}
	metas, err := sb.CreateBucketIfNotExists(keyMeta)
	if err != nil {
		return nil, err
	}
	for i := range m.Parts {
		k := binary.BigEndian.AppendUint32(append([]byte{}, prefix...), uint32(i))
		if err := parts.Put(binary.BigEndian.AppendUint32(u64(m.Number), uint32(i)), staging.Get(k)); err != nil {
			return nil, err
		}
	}
	// Drop this CRL's staging, and any left by an earlier leader for numbers now past.
	c := staging.Cursor()
	stem := prefix[:len(prefix)-8]
	for k, _ := c.Seek(stem); k != nil && bytes.HasPrefix(k, stem); k, _ = c.Next() {
		if binary.BigEndian.Uint64(k[len(stem):]) <= m.Number {
			if err := c.Delete(); err != nil {
				return nil, err
			}
		}
	}
	m.Size, m.Published = size, e.Time
	if e.Command.Version >= 3 {
		prev, err := chainTip(metas)
		if err != nil {
			return nil, err
		}
		s, err := stored(m)
		if err != nil {
			return nil, err
		}
		m.Chain = chainHash(prev, s)
	}
	meta, err := cbor.Marshal(m)
	if err != nil {
		return nil, err
	}
	if err := metas.Put(u64(m.Number), meta); err != nil {
		return nil, err
	}
	return u64(m.Number), sb.Put(keyLatest, u64(m.Number))
}

func shardBucket(tx *bbolt.Tx, ca string, shard int) (*bbolt.Bucket, error) {
	cb, err := tx.Bucket(bucketCRL).CreateBucketIfNotExists([]byte(ca))
	if err != nil {
		return nil, err
	}
	return cb.CreateBucketIfNotExists(shardKey(shard))
}

func readShard(tx *bbolt.Tx, ca string, shard int) *bbolt.Bucket {
	b := tx.Bucket(bucketCRL)
	if b == nil {
		return nil
	}
	if b = b.Bucket([]byte(ca)); b == nil {
		return nil
	}
	return b.Bucket(shardKey(shard))
}

func latestNumber(tx *bbolt.Tx, ca string, shard int) uint64 {
	sb := readShard(tx, ca, shard)
	if sb == nil {
		return 0
	}
	v := sb.Get(keyLatest)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// scopeNumber is the newest number of the CRLs of shard's scope: a shard's
// own, or for the full CRL and its deltas the newest of either (they share
// one sequence, RFC 5280 §5.2.3).
func scopeNumber(tx *bbolt.Tx, ca string, shard int) uint64 {
	if shard == Full || shard == Delta {
		return max(latestNumber(tx, ca, Full), latestNumber(tx, ca, Delta))
	}
	return latestNumber(tx, ca, shard)
}

// nextNumber is the number the next CRL of the CA's shard takes: above every
// one of its scope published.
func nextNumber(tx *bbolt.Tx, ca string, shard int) uint64 {
	return scopeNumber(tx, ca, shard) + 1
}

// Published is the CRLs published (the index in the replicated state, the
// bytes in it and in this node's archive) as one of the cluster's bbolt
// transactions sees them: what the OCSP listener serves and proves history
// with.
type Published struct{ tx *bbolt.Tx }

// Read is the published CRLs in tx.
func Read(tx *bbolt.Tx) Published { return Published{tx} }

// Latest returns the meta of the newest CRL published for the CA's shard.
func (p Published) Latest(ca string, shard int) (Meta, bool, error) {
	n := latestNumber(p.tx, ca, shard)
	if n == 0 {
		return Meta{}, false, nil
	}
	return p.Get(ca, shard, n)
}

// Get returns the meta of a published CRL by number.
func (p Published) Get(ca string, shard int, number uint64) (Meta, bool, error) {
	sb := readShard(p.tx, ca, shard)
	if sb == nil || sb.Bucket(keyMeta) == nil {
		return Meta{}, false, nil
	}
	v := sb.Bucket(keyMeta).Get(u64(number))
	if v == nil {
		return Meta{}, false, nil
	}
	var m Meta
	if err := cbor.Unmarshal(v, &m); err != nil {
		return Meta{}, false, fmt.Errorf("crl: meta of %s/%d/%d: %w", ca, shard, number, err)
	}
	return m, true, nil
}
