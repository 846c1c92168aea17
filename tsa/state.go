package tsa

import (
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
)

// The TSA's part of the replicated state:
//
//	tsa.keys    key ID → keyRecord (CBOR): every TSA key ever made
//	tsa.certs   serial → certRecord (CBOR): every TSA certificate ever installed;
//	            "\x00current" → the serial of the one tokens are signed under
//	tsa.counts  node ID → tokens that node has logged (8 bytes, big-endian)
var (
	bucketKeys   = []byte("tsa.keys")
	bucketCerts  = []byte("tsa.certs")
	bucketCounts = []byte("tsa.counts")
	keyCurrent   = []byte("\x00current") // serials are positive: never 0x00 first
)

var encMode, decMode = cluster.ValueCodec()

type keyRecord struct {
	_         struct{} `cbor:",toarray"`
	ID        string
	Label     string
	Type      string
	PublicKey []byte // PKIX DER
	Created   int64  // the entry's time, Unix ns
	Actor     string
	Request   string
}

type certRecord struct {
	_         struct{} `cbor:",toarray"`
	Key       string
	DER       []byte
	Chain     [][]byte
	Installed int64
	Actor     string
	Request   string
}

// Key is a TSA key the cluster made (`inkan admin tsa init`).
type Key struct {
	ID    string
	Label string // the key's label in the HSMs
	Type  hsm.KeyType
	// PublicKey is its PKIX DER; cluster.FingerprintOf names it.
	PublicKey []byte
	Created   time.Time
	// Request is the approved request that made it, if any.
	Request string
}

// Cert is a TSA certificate installed for a key (`inkan admin tsa cert`).
type Cert struct {
	Key   string
	Cert  *x509.Certificate
	Chain [][]byte // the certificates above it a token carries (DER), issuer first
	// Installed is when it was recorded; Current whether tokens are signed
	// under it now (the last installed).
	Installed time.Time
	Current   bool
	Request   string
}

// errNoCertificate: the cluster has no TSA certificate yet (no `tsa init` and
// `tsa cert`).
var errNoCertificate = errors.New("tsa: no TSA certificate is installed")

// ErrUnknownKey: no TSA key of that ID.
var ErrUnknownKey = cluster.NewRefusal("tsa.unknown-key", "tsa: no such TSA key")

func readKey(tx *bbolt.Tx, id string) (*keyRecord, error) {
	v := tx.Bucket(bucketKeys).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var r keyRecord
	if err := decMode.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("tsa: key %s: %w", id, err)
	}
	return &r, nil
}

func (r *keyRecord) key() Key {
	return Key{ID: r.ID, Label: r.Label, Type: hsm.KeyType(r.Type), PublicKey: r.PublicKey,
		Created: time.Unix(0, r.Created).UTC(), Request: r.Request}
}

// lookupKey returns the TSA key id.
func lookupKey(tx *bbolt.Tx, id string) (Key, error) {
	r, err := readKey(tx, id)
	if err != nil {
		return Key{}, err
	}
	if r == nil {
		return Key{}, fmt.Errorf("%w: %q", ErrUnknownKey, id)
	}
	return r.key(), nil
}

// Inventory reads, from the state in tx, the TSA's keys (oldest first), every
// certificate ever installed (oldest first) and how many tokens each node has
// logged: what admin's TSA status shows, from one read.
func Inventory(tx *bbolt.Tx) (keys []Key, certs []Cert, tokens map[string]uint64, err error) {
	if keys, err = listKeys(tx); err != nil {
		return nil, nil, nil, err
	}
	if certs, err = certificates(tx); err != nil {
		return nil, nil, nil, err
	}
	tokens, err = countTokens(tx)
	return keys, certs, tokens, err
}

// listKeys lists the TSA keys, oldest first.
func listKeys(tx *bbolt.Tx) ([]Key, error) {
	var out []Key
	err := tx.Bucket(bucketKeys).ForEach(func(k, v []byte) error {
		var r keyRecord
		if err := decMode.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("tsa: key %s: %w", k, err)
		}
		out = append(out, r.key())
		return nil
	})
	slices.SortStableFunc(out, func(a, b Key) int { return a.Created.Compare(b.Created) })
	return out, err
}

func decodeCert(serial, v, current []byte) (Cert, error) {
	var r certRecord
	if err := decMode.Unmarshal(v, &r); err != nil {
		return Cert{}, fmt.Errorf("tsa: certificate %x: %w", serial, err)
	}
	c, err := x509.ParseCertificate(r.DER)
	if err != nil {
		return Cert{}, fmt.Errorf("tsa: certificate %x: %w", serial, err)
	}
	return Cert{Key: r.Key, Cert: c, Chain: r.Chain, Installed: time.Unix(0, r.Installed).UTC(),
		Current: string(serial) == string(current), Request: r.Request}, nil
}

// certificates lists every TSA certificate ever installed, oldest first: an
// evidence bundle carries the one a token names.
func certificates(tx *bbolt.Tx) ([]Cert, error) {
	b := tx.Bucket(bucketCerts)
	current := b.Get(keyCurrent)
	var out []Cert
	err := b.ForEach(func(k, v []byte) error {
		if string(k) == string(keyCurrent) {
			return nil
		}
		c, err := decodeCert(k, v, current)
		if err == nil {
			out = append(out, c)
		}
		return err
	})
	slices.SortStableFunc(out, func(a, b Cert) int { return a.Installed.Compare(b.Installed) })
	return out, err
}

// current returns the certificate tokens are signed under now, and its key.
func current(tx *bbolt.Tx) (Cert, Key, error) {
	b := tx.Bucket(bucketCerts)
	serial := b.Get(keyCurrent)
	if serial == nil {
		return Cert{}, Key{}, errNoCertificate
	}
	c, err := decodeCert(serial, b.Get(serial), serial)
	if err != nil {
		return Cert{}, Key{}, err
	}
	k, err := lookupKey(tx, c.Key)
	return c, k, err
}

// countTokens returns how many tokens each node has logged.
func countTokens(tx *bbolt.Tx) (map[string]uint64, error) {
	out := map[string]uint64{}
	err := tx.Bucket(bucketCounts).ForEach(func(k, v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("tsa: count of %s: %d bytes", k, len(v))
		}
		out[string(k)] = binary.BigEndian.Uint64(v)
		return nil
	})
	return out, err
}
