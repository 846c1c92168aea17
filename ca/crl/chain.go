package crl

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"go.etcd.io/bbolt"
)

// errIndexBroken says a shard's index entries do not form their hash chain:
// an entry was changed, removed or inserted after it was chained.
var errIndexBroken = errors.New("crl: the CRL index's hash chain is broken")

// chainHash is the chain hash of index entry m after the entry whose chain is
// prev (nil for a shard's first): SHA-256 over a label, prev and m's fields,
// each of fixed size or length-prefixed, so that no two entries share an
// encoding. Times count in nanoseconds of the stored (CBOR-decoded) entry.
func chainHash(prev []byte, m Meta) []byte {
	h := sha256.New()
	h.Write([]byte("inkan crl index v1\x00"))
	var b []byte
	b = binary.BigEndian.AppendUint32(b, uint32(len(prev)))
	b = append(b, prev...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.CA)))
	b = append(b, m.CA...)
	b = binary.BigEndian.AppendUint64(b, uint64(int64(m.Shard)))
	b = binary.BigEndian.AppendUint64(b, m.Number)
	for _, t := range [...]int64{m.ThisUpdate.UnixNano(), m.NextUpdate.UnixNano(), m.Published.UnixNano()} {
		b = binary.BigEndian.AppendUint64(b, uint64(t))
	}
	b = binary.BigEndian.AppendUint32(b, uint32(len(m.SHA256)))
	b = append(b, m.SHA256...)
	for _, n := range [...]int{m.Parts, m.Size, m.Entries} {
		b = binary.BigEndian.AppendUint64(b, uint64(int64(n)))
	}
	h.Write(b)
	return h.Sum(nil)
}

// stored is m as the state gives it back (times as CBOR keeps them): the
// chain hashes what a verifier reads.
func stored(m Meta) (Meta, error) {
	m.Chain = nil
	b, err := cbor.Marshal(m)
	if err != nil {
		return Meta{}, err
	}
	var out Meta
	return out, cbor.Unmarshal(b, &out)
}

// chainTip is the chain hash of the shard's newest index entry. Entries
// published before version 3 have none: the first time, it chains them all,
// in number order, and stores their chain hashes.
func chainTip(metas *bbolt.Bucket) ([]byte, error) {
	k, v := metas.Cursor().Last()
	if k == nil {
		return nil, nil
	}
	var last Meta
	if err := cbor.Unmarshal(v, &last); err != nil {
		return nil, fmt.Errorf("crl: meta %x: %w", k, err)
	}
	if last.Chain != nil {
		return last.Chain, nil
	}
	var all []Meta
	if err := metas.ForEach(func(k, v []byte) error {
		var m Meta
		if err := cbor.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("crl: meta %x: %w", k, err)
		}
		all = append(all, m)
		return nil
	}); err != nil {
		return nil, err
	}
	var prev []byte
	for _, m := range all {
		s, err := stored(m)
		if err != nil {
			return nil, err
		}
		m.Chain = chainHash(prev, s)
		prev = m.Chain
		b, err := cbor.Marshal(m)
		if err != nil {
			return nil, err
		}
		if err := metas.Put(u64(m.Number), b); err != nil {
			return nil, err
		}
	}
	return prev, nil
}

// verifyIndex checks that the index entries of the CA's shard form their hash
// chain and returns how many it checked and the newest entry's chain hash (a
// value an auditor may compare between nodes, or with one noted earlier).
// Entries published before version 3 and not yet chained are skipped.
func verifyIndex(tx *bbolt.Tx, ca string, shard int) (n int, tip []byte, err error) {
	sb := readShard(tx, ca, shard)
	if sb == nil || sb.Bucket(keyMeta) == nil {
		return 0, nil, nil
	}
	var prev []byte
	err = sb.Bucket(keyMeta).ForEach(func(k, v []byte) error {
		var m Meta
		if err := cbor.Unmarshal(v, &m); err != nil {
			return fmt.Errorf("crl: meta of %s/%d/%x: %w", ca, shard, k, err)
		}
		if m.Chain == nil {
			if prev != nil {
				return fmt.Errorf("%w: %s/%d/%d has no chain hash after chained entries", errIndexBroken, ca, shard, m.Number)
			}
			return nil
		}
		s, err := stored(m)
		if err != nil {
			return err
		}
		if want := chainHash(prev, s); !bytes.Equal(want, m.Chain) || binary.BigEndian.Uint64(k) != m.Number {
			return fmt.Errorf("%w: at %s/%d/%d", errIndexBroken, ca, shard, m.Number)
		}
		prev = m.Chain
		n++
		return nil
	})
	return n, prev, err
}

// archiveNew writes the CRL m, whose parts are staged under prefix, to the
// node's archive, and drops from the state the bytes of the shard's older
// CRLs once they are in the archive too (the newest's were archived when it
// was published; those published before version 3 are archived now).
func archiveNew(tx *bbolt.Tx, sb *bbolt.Bucket, m Meta, staging *bbolt.Bucket, prefix []byte, size int) error {
	dir := archiveDir(tx)
	der := make([]byte, 0, size)
	for i := range m.Parts {
		der = append(der, staging.Get(binary.BigEndian.AppendUint32(append([]byte{}, prefix...), uint32(i)))...)
	}
	if err := archivePut(dir, m.SHA256, der); err != nil {
		return err
	}
	parts := sb.Bucket(keyParts)
	metas := sb.Bucket(keyMeta)
	if parts == nil || metas == nil {
		return nil
	}
	var old []uint64
	c := parts.Cursor()
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if n := binary.BigEndian.Uint64(k[:8]); n < m.Number && (len(old) == 0 || old[len(old)-1] != n) {
			old = append(old, n)
		}
	}
	for _, n := range old {
		v := metas.Get(u64(n))
		if v == nil {
			return fmt.Errorf("crl: %s/%d/%d has parts but no meta", m.CA, m.Shard, n)
		}
		var om Meta
		if err := cbor.Unmarshal(v, &om); err != nil {
			return fmt.Errorf("crl: meta of %s/%d/%d: %w", m.CA, m.Shard, n, err)
		}
		if !archiveHas(dir, om) {
			b, err := stateDER(tx, om)
			if err != nil {
				return err
			}
			if sum := sha256.Sum256(b); !bytes.Equal(sum[:], om.SHA256) {
				return fmt.Errorf("crl: %s/%d/%d: the state's bytes do not match its meta", m.CA, m.Shard, n)
			}
			if err := archivePut(dir, om.SHA256, b); err != nil {
				return err
			}
		}
		for i := range om.Parts {
			if err := parts.Delete(binary.BigEndian.AppendUint32(u64(n), uint32(i))); err != nil {
				return err
			}
		}
	}
	return nil
}
