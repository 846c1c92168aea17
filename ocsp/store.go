package ocsp

import (
	"crypto"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// store persists a node's signed responses in a node-local bbolt file, so a restarted
// node serves at once and re-signs only what is due. It is not replicated: every node
// signs with its own responder key, so its responses are its own.
//
// Layout: one bucket per issuer id, in it one bucket per CertID hash ("sha1",
// "sha256"), keyed by serial (big-endian magnitude); a value is
// thisUpdate(8) nextUpdate(8) status(1) reason(1, 0xff for none) revokedAt(8) DER,
// all integers big-endian, times in Unix seconds.
type store struct {
	db *bolt.DB
}

var hashBucket = map[crypto.Hash][]byte{crypto.SHA1: []byte("sha1"), crypto.SHA256: []byte("sha256")}

func openStore(path string) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("ocsp: open response store %s: %w", path, err)
	}
	return &store{db: db}, nil
}

func (s *store) close() error { return s.db.Close() }

// storedResponse is one response to persist.
type storedResponse struct {
	issuerID string
	hash     crypto.Hash
	serial   []byte
	resp     *Response
}

// put writes responses in one transaction.
func (s *store) put(rs []storedResponse) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		for _, r := range rs {
			ib, err := tx.CreateBucketIfNotExists([]byte(r.issuerID))
			if err != nil {
				return err
			}
			name, ok := hashBucket[r.hash]
			if !ok {
				return fmt.Errorf("ocsp: CertID hash %v is not stored", r.hash)
			}
			hb, err := ib.CreateBucketIfNotExists(name)
			if err != nil {
				return err
			}
			v := make([]byte, valueHeader+len(r.resp.DER))
			binary.BigEndian.PutUint64(v[0:], uint64(r.resp.ThisUpdate.Unix()))
			binary.BigEndian.PutUint64(v[8:], uint64(r.resp.NextUpdate.Unix()))
			v[16] = byte(r.resp.Status)
			v[17] = 0xff
			if r.resp.Status == Revoked {
				if r.resp.Reason >= 0 {
					v[17] = byte(r.resp.Reason)
				}
				binary.BigEndian.PutUint64(v[18:], uint64(r.resp.RevokedAt.Unix()))
			}
			copy(v[valueHeader:], r.resp.DER)
			if err := hb.Put(trimSerial(r.serial), v); err != nil {
				return err
			}
		}
		return nil
	})
}

const valueHeader = 26

var errCorrupt = errors.New("ocsp: response store: corrupt entry")

// load puts every stored response of a known issuer into c and returns how many. An
// issuer the cache does not know (a CA certificate no longer in state) is skipped.
func (s *store) load(c *Cache) (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(issuerID []byte, ib *bolt.Bucket) error {
			e := c.issuer(string(issuerID))
			if e == nil {
				return nil
			}
			for h, name := range hashBucket {
				hb := ib.Bucket(name)
				t := e.table(h)
				if hb == nil || t == nil {
					continue
				}
				err := hb.ForEach(func(k, v []byte) error {
					if len(v) < valueHeader || v[16] > byte(Unknown) {
						return fmt.Errorf("%w: issuer %s serial %x", errCorrupt, issuerID, k)
					}
					der := make([]byte, len(v)-valueHeader) // bbolt's bytes live only in the transaction
					copy(der, v[valueHeader:])
					st := CertStatus{Status: Status(v[16]), Reason: -1}
					if st.Status == Revoked {
						st.RevokedAt = time.Unix(int64(binary.BigEndian.Uint64(v[18:])), 0).UTC()
						if v[17] != 0xff {
							st.Reason = int(v[17])
						}
					}
					r := newResponse(der, st,
						time.Unix(int64(binary.BigEndian.Uint64(v[0:])), 0).UTC(),
						time.Unix(int64(binary.BigEndian.Uint64(v[8:])), 0).UTC())
					serial := string(k)
					sh := &t.shards[shardOf(k)]
					sh.mu.Lock()
					sh.m[serial] = r
					sh.mu.Unlock()
					n++
					return nil
				})
				if err != nil {
					return err
				}
			}
			return nil
		})
	})
	return n, err
}
