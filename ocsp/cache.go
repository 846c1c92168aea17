package ocsp

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// status is a certificate's status as a cached response states it.
type status uint8

// The statuses of RFC 6960 §4.2.1.
const (
	statusGood status = iota
	statusRevoked
	unknown
)

func (s status) String() string {
	switch s {
	case statusGood:
		return "good"
	case statusRevoked:
		return "revoked"
	}
	return "unknown"
}

// response is one signed OCSP response for one serial, with the header values the
// responder sends beside it made once, when it is cached, not per request.
type response struct {
	DER        []byte
	Status     status
	ThisUpdate time.Time
	NextUpdate time.Time
	// RevokedAt and Reason repeat what a Revoked response says, so that a change of
	// reason (a hold becoming a revocation) is seen without parsing DER.
	RevokedAt time.Time
	Reason    int

	etag         []byte // `"<hex>"`
	lastModified []byte // HTTP date of ThisUpdate
	expires      []byte // HTTP date of NextUpdate
}

func newResponse(der []byte, st certStatus, thisUpdate, nextUpdate time.Time) *response {
	// The headers go in der's spare capacity when it has room (sign and wrap
	// leave it), so that a response is two allocations, not five.
	n := len(der)
	if cap(der)-n < headersLen {
		grown := make([]byte, n, n+headersLen)
		copy(grown, der)
		der = grown
	}
	sum := sha256.Sum256(der)
	buf := append(der, '"')
	buf = hex.AppendEncode(buf, sum[:16])
	buf = append(buf, '"')
	e := len(buf)
	buf = fasthttp.AppendHTTPDate(buf, thisUpdate)
	lm := len(buf)
	buf = fasthttp.AppendHTTPDate(buf, nextUpdate)
	r := &response{
		DER:          buf[:n:n],
		Status:       st.Status,
		ThisUpdate:   thisUpdate,
		NextUpdate:   nextUpdate,
		Reason:       -1,
		etag:         buf[n:e:e],
		lastModified: buf[e:lm:lm],
		expires:      buf[lm:len(buf):len(buf)],
	}
	if st.Status == statusRevoked {
		r.RevokedAt, r.Reason = st.RevokedAt, st.Reason
	}
	return r
}

// headersLen is the size of a response's ready-made headers: a quoted 32-digit
// ETag and two HTTP dates.
const headersLen = 34 + 2*len("Mon, 02 Jan 2006 15:04:05 GMT")

// says reports whether r states st: same status, and for a revocation the same time
// (to the second) and reason.
func (r *response) says(st certStatus) bool {
	if r.Status != st.Status {
		return false
	}
	if st.Status != statusRevoked {
		return true
	}
	// A response states the time to the second (GeneralizedTime without
	// fractions); the state keeps nanoseconds.
	return r.RevokedAt.Truncate(time.Second).Equal(st.RevokedAt.Truncate(time.Second)) && r.Reason == st.Reason
}

// cache holds the signed responses a node serves: for every issuer (a CA certificate,
// active or rolled over) the response for each of its serials. It is a value with no
// I/O, safe for concurrent use: many readers, occasional writers. A serial the cache
// does not hold is never answered by signing on demand.
type cache struct {
	mu      sync.RWMutex // guards issuers; the slice itself is never mutated in place
	issuers []*issuerEntry

	// Callers of Await wait for a serial's responses: Put wakes them. waiting
	// counts them, so that Put costs nothing more while nobody waits.
	waiting atomic.Int32
	waitMu  sync.Mutex
	waiters map[waitKey][]chan struct{}
}

type waitKey struct {
	issuer, serial string
}

const cacheShards = 64

// certIDHashes are the hash algorithms a request's CertID may use. A response names the
// certificate by a CertID built with one of them, and clients look for the CertID they
// sent, so every serial has one signed response per algorithm. SHA-1 is what most
// clients send (OpenSSL, Go and nginx by default); RFC 6960 names SHA-256 too, and
// SHA-384 and SHA-512 are answered so that no client that follows the RFC's newer
// algorithms is refused. Each is one response (one SingleResponse): some clients
// (Go's ocsp.ParseResponse) refuse a response that lists more than one.
var certIDHashes = [...]crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512}

type issuerEntry struct {
	id     string
	tables [len(certIDHashes)]table
}

type table struct {
	hash     crypto.Hash
	nameHash []byte
	keyHash  []byte
	shards   [cacheShards]struct {
		mu sync.RWMutex
		m  map[string]*response
	}
}

// errUnknownIssuer is returned by Put for an issuer the cache was not told of.
var errUnknownIssuer = errors.New("ocsp: unknown issuer")

// newCache returns an empty cache.
func newCache() *cache { return &cache{} }

// AddIssuer makes the cache answer for certificates issued by cert, under id. Adding
// an id twice keeps the responses already held.
func (c *cache) AddIssuer(id string, cert *x509.Certificate) error {
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		return fmt.Errorf("ocsp: issuer %s: public key: %w", id, err)
	}
	e := &issuerEntry{id: id}
	for i, h := range certIDHashes {
		nh, kh := h.New(), h.New()
		nh.Write(cert.RawSubject)
		kh.Write(spki.PublicKey.RightAlign())
		t := &e.tables[i]
		t.hash, t.nameHash, t.keyHash = h, nh.Sum(nil), kh.Sum(nil)
		for j := range t.shards {
			t.shards[j].m = make(map[string]*response)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, old := range c.issuers {
		if old.id == id {
			return nil
		}
	}
	next := make([]*issuerEntry, len(c.issuers), len(c.issuers)+1)
	copy(next, c.issuers)
	c.issuers = append(next, e)
	return nil
}

func (c *cache) issuer(id string) *issuerEntry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, e := range c.issuers {
		if e.id == id {
			return e
		}
	}
	return nil
}

// Put stores the response for serial (big-endian magnitude) whose CertID was built
// with hash, under the issuer id, replacing what was there.
func (c *cache) Put(issuerID string, hash crypto.Hash, serial []byte, r *response) error {
	e := c.issuer(issuerID)
	if e == nil {
		return fmt.Errorf("%w %q", errUnknownIssuer, issuerID)
	}
	t := e.table(hash)
	if t == nil {
		return fmt.Errorf("ocsp: CertID hash %v is not served", hash)
	}
	serial = trimSerial(serial)
	s := &t.shards[shardOf(serial)]
	s.mu.Lock()
	s.m[string(serial)] = r
	s.mu.Unlock()
	if c.waiting.Load() > 0 {
		c.wake(waitKey{issuerID, string(serial)})
	}
	return nil
}

// errNotAnswered is returned by Await when ctx ends before the cache serves
// the status asked for.
var errNotAnswered = errors.New("ocsp: the cache does not serve the status yet")

// Await returns once the cache holds, under every CertID hash, a response for
// serial of issuerID that says st and has not reached its nextUpdate. It
// returns ErrUnknownIssuer at once for an issuer the cache does not answer
// for, and ErrNotAnswered (wrapping ctx's error) if ctx ends first.
func (c *cache) Await(ctx context.Context, issuerID string, serial []byte, st certStatus) error {
	e := c.issuer(issuerID)
	if e == nil {
		return fmt.Errorf("%w %q", errUnknownIssuer, issuerID)
	}
	serial = trimSerial(serial)
	key := waitKey{issuerID, string(serial)}
	for {
		ch := make(chan struct{})
		c.waitMu.Lock()
		if c.waiters == nil {
			c.waiters = map[waitKey][]chan struct{}{}
		}
		c.waiters[key] = append(c.waiters[key], ch)
		c.waiting.Add(1)
		c.waitMu.Unlock()
		// Registered before looking, so a Put in between wakes ch.
		if e.serves(serial, st, time.Now()) {
			c.unwait(key, ch)
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			c.unwait(key, ch)
			return fmt.Errorf("%w: serial %x: %w", errNotAnswered, serial, ctx.Err())
		}
	}
}

// serves reports whether every CertID variant of serial is held, says st and
// is not past its nextUpdate at now.
func (e *issuerEntry) serves(serial []byte, st certStatus, now time.Time) bool {
	for i := range e.tables {
		r := e.tables[i].get(serial)
		if r == nil || !r.says(st) || !now.Before(r.NextUpdate) {
			return false
		}
	}
	return true
}

// wake closes the channels of the waiters for key.
func (c *cache) wake(key waitKey) {
	c.waitMu.Lock()
	chs := c.waiters[key]
	delete(c.waiters, key)
	c.waiting.Add(-int32(len(chs)))
	c.waitMu.Unlock()
	for _, ch := range chs {
		close(ch)
	}
}

// unwait removes ch from key's waiters, unless a wake took it already.
func (c *cache) unwait(key waitKey, ch chan struct{}) {
	c.waitMu.Lock()
	defer c.waitMu.Unlock()
	chs := c.waiters[key]
	for i, x := range chs {
		if x == ch {
			chs = append(chs[:i], chs[i+1:]...)
			c.waiting.Add(-1)
			break
		}
	}
	if len(chs) == 0 {
		delete(c.waiters, key)
	} else {
		c.waiters[key] = chs
	}
}

// Get returns the response held for serial and CertID hash under the issuer id, or nil.
func (c *cache) Get(issuerID string, hash crypto.Hash, serial []byte) *response {
	e := c.issuer(issuerID)
	if e == nil {
		return nil
	}
	t := e.table(hash)
	if t == nil {
		return nil
	}
	return t.get(trimSerial(serial))
}

// lookup answers a parsed request: the issuer is matched by both name and key hash,
// under the hash algorithm the request used.
func (c *cache) lookup(id certID) *response {
	for _, e := range c.snapshot() {
		t := e.table(id.hash)
		if t != nil && bytes.Equal(t.keyHash, id.keyHash) && bytes.Equal(t.nameHash, id.nameHash) {
			return t.get(id.serial)
		}
	}
	return nil
}

func (e *issuerEntry) table(h crypto.Hash) *table {
	for i := range e.tables {
		if e.tables[i].hash == h {
			return &e.tables[i]
		}
	}
	return nil
}

func (t *table) get(serial []byte) *response {
	s := &t.shards[shardOf(serial)]
	s.mu.RLock()
	r := s.m[string(serial)]
	s.mu.RUnlock()
	return r
}

// Range calls fn for every cached response until fn returns false. Responses may be
// replaced while Range runs; fn sees each (hash, serial) at most once.
func (c *cache) Range(fn func(issuerID string, hash crypto.Hash, serial []byte, r *response) bool) {
	type kv struct {
		k string
		v *response
	}
	var batch []kv
	for _, e := range c.snapshot() {
		for ti := range e.tables {
			t := &e.tables[ti]
			for i := range t.shards {
				s := &t.shards[i]
				s.mu.RLock()
				batch = batch[:0]
				for k, v := range s.m {
					batch = append(batch, kv{k, v})
				}
				s.mu.RUnlock()
				for _, p := range batch {
					if !fn(e.id, t.hash, []byte(p.k), p.v) {
						return
					}
				}
			}
		}
	}
}

// Len counts the cached responses (one per serial and CertID hash).
func (c *cache) Len() int {
	n := 0
	for _, e := range c.snapshot() {
		for ti := range e.tables {
			for i := range e.tables[ti].shards {
				s := &e.tables[ti].shards[i]
				s.mu.RLock()
				n += len(s.m)
				s.mu.RUnlock()
			}
		}
	}
	return n
}

func (c *cache) snapshot() []*issuerEntry {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.issuers
}

func shardOf(serial []byte) int {
	if len(serial) == 0 {
		return 0
	}
	return int(serial[len(serial)-1]) % cacheShards
}

func trimSerial(s []byte) []byte {
	for len(s) > 1 && s[0] == 0 {
		s = s[1:]
	}
	return s
}
