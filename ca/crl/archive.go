package crl

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// The archive. The replicated state keeps the bytes of each shard's newest CRL
// only, and of every CRL ever published an index entry (Meta: number, times,
// SHA-256, and a chain hash over every entry before it). The bytes of every
// CRL go, as crl.publish is applied and before its transaction commits, to a
// directory every node keeps beside its state, under cluster.SharedDir so that
// a node missing some (one that joined late, installed a snapshot, was
// restored from a backup, or found a file damaged) fetches them from its peers
// (Repair). A file is named by its SHA-256, which the index holds: a file is
// served only when its bytes hash to its name, and one that does not is
// removed and fetched again.
//
// Layout: <state dir>/shared/crl/<first two hex digits>/<sha256 hex>.crl.

// archiveName is the archive's directory under cluster.SharedDir.
const archiveName = "crl"

// ErrNotArchived says a CRL of the index is neither in the state nor, intact,
// in this node's archive: Repair fetches it from a peer.
var ErrNotArchived = errors.New("crl: CRL not in this node's archive")

// archiveDir is the archive of the node whose state tx reads.
func archiveDir(tx *bbolt.Tx) string {
	return filepath.Join(filepath.Dir(tx.DB().Path()), cluster.SharedDir, archiveName)
}

// sharedName is a CRL file's name under cluster.SharedDir.
func sharedName(sum []byte) string {
	h := hex.EncodeToString(sum)
	return archiveName + "/" + h[:2] + "/" + h + ".crl"
}

func archivePath(dir string, sum []byte) string {
	h := hex.EncodeToString(sum)
	return filepath.Join(dir, h[:2], h+".crl")
}

// archivePut writes der, whose SHA-256 is sum, to the archive dir: to a
// temporary file, synced, then renamed, so a file of the archive is whole or
// absent. An intact file already there is kept (apply may run more than once).
func archivePut(dir string, sum, der []byte) error {
	p := archivePath(dir, sum)
	if st, err := os.Stat(p); err == nil && st.Size() == int64(len(der)) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		return fmt.Errorf("crl: archive: %w", err)
	}
	f, err := os.CreateTemp(filepath.Dir(p), ".tmp-*")
	if err != nil {
		return fmt.Errorf("crl: archive: %w", err)
	}
	defer os.Remove(f.Name())
	if _, err := f.Write(der); err != nil {
		f.Close()
		return fmt.Errorf("crl: archive: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("crl: archive: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("crl: archive: %w", err)
	}
	if err := os.Rename(f.Name(), p); err != nil {
		return fmt.Errorf("crl: archive: %w", err)
	}
	return syncDir(filepath.Dir(p))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("crl: archive: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("crl: archive: %w", err)
	}
	return nil
}

// archiveGet reads the CRL m from the archive dir. A file whose bytes do not
// hash to m's SHA-256 is removed (Repair fetches it again) and, like a missing
// one, reported as ErrNotArchived: it is never served.
func archiveGet(dir string, m Meta) ([]byte, error) {
	p := archivePath(dir, m.SHA256)
	der, err := os.ReadFile(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s/%d/%d", ErrNotArchived, m.CA, m.Shard, m.Number)
	}
	if err != nil {
		return nil, fmt.Errorf("crl: archive: %w", err)
	}
	if sum := sha256.Sum256(der); !bytes.Equal(sum[:], m.SHA256) {
		_ = os.Remove(p)
		return nil, fmt.Errorf("%w: %s/%d/%d: the file does not match the index (removed)", ErrNotArchived, m.CA, m.Shard, m.Number)
	}
	return der, nil
}

// archiveHas says whether the archive dir has a file of m's size for m
// (whether its bytes are right is checked when it is read).
func archiveHas(dir string, m Meta) bool {
	st, err := os.Stat(archivePath(dir, m.SHA256))
	return err == nil && st.Mode().IsRegular() && st.Size() == int64(m.Size)
}

// stateDER returns the bytes of m held in the state (the newest CRL of its
// shard, or one published before the archive), or nil.
func stateDER(tx *bbolt.Tx, m Meta) ([]byte, error) {
	sb := readShard(tx, m.CA, m.Shard)
	if sb == nil || sb.Bucket(keyParts) == nil {
		return nil, nil
	}
	parts := sb.Bucket(keyParts)
	if parts.Get(binary.BigEndian.AppendUint32(u64(m.Number), 0)) == nil {
		return nil, nil
	}
	out := make([]byte, 0, m.Size)
	for i := range m.Parts {
		p := parts.Get(binary.BigEndian.AppendUint32(u64(m.Number), uint32(i)))
		if p == nil {
			return nil, fmt.Errorf("crl: %s/%d/%d: part %d missing", m.CA, m.Shard, m.Number, i)
		}
		out = append(out, p...)
	}
	return out, nil
}

// DER returns the bytes of a published CRL: from the state if they are there
// (the newest of its shard), else from this node's archive, checked against
// the index (ErrNotArchived when the archive lacks it or holds other bytes).
func (p Published) DER(m Meta) ([]byte, error) {
	der, err := stateDER(p.tx, m)
	if err != nil || der != nil {
		return der, err
	}
	return archiveGet(archiveDir(p.tx), m)
}
