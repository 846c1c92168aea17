package ca

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"math/big"
	"sort"
	"time"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
	"go.etcd.io/bbolt"
)

// The replicated state the authority keeps in the cluster's bbolt file. Serial keys
// are the serial's minimal big-endian bytes; times are Unix nanoseconds.
//
//	ca.issuers     issuer ID → issuerRecord (CBOR); "\x00active" → the active issuer's ID
//	ca.certs       serial → certRecord (CBOR): every serial ever used, never deleted
//	ca.status      one nested bucket per issuer ID: serial → statusEntry (18 bytes)
//	ca.intents     serial → issuer ID, while an intent has no issued record
//	ca.links       len(link) ‖ link ‖ serial → ""
//	ca.persons     len(person) ‖ person ‖ serial → notAfter (8 bytes)
//	ca.responders  one nested bucket per node ID: issuer ID → serial of the node's
//	               latest responder certificate from that issuer (a node ID → serial
//	               value is the format before per-issuer responders, read as such)
//	ca.horizons    issuer ID → the latest notAfter (8 bytes) of its derived
//	               certificates, from its installation on
var (
	bucketIssuers    = []byte("ca.issuers") // and keyActive → the active issuer's ID
	keyActive        = []byte("\x00active") // issuer IDs never begin with 0x00
	bucketCerts      = []byte("ca.certs")
	bucketStatus     = []byte("ca.status")
	bucketIntents    = []byte("ca.intents")
	bucketLinks      = []byte("ca.links")
	bucketPersons    = []byte("ca.persons")
	bucketResponders = []byte("ca.responders")
	bucketHorizons   = []byte("ca.horizons")
)

// State is the authority's replicated state as one of the cluster's bbolt
// transactions sees it: certificates and their status, issuers, responder
// certificates, people and used nonces. Read it in a cluster.View, or in a
// hook's transaction to see what an entry has just applied.
type State struct{ tx *bbolt.Tx }

// Read is the authority's state in tx.
func Read(tx *bbolt.Tx) State { return State{tx} }

// ErrNotFound is returned by lookups of a serial, issuer or responder the state does
// not hold.
var ErrNotFound = cluster.NewRefusal("ca.not-found", "ca: not found")

// Status is a certificate's status as OCSP and CRLs report it.
type Status uint8

const (
	// Pending: an intent is committed and no issued record yet. The certificate may
	// exist (the leader may have signed it); it has not been delivered.
	Pending Status = iota
	// Good: issued, not revoked, not on hold.
	Good
	// Revoked, with a reason and a time. A dangling intent resolved by a new leader is
	// Revoked with cessationOfOperation and has no DER.
	Revoked
	// Held: certificateHold (reason 6), until released or revoked.
	Held
)

func (s Status) String() string {
	switch s {
	case Pending:
		return "pending"
	case Good:
		return "good"
	case Revoked:
		return "revoked"
	case Held:
		return "held"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// Kind says what a certificate is for.
type Kind uint8

const (
	// Derived is a subscriber's derived certificate (Issue).
	Derived Kind = iota
	// Responder is a node's delegated OCSP responder certificate (IssueResponder).
	Responder
	// TimeStamping is the time-stamping authority's certificate
	// (IssueTimeStamping): EKU id-kp-timeStamping only, critical.
	TimeStamping
)

// Record is everything the state keeps about one serial.
type Record struct {
	Serial        *big.Int
	Issuer        string // issuer ID
	Kind          Kind
	Node          string // the node a Responder certificate is for
	Profile       string
	PolicyVersion uint64
	TBSHash       []byte // SHA-256 of the TBSCertificate committed in the intent
	Link          []byte
	Person        []byte
	NotAfter      time.Time
	IntentAt      time.Time
	IssuedAt      time.Time // zero while Pending, and for resolved intents
	DER           []byte    // nil while Pending, and for resolved intents
	Status        Status
	Reason        crlreason.Reason // when Revoked (certificateHold when Held)
	RevokedAt     time.Time        // when Revoked or Held
	// HeldBy is the actor who put the certificate on hold, while Held: "system"
	// (the linkage job, across a move) or an operator ("sha256:<hex>"). A hold
	// by an operator is released only by an operator (ErrHeldByOperator). It is
	// "" when not held, and for a hold recorded before holds named their actor.
	HeldBy string
}

// CertStatus is one certificate's entry in its issuer's status index: what the OCSP
// pre-signer and the CRL builder need, without the certificate.
type CertStatus struct {
	Serial    *big.Int
	Status    Status
	Reason    crlreason.Reason
	RevokedAt time.Time
	NotAfter  time.Time
}

// issuerStatus is a CA certificate's place in rollover.
type issuerStatus uint8

const (
	// issuerPending: the key exists (on every voter), the certificate is not yet
	// installed (a CSR is with the offline root).
	issuerPending issuerStatus = iota
	// issuerActive: new certificates are issued under it. At most one is active.
	issuerActive
	// issuerRetired: issues nothing more; its certificates stay covered by OCSP and
	// CRLs until they have all expired.
	issuerRetired
)

func (s issuerStatus) String() string {
	switch s {
	case issuerPending:
		return "pending"
	case issuerActive:
		return "active"
	case issuerRetired:
		return "retired"
	}
	return fmt.Sprintf("issuer-status(%d)", uint8(s))
}

// Active tells whether new certificates are issued under the issuer (at most
// one is active).
func (is Issuer) Active() bool { return is.Status == issuerActive }

// Answered tells whether the status of the issuer's certificates is answered
// at now, and so whether every node needs a responder certificate from it: it
// has its certificate, which has not expired (a responder certificate cannot
// outlive it), and it is active, or retired with certificates that expired less
// than archive ago (expired or not, their status stays answerable).
func (is Issuer) Answered(now time.Time, archive time.Duration) bool {
	switch {
	case is.Cert == nil || !now.Before(is.Cert.NotAfter):
		return false // pending, or its certificate expired
	case is.Status == issuerRetired:
		return !is.LastNotAfter.IsZero() && now.Before(is.LastNotAfter.Add(archive))
	}
	return true
}

// Issuer is one CA certificate with its key and status.
type Issuer struct {
	ID        string
	KeyLabel  string            // the key's label in the HSM (CKA_LABEL)
	PublicKey []byte            // PKIX DER of the key
	Cert      *x509.Certificate // nil while pending
	Chain     [][]byte          // certificates above Cert, issuer first, without the root
	Status    issuerStatus
	CRLShards int // fixed when the issuer is created: shards are baked into certificates
	Created   time.Time
	// LastNotAfter is the latest notAfter of the derived certificates issued (or
	// intended) under the issuer: once it has passed, a retired issuer has no
	// certificate left whose status anyone needs, and its responder
	// certificates need not be renewed. It is zero while it has none, and the
	// certificate's own notAfter for an issuer installed before it was kept.
	LastNotAfter time.Time
}

// Records as stored.
type (
	issuerRecord struct {
		_         struct{} `cbor:",toarray"`
		ID        string
		KeyLabel  string
		PublicKey []byte
		Cert      []byte
		Chain     [][]byte
		Status    uint8
		CRLShards int
		Created   int64
		NotAfter  int64 // the certificate's, once installed
	}
	certRecord struct {
		_             struct{} `cbor:",toarray"`
		Issuer        string
		Kind          uint8
		Node          string
		Profile       string
		PolicyVersion uint64
		TBSHash       []byte
		Link          []byte
		Person        []byte
		NotAfter      int64
		IntentAt      int64
		IssuedAt      int64
		DER           []byte
		Status        uint8
		Reason        uint8
		RevokedAt     int64
		HeldBy        string
	}
	// certRecordV1 is a certRecord as stored before HeldBy: readCert reads both.
	certRecordV1 struct {
		_             struct{} `cbor:",toarray"`
		Issuer        string
		Kind          uint8
		Node          string
		Profile       string
		PolicyVersion uint64
		TBSHash       []byte
		Link          []byte
		Person        []byte
		NotAfter      int64
		IntentAt      int64
		IssuedAt      int64
		DER           []byte
		Status        uint8
		Reason        uint8
		RevokedAt     int64
	}
)

// Records are encoded as every service encodes its state (cluster.ValueCodec).
var encMode, decMode = cluster.ValueCodec()

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func serialKey(s *big.Int) []byte { return s.Bytes() }

// statusEntry: status, reason, notAfter, revokedAt.
func encodeStatus(st Status, reason uint8, notAfter, revokedAt int64) []byte {
	b := make([]byte, statusEntryLen)
	b[0], b[1] = byte(st), reason
	binary.BigEndian.PutUint64(b[2:], uint64(notAfter))
	binary.BigEndian.PutUint64(b[10:], uint64(revokedAt))
	return b
}

// statusEntryLen is the length of a ca.status entry (encodeStatus).
const statusEntryLen = 18

func decodeStatus(serial []byte, v []byte) (CertStatus, error) {
	if len(v) != statusEntryLen {
		return CertStatus{}, fmt.Errorf("ca: status entry of %x: %d bytes", serial, len(v))
	}
	return CertStatus{
		Serial:    new(big.Int).SetBytes(serial),
		Status:    Status(v[0]),
		Reason:    crlreason.Reason(v[1]),
		NotAfter:  fromUnixNano(int64(binary.BigEndian.Uint64(v[2:]))),
		RevokedAt: fromUnixNano(int64(binary.BigEndian.Uint64(v[10:]))),
	}, nil
}

// indexKey is len(h) ‖ h ‖ serial, for the link and person indexes.
func indexKey(h, serial []byte) []byte {
	k := make([]byte, 0, 1+len(h)+len(serial))
	k = append(k, byte(len(h)))
	k = append(k, h...)
	return append(k, serial...)
}

func indexPrefix(h []byte) []byte { return append([]byte{byte(len(h))}, h...) }

func readCert(tx *bbolt.Tx, serial []byte) (*certRecord, error) {
	v := tx.Bucket(bucketCerts).Get(serial)
	if v == nil {
		return nil, nil
	}
	var r certRecord
	if err := decMode.Unmarshal(v, &r); err != nil {
		var old certRecordV1
		if decMode.Unmarshal(v, &old) != nil {
			return nil, fmt.Errorf("ca: record of serial %x: %w", serial, err)
		}
		r = certRecord{Issuer: old.Issuer, Kind: old.Kind, Node: old.Node, Profile: old.Profile,
			PolicyVersion: old.PolicyVersion, TBSHash: old.TBSHash, Link: old.Link, Person: old.Person,
			NotAfter: old.NotAfter, IntentAt: old.IntentAt, IssuedAt: old.IssuedAt, DER: old.DER,
			Status: old.Status, Reason: old.Reason, RevokedAt: old.RevokedAt}
	}
	return &r, nil
}

func readIssuer(tx *bbolt.Tx, id string) (*issuerRecord, error) {
	v := tx.Bucket(bucketIssuers).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var r issuerRecord
	if err := decMode.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("ca: issuer %s: %w", id, err)
	}
	return &r, nil
}

func (r *certRecord) record(serial []byte) Record {
	return Record{
		Serial: new(big.Int).SetBytes(serial), Issuer: r.Issuer, Kind: Kind(r.Kind), Node: r.Node,
		Profile: r.Profile, PolicyVersion: r.PolicyVersion, TBSHash: r.TBSHash,
		Link: r.Link, Person: r.Person, NotAfter: fromUnixNano(r.NotAfter),
		IntentAt: fromUnixNano(r.IntentAt), IssuedAt: fromUnixNano(r.IssuedAt), DER: r.DER,
		Status: Status(r.Status), Reason: crlreason.Reason(r.Reason), RevokedAt: fromUnixNano(r.RevokedAt),
		HeldBy: r.HeldBy,
	}
}

func (r *issuerRecord) issuer() (Issuer, error) {
	is := Issuer{ID: r.ID, KeyLabel: r.KeyLabel, PublicKey: r.PublicKey, Chain: r.Chain,
		Status: issuerStatus(r.Status), CRLShards: r.CRLShards, Created: fromUnixNano(r.Created)}
	if len(r.Cert) > 0 {
		c, err := x509.ParseCertificate(r.Cert)
		if err != nil {
			return Issuer{}, fmt.Errorf("ca: issuer %s: certificate: %w", r.ID, err)
		}
		is.Cert = c
	}
	return is, nil
}

// Lookup returns the record of serial (ErrNotFound if it was never used).
func (s State) Lookup(serial *big.Int) (Record, error) {
	return s.LookupBytes(serialKey(serial))
}

// LookupBytes is Lookup of a serial as the state keys it and OCSP carries it
// (big-endian bytes), for a reader that has it so.
func (s State) LookupBytes(k []byte) (Record, error) {
	r, err := readCert(s.tx, k)
	if err != nil {
		return Record{}, err
	}
	if r == nil {
		return Record{}, fmt.Errorf("%w: serial %x", ErrNotFound, k)
	}
	return r.record(k), nil
}

// Walk calls fn for every certificate of the issuer, in serial order, with its
// status and notAfter (expired ones included: status stays available after expiry).
// The OCSP pre-signer and the CRL builder walk this. Resolved dangling intents
// appear as Revoked; Pending entries are intents in flight.
func (s State) Walk(issuerID string, fn func(CertStatus) error) error {
	b := s.tx.Bucket(bucketStatus).Bucket([]byte(issuerID))
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		s, err := decodeStatus(k, v)
		if err != nil {
			return err
		}
		return fn(s)
	})
}

// StatusOf returns the status entry of one serial under the issuer.
func (s State) StatusOf(issuerID string, serial *big.Int) (CertStatus, error) {
	return s.StatusOfBytes(issuerID, serialKey(serial))
}

// StatusOfBytes is StatusOf of a serial as big-endian bytes.
func (s State) StatusOfBytes(issuerID string, k []byte) (CertStatus, error) {
	if b := s.tx.Bucket(bucketStatus).Bucket([]byte(issuerID)); b != nil {
		if v := b.Get(k); v != nil {
			return decodeStatus(k, v)
		}
	}
	return CertStatus{}, fmt.Errorf("%w: serial %x of issuer %s", ErrNotFound, k, issuerID)
}

// ByLink returns the serials issued (or intended) for a link hash, in serial order.
func (s State) ByLink(link []byte) []*big.Int {
	var out []*big.Int
	p := indexPrefix(link)
	c := s.tx.Bucket(bucketLinks).Cursor()
	for k, _ := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, _ = c.Next() {
		out = append(out, new(big.Int).SetBytes(k[len(p):]))
	}
	return out
}

// CountByPerson counts the person's certificates that are not expired at t and not
// revoked (held ones count), for per-person limits.
func (s State) CountByPerson(person []byte, t time.Time) (int, error) {
	n := 0
	p := indexPrefix(person)
	c := s.tx.Bucket(bucketPersons).Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if len(v) != 8 || int64(binary.BigEndian.Uint64(v)) <= t.UnixNano() {
			continue
		}
		r, err := readCert(s.tx, k[len(p):])
		if err != nil {
			return 0, err
		}
		if r != nil && Status(r.Status) != Revoked {
			n++
		}
	}
	return n, nil
}

// Issuers lists every CA certificate the state holds (pending, active, retired),
// oldest first.
func (s State) Issuers() ([]Issuer, error) {
	var out []Issuer
	err := s.tx.Bucket(bucketIssuers).ForEach(func(k, v []byte) error {
		if k[0] == 0 {
			return nil
		}
		var r issuerRecord
		if err := decMode.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("ca: issuer %s: %w", k, err)
		}
		is, err := r.issuer()
		if err != nil {
			return err
		}
		is.LastNotAfter = horizon(s.tx, &r)
		out = append(out, is)
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, err
}

// LookupIssuer returns the issuer with the given ID.
func (s State) LookupIssuer(id string) (Issuer, error) {
	r, err := readIssuer(s.tx, id)
	if err != nil {
		return Issuer{}, err
	}
	if r == nil {
		return Issuer{}, fmt.Errorf("%w: issuer %q", ErrNotFound, id)
	}
	is, err := r.issuer()
	is.LastNotAfter = horizon(s.tx, r)
	return is, err
}

// ErrNoActiveIssuer: no CA certificate is active (none installed yet, or all
// retired).
var ErrNoActiveIssuer = cluster.NewRefusal("ca.no-issuer", "ca: no active CA certificate")

// ActiveIssuer returns the issuer new certificates are issued under.
func (s State) ActiveIssuer() (Issuer, error) {
	id, err := activeIssuerID(s.tx)
	if err != nil {
		return Issuer{}, err
	}
	return s.LookupIssuer(id)
}

func activeIssuerID(tx *bbolt.Tx) (string, error) {
	id := tx.Bucket(bucketIssuers).Get(keyActive)
	if id == nil {
		return "", ErrNoActiveIssuer
	}
	return string(id), nil
}

// responderCertificate returns the latest responder certificate issued for a node,
// from whichever issuer. A node has one from every issuer it answers for: see
// ResponderCertificates.
func responderCertificate(tx *bbolt.Tx, nodeID string) (*x509.Certificate, error) {
	var latest *certRecord
	err := responderSerials(tx, nodeID, func(_ string, serial []byte) error {
		r, err := responderRecord(tx, nodeID, serial)
		if err == nil && (latest == nil || r.IssuedAt > latest.IssuedAt) {
			latest = r
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if latest == nil {
		return nil, fmt.Errorf("%w: responder certificate of node %q", ErrNotFound, nodeID)
	}
	return x509.ParseCertificate(latest.DER)
}

// ResponderCertificates returns the node's latest responder certificate from each
// issuer that has issued it one, by issuer ID (empty if none has).
func (s State) ResponderCertificates(nodeID string) (map[string]*x509.Certificate, error) {
	out := map[string]*x509.Certificate{}
	err := responderSerials(s.tx, nodeID, func(issuerID string, serial []byte) error {
		r, err := responderRecord(s.tx, nodeID, serial)
		if err != nil {
			return err
		}
		c, err := x509.ParseCertificate(r.DER)
		if err != nil {
			return fmt.Errorf("ca: responder certificate %x of node %q: %w", serial, nodeID, err)
		}
		out[issuerID] = c
		return nil
	})
	return out, err
}

// ResponderNodes lists the nodes that hold responder certificates (from any
// issuer), for ResponderCertificates.
func (s State) ResponderNodes() ([]string, error) {
	rb := s.tx.Bucket(bucketResponders)
	if rb == nil {
		return nil, nil
	}
	var out []string
	err := rb.ForEach(func(k, _ []byte) error {
		out = append(out, string(k))
		return nil
	})
	return out, err
}

// responderSerials calls fn with the serial of the node's latest responder
// certificate from each issuer. A node ID holding a serial rather than a bucket is
// the format before per-issuer responders: one certificate, its record names the
// issuer.
func responderSerials(tx *bbolt.Tx, nodeID string, fn func(issuerID string, serial []byte) error) error {
	rb := tx.Bucket(bucketResponders)
	if rb == nil {
		return nil
	}
	if b := rb.Bucket([]byte(nodeID)); b != nil {
		return b.ForEach(func(k, v []byte) error { return fn(string(k), v) })
	}
	if v := rb.Get([]byte(nodeID)); v != nil {
		r, err := readCert(tx, v)
		if err != nil || r == nil {
			return err // no record: nothing to answer with
		}
		return fn(r.Issuer, v)
	}
	return nil
}

func responderRecord(tx *bbolt.Tx, nodeID string, serial []byte) (*certRecord, error) {
	r, err := readCert(tx, serial)
	if err != nil {
		return nil, err
	}
	if r == nil || r.DER == nil {
		return nil, fmt.Errorf("ca: responder certificate of node %q: record %x has no certificate", nodeID, serial)
	}
	return r, nil
}

// putResponder records serial as the node's latest responder certificate from
// issuerID, replacing a record of the format before per-issuer responders.
func putResponder(tx *bbolt.Tx, nodeID, issuerID string, serial []byte) error {
	rb := tx.Bucket(bucketResponders)
	var oldIssuer string
	var oldSerial []byte
	if v := rb.Get([]byte(nodeID)); v != nil && rb.Bucket([]byte(nodeID)) == nil {
		oldSerial = bytes.Clone(v)
		r, err := readCert(tx, oldSerial)
		if err != nil {
			return err
		}
		if r != nil {
			oldIssuer = r.Issuer
		}
		if err := rb.Delete([]byte(nodeID)); err != nil {
			return err
		}
	}
	b, err := rb.CreateBucketIfNotExists([]byte(nodeID))
	if err != nil {
		return err
	}
	if oldIssuer != "" && oldIssuer != issuerID {
		if err := b.Put([]byte(oldIssuer), oldSerial); err != nil {
			return err
		}
	}
	return b.Put([]byte(issuerID), serial)
}

// horizon is the issuer's LastNotAfter: from ca.horizons, or, for an issuer
// installed before it was kept there, its certificate's notAfter.
func horizon(tx *bbolt.Tx, r *issuerRecord) time.Time {
	if b := tx.Bucket(bucketHorizons); b != nil {
		if v := b.Get([]byte(r.ID)); len(v) == 8 {
			return fromUnixNano(int64(binary.BigEndian.Uint64(v)))
		}
	}
	if issuerStatus(r.Status) == issuerPending {
		return time.Time{}
	}
	return fromUnixNano(r.NotAfter)
}

// extendHorizon moves the issuer's LastNotAfter to notAfter if that is later.
func extendHorizon(tx *bbolt.Tx, issuerID string, notAfter int64) error {
	b := tx.Bucket(bucketHorizons)
	if v := b.Get([]byte(issuerID)); len(v) == 8 && int64(binary.BigEndian.Uint64(v)) >= notAfter {
		return nil
	}
	var v [8]byte
	binary.BigEndian.PutUint64(v[:], uint64(notAfter))
	return b.Put([]byte(issuerID), v[:])
}

// pendingIntents lists the intents without an issued record committed before
// `before`, by issuer.
func pendingIntents(tx *bbolt.Tx, before time.Time) (map[string][]*big.Int, error) {
	out := map[string][]*big.Int{}
	err := tx.Bucket(bucketIntents).ForEach(func(k, v []byte) error {
		r, err := readCert(tx, k)
		if err != nil || r == nil {
			return fmt.Errorf("ca: intent %x without a record: %w", k, err)
		}
		if r.IntentAt < before.UnixNano() {
			out[string(v)] = append(out[string(v)], new(big.Int).SetBytes(k))
		}
		return nil
	})
	return out, err
}
