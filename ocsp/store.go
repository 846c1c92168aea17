package ocsp

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"log/slog"
	"time"

	bolt "go.etcd.io/bbolt"
)

// store persists a node's signed responses in a node-local bbolt file, so a restarted
// node serves at once and re-signs only what is due. It is not replicated: every node
// signs with its own responder key, so its responses are its own.
//
// Layout (format 2): a bucket "\x00meta" holds "format". Each issuer id has a
// bucket; in it, "serials" is keyed by serial (big-endian magnitude) and
// "certs" holds the responder certificate fields responses end with, keyed by
// the first 8 bytes of their SHA-256. A serial's value holds its responses under
// every CertID hash, which are signed together and say the same:
//
//	thisUpdate(8) nextUpdate(8) status(1) reason(1, 0xff for none) revokedAt(8)
//	certs(8, zero for none), then per hash of CertIDHashes: length(2) body
//
// A value written when fewer hashes were signed (SHA-1 and SHA-256 only, before
// SHA-384 and SHA-512 were added) holds the first ones: they load and serve at
// once, and the pre-signer's reconcile signs the serial again with all of them.
// A body is the response's BasicOCSPResponse content without its certs field
// (or, with no certs id, the whole response): a response is stored without the
// ~600 bytes of responder certificate every one of them repeats and rebuilt byte
// for byte on load (wrap). Integers are big-endian, times Unix seconds.
//
// The store is a cache of what the node can sign again: an entry that does not
// decode is skipped (and so re-signed), and a file in another format is emptied.
type store struct {
	db  *bolt.DB
	log *slog.Logger
	// certs written, by issuer id: each is put once, and a response's is
	// recognised by comparing bytes with the last one rather than hashing it.
	certs map[string]*storedCerts
}

type storedCerts struct {
	last   []byte
	lastID [certsIDLen]byte
	ids    map[[certsIDLen]byte]bool
}

var (
	metaBucket    = []byte("\x00meta")
	serialsBucket = []byte("serials")
	certsBucket   = []byte("certs")
	formatKey     = []byte("format")
)

const (
	storeFormat = 2
	valueHeader = 34 // up to and with the certs id
	certsIDLen  = 8
)

func openStore(path string, log *slog.Logger) (*store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second, NoFreelistSync: true})
	if err != nil {
		return nil, fmt.Errorf("ocsp: open response store %s: %w", path, err)
	}
	s := &store{db: db, log: log, certs: map[string]*storedCerts{}}
	if err := db.Update(s.checkFormat); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("ocsp: response store %s: %w", path, err)
	}
	return s, nil
}

// checkFormat empties a store written in another format: its responses are
// signed again, which is what a missing store costs.
func (s *store) checkFormat(tx *bolt.Tx) error {
	if m := tx.Bucket(metaBucket); m != nil {
		if v := m.Get(formatKey); len(v) == 1 && v[0] == storeFormat {
			return nil
		}
	}
	var names [][]byte
	if err := tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
		names = append(names, append([]byte(nil), name...))
		return nil
	}); err != nil {
		return err
	}
	for _, name := range names {
		if err := tx.DeleteBucket(name); err != nil {
			return err
		}
	}
	if len(names) > 0 {
		s.log.Warn("ocsp: response store was in another format; emptied, its responses will be signed again", "buckets", len(names))
	}
	m, err := tx.CreateBucket(metaBucket)
	if err != nil {
		return err
	}
	return m.Put(formatKey, []byte{storeFormat})
}

func (s *store) close() error { return s.db.Close() }

// storedSerial is one serial's responses to persist, one per CertID hash in the
// order of CertIDHashes, signed together with one status and validity.
type storedSerial struct {
	issuerID string
	serial   []byte
	resps    [len(certIDHashes)]*response
}

// put writes serials' responses in one transaction.
func (s *store) put(rs []storedSerial) error {
	// One buffer holds every value: bbolt keeps the slices until the commit.
	size := 0
	for _, r := range rs {
		size += valueHeader
		for _, resp := range r.resps {
			size += 2 + len(resp.DER)
		}
	}
	arena := make([]byte, 0, size)
	pending := map[string][certsIDLen]byte{} // certs put in this transaction, by issuer
	err := s.db.Update(func(tx *bolt.Tx) error {
		var ib, sb *bolt.Bucket
		var ibName string
		for _, r := range rs {
			if ib == nil || ibName != r.issuerID {
				var err error
				if ib, err = tx.CreateBucketIfNotExists([]byte(r.issuerID)); err != nil {
					return err
				}
				if sb, err = ib.CreateBucketIfNotExists(serialsBucket); err != nil {
					return err
				}
				sb.FillPercent = 0.9 // a refresh puts serials in key order: fill pages, don't halve them
				ibName = r.issuerID
			}
			first := r.resps[0]
			at := len(arena)
			arena = append(arena, make([]byte, valueHeader)...)
			v := arena[at:]
			binary.BigEndian.PutUint64(v[0:], uint64(first.ThisUpdate.Unix()))
			binary.BigEndian.PutUint64(v[8:], uint64(first.NextUpdate.Unix()))
			v[16] = byte(first.Status)
			v[17] = 0xff
			if first.Status == statusRevoked {
				if first.Reason >= 0 {
					v[17] = byte(first.Reason)
				}
				binary.BigEndian.PutUint64(v[18:], uint64(first.RevokedAt.Unix()))
			}
			var firstCerts []byte
			for i, resp := range r.resps {
				body, certs, ok := split(resp.DER)
				if !ok || (i > 0 && !bytes.Equal(certs, firstCerts)) || len(body) > 0xffff {
					return fmt.Errorf("ocsp: response store: serial %x: not a response the pre-signer makes", r.serial)
				}
				if i == 0 && len(certs) > 0 {
					id, err := s.certsID(ib, r.issuerID, certs, pending)
					if err != nil {
						return err
					}
					copy(v[26:], id[:])
				}
				firstCerts = certs
				arena = binary.BigEndian.AppendUint16(arena, uint16(len(body)))
				arena = append(arena, body...)
			}
			if err := sb.Put(trimSerial(r.serial), arena[at:len(arena):len(arena)]); err != nil {
				return err
			}
		}
		return nil
	})
	for issuer, id := range pending {
		sc := s.certs[issuer]
		if err != nil {
			sc.last = nil // what this transaction put is not there
			continue
		}
		sc.ids[id] = true
	}
	return err
}

// certsID returns the id of a certs field, putting it in the issuer's bucket
// if the store does not have it yet.
func (s *store) certsID(ib *bolt.Bucket, issuerID string, certs []byte, pending map[string][certsIDLen]byte) ([certsIDLen]byte, error) {
	sc := s.certs[issuerID]
	if sc == nil {
		sc = &storedCerts{ids: map[[certsIDLen]byte]bool{}}
		s.certs[issuerID] = sc
	}
	if sc.last != nil && bytes.Equal(certs, sc.last) {
		return sc.lastID, nil
	}
	sum := sha256.Sum256(certs)
	id := [certsIDLen]byte(sum[:certsIDLen])
	if p, ok := pending[issuerID]; !sc.ids[id] && !(ok && p == id) {
		cb, err := ib.CreateBucketIfNotExists(certsBucket)
		if err != nil {
			return id, err
		}
		if err := cb.Put(id[:], bytes.Clone(certs)); err != nil {
			return id, err
		}
		pending[issuerID] = id
	}
	sc.last, sc.lastID = bytes.Clone(certs), id
	return id, nil
}

// load puts every stored response of a known issuer into c and returns how many. An
// issuer the cache does not know (a CA certificate no longer in state) is skipped, and
// so is an entry that does not decode: the pre-signer signs it again.
func (s *store) load(c *cache) (int, error) {
	n, bad := 0, 0
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(issuerID []byte, ib *bolt.Bucket) error {
			e := c.issuer(string(issuerID))
			if e == nil {
				return nil
			}
			certs := map[[certsIDLen]byte][]byte{}
			if cb := ib.Bucket(certsBucket); cb != nil {
				sc := &storedCerts{ids: map[[certsIDLen]byte]bool{}}
				s.certs[string(issuerID)] = sc
				if err := cb.ForEach(func(k, v []byte) error {
					if sum := sha256.Sum256(v); len(k) == certsIDLen && bytes.Equal(sum[:certsIDLen], k) {
						id := [certsIDLen]byte(k)
						certs[id] = bytes.Clone(v)
						sc.ids[id] = true
					}
					return nil
				}); err != nil {
					return err
				}
			}
			sb := ib.Bucket(serialsBucket)
			if sb == nil {
				return nil
			}
			return sb.ForEach(func(k, v []byte) error {
				resps, ok := decodeValue(v, certs)
				if !ok {
					bad++
					return nil
				}
				for i, r := range resps {
					if r == nil {
						continue // stored before this variant was signed: reconcile signs it
					}
					t := &e.tables[i]
					sh := &t.shards[shardOf(k)]
					sh.mu.Lock()
					sh.m[string(k)] = r
					sh.mu.Unlock()
					n++
				}
				return nil
			})
		})
	})
	if bad > 0 {
		s.log.Warn("ocsp: response store entries that do not decode were skipped; they will be signed again", "serials", bad)
	}
	return n, err
}

// decodeValue rebuilds a serial's cached responses from a stored value.
func decodeValue(v []byte, certs map[[certsIDLen]byte][]byte) ([len(certIDHashes)]*response, bool) {
	var out [len(certIDHashes)]*response
	if len(v) < valueHeader || v[16] > byte(unknown) {
		return out, false
	}
	var cs []byte
	if id := [certsIDLen]byte(v[26:valueHeader]); id != ([certsIDLen]byte{}) {
		var ok bool
		if cs, ok = certs[id]; !ok {
			return out, false
		}
	}
	st := certStatus{Status: status(v[16]), Reason: -1}
	if st.Status == statusRevoked {
		st.RevokedAt = time.Unix(int64(binary.BigEndian.Uint64(v[18:])), 0).UTC()
		if v[17] != 0xff {
			st.Reason = int(v[17])
		}
	}
	this := time.Unix(int64(binary.BigEndian.Uint64(v[0:])), 0).UTC()
	next := time.Unix(int64(binary.BigEndian.Uint64(v[8:])), 0).UTC()
	rest := v[valueHeader:]
	for i := range out {
		if i > 0 && len(rest) == 0 {
			break // a value stored when fewer variants were signed: the first ones
		}
		if len(rest) < 2 || len(rest) < 2+int(binary.BigEndian.Uint16(rest)) {
			return out, false
		}
		n := int(binary.BigEndian.Uint16(rest))
		out[i] = newResponse(wrap(rest[2:2+n], cs), st, this, next) // wrap copies out of bbolt's pages
		rest = rest[2+n:]
	}
	return out, len(rest) == 0
}
