package operator

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"time"

	"github.com/inkan-pki/inkan/cluster"
	"go.etcd.io/bbolt"
)

// The replicated state the package keeps in the cluster's bbolt file. Times are
// Unix nanoseconds of the entries' leader-stamped times.
//
//	operator.ca        "cert" → the operator CA's self-signed certificate (DER)
//	operator.ops       operator ID → opRecord (CBOR), removed ones kept
//	operator.certs     SHA-256 of an operator certificate → operator ID
//	operator.keys      SHA-256 of an active operator's SubjectPublicKeyInfo → operator ID
//	operator.requests  request ID → reqRecord (CBOR), decided ones kept
var (
	bucketCA       = []byte("operator.ca")
	keyCACert      = []byte("cert")
	bucketOps      = []byte("operator.ops")
	bucketCerts    = []byte("operator.certs")
	bucketKeys     = []byte("operator.keys")
	bucketRequests = []byte("operator.requests")
)

func allBuckets() [][]byte {
	return [][]byte{bucketCA, bucketOps, bucketCerts, bucketKeys, bucketRequests}
}

// Records are encoded as every service encodes its state (cluster.ValueCodec).
var encMode, decMode = cluster.ValueCodec()

func toTime(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns).UTC()
}

// Errors of lookups.
var (
	// errNotFound: no operator or request of that ID.
	errNotFound = cluster.NewRefusal("operator.not-found", "operator: not found")
	// errNoCA: the operator CA is not made yet (no Bootstrap). A
	// cluster.Refusal, so that it keeps its identity from the leader.
	errNoCA = cluster.NewRefusal("operator.no-ca", "operator: no operator CA yet")
)

// Status is an operator's standing.
type Status uint8

const (
	// Active operators authenticate and act.
	Active Status = iota + 1
	// removed operators are refused; their record stays for the audit.
	removed
)

func (s Status) String() string {
	switch s {
	case Active:
		return "active"
	case removed:
		return "removed"
	}
	return fmt.Sprintf("status(%d)", uint8(s))
}

// fingerprint is the SHA-256 of an operator certificate's DER.
type fingerprint [32]byte

// Actor is how the audit log names the operator: "sha256:" and the hex of the
// fingerprint (audit.OperatorActor of the certificate).
func (f fingerprint) Actor() string { return "sha256:" + hex.EncodeToString(f[:]) }

func (f fingerprint) String() string { return hex.EncodeToString(f[:]) }

// fingerprintOf returns the fingerprint of a certificate's DER.
func fingerprintOf(der []byte) fingerprint { return sha256.Sum256(der) }

// Operator is one operator's record.
type Operator struct {
	ID          string // "op-" and 16 hex digits, chosen when the certificate is issued
	Name        string // a label for people (kept in the state only, never in the audit log or logs)
	Role        Role
	Status      Status
	Certificate []byte      // DER
	Fingerprint fingerprint // SHA-256 of Certificate
	Created     time.Time   // entry time of the operator.add
	NotAfter    time.Time   // the certificate's
	Removed     time.Time   // entry time of the operator.remove, or zero
}

// Actor is the operator's name in the audit log (Fingerprint.Actor).
func (o Operator) Actor() string { return o.Fingerprint.Actor() }

type opRecord struct {
	_        struct{} `cbor:",toarray"`
	ID       string
	Name     string
	Role     string
	Status   uint8
	Cert     []byte
	Created  int64
	NotAfter int64
	Removed  int64
}

func (r *opRecord) operator() Operator {
	return Operator{
		ID: r.ID, Name: r.Name, Role: Role(r.Role), Status: Status(r.Status), Certificate: r.Cert,
		Fingerprint: fingerprintOf(r.Cert), Created: toTime(r.Created), NotAfter: toTime(r.NotAfter), Removed: toTime(r.Removed),
	}
}

func readOp(tx *bbolt.Tx, id string) (*opRecord, error) {
	v := tx.Bucket(bucketOps).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var r opRecord
	if err := decMode.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("operator: record %s: %w", id, err)
	}
	return &r, nil
}

func putOp(tx *bbolt.Tx, r *opRecord) error {
	v, err := encMode.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketOps).Put([]byte(r.ID), v)
}

// opByFingerprint returns the record of the operator whose certificate has fp.
func opByFingerprint(tx *bbolt.Tx, fp []byte) (*opRecord, error) {
	id := tx.Bucket(bucketCerts).Get(fp)
	if id == nil {
		return nil, nil
	}
	return readOp(tx, string(id))
}

// Lookup returns the operator of that ID (errNotFound if none).
func Lookup(tx *bbolt.Tx, id string) (Operator, error) {
	r, err := readOp(tx, id)
	if err != nil {
		return Operator{}, err
	}
	if r == nil {
		return Operator{}, fmt.Errorf("%w: operator %q", errNotFound, id)
	}
	return r.operator(), nil
}

// List returns every operator, removed ones too, by ID.
func List(tx *bbolt.Tx) ([]Operator, error) {
	var out []Operator
	err := tx.Bucket(bucketOps).ForEach(func(k, v []byte) error {
		var r opRecord
		if err := decMode.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("operator: record %s: %w", k, err)
		}
		out = append(out, r.operator())
		return nil
	})
	return out, err
}

// manageRule returns the recorded rule of operator.manage and how many active
// operators of its role there are; ok is false before the rules are recorded
// or if they have none for it. While there are fewer than M+1, operators are
// added and removed directly (the initial ceremony, Service.Required); once
// there are M+1, the state machine keeps it so (a removal, a rule), else the
// next change would hand operator changes back to one admin.
func manageRule(tx *bbolt.Tx) (r Rule, n int, ok bool, err error) {
	rules, err := recordedRules(tx)
	if err != nil {
		return Rule{}, 0, false, err
	}
	if r, ok = rules[actionOperatorManage]; !ok {
		return Rule{}, 0, false, nil
	}
	n, err = countActive(tx, r.Role, "")
	return r, n, true, err
}

// countActive counts the active operators of role, leaving out the one of ID
// except (if given).
func countActive(tx *bbolt.Tx, role Role, except string) (int, error) {
	n := 0
	err := tx.Bucket(bucketOps).ForEach(func(k, v []byte) error {
		var r opRecord
		if err := decMode.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("operator: record %s: %w", k, err)
		}
		if Status(r.Status) == Active && Role(r.Role) == role && r.ID != except {
			n++
		}
		return nil
	})
	return n, err
}

// CACertificate returns the operator CA's certificate (DER), errNoCA before
// Bootstrap.
func CACertificate(tx *bbolt.Tx) ([]byte, error) {
	v := tx.Bucket(bucketCA).Get(keyCACert)
	if v == nil {
		return nil, errNoCA
	}
	return append([]byte(nil), v...), nil
}

// State is a request's place in dual control.
//
//	pending ──approve×M──▶ approved ──start──▶ executing ──finish──▶ executed | failed
//	   │                                           └──(leader lost, runner not atomic)──▶ interrupted
//	   ├──reject──▶ rejected
//	   └──entry time ≥ expiry──▶ expired
type State uint8

// The states of a request.
const (
	statePending State = iota + 1
	stateApproved
	stateRejected
	stateExpired
	stateExecuting
	stateExecuted
	stateFailed
	stateInterrupted
)

var stateNames = map[State]string{
	statePending: "pending", stateApproved: "approved", stateRejected: "rejected", stateExpired: "expired",
	stateExecuting: "executing", stateExecuted: "executed", stateFailed: "failed", stateInterrupted: "interrupted",
}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Final reports whether nothing more happens to a request in state s.
func (s State) Final() bool {
	return s == stateRejected || s == stateExpired || s == stateExecuted || s == stateFailed || s == stateInterrupted
}

// Request is a request under dual control.
type Request struct {
	ID       string
	Action   string
	Body     []byte // the canonical request body the approvers sign over (by its Digest)
	Digest   [32]byte
	Proposer fingerprint // the certificate the proposer used
	// ProposerID is the proposer's operator ID: an operator is one person
	// whatever certificate they hold (a renewal changes the fingerprint).
	ProposerID string
	Rule       Rule // the rule in force when it was proposed
	Created    time.Time
	Expires    time.Time
	State      State
	// Approvals are the fingerprints of the certificates that approved, in
	// order, and ApproverIDs their operators; Rejecter is the certificate that
	// rejected it (State Rejected).
	Approvals   []fingerprint
	ApproverIDs []string
	Rejecter    fingerprint
	Decided     time.Time // entry time of the last change of State
	// Result is what the execution returned (State Executed), Error why it
	// failed (Failed, Interrupted).
	Result []byte
	Error  string
}

type reqRecord struct {
	_           struct{} `cbor:",toarray"`
	ID          string
	Action      string
	Body        []byte
	Digest      []byte
	Proposer    []byte
	ProposerID  string
	M           int
	Role        string
	TTL         int64
	Created     int64
	Expires     int64
	State       uint8
	Approvals   [][]byte
	ApproverIDs []string
	Rejecter    []byte
	Decided     int64
	Run         string // the execution that started it (State Executing and after)
	Result      []byte
	Error       string
}

func (r *reqRecord) request() Request {
	q := Request{
		ID: r.ID, Action: r.Action, Body: r.Body, ProposerID: r.ProposerID, ApproverIDs: r.ApproverIDs, Rule: Rule{M: r.M, Role: Role(r.Role), TTL: time.Duration(r.TTL)},
		Created: toTime(r.Created), Expires: toTime(r.Expires), State: State(r.State),
		Decided: toTime(r.Decided), Result: r.Result, Error: r.Error,
	}
	copy(q.Digest[:], r.Digest)
	copy(q.Proposer[:], r.Proposer)
	copy(q.Rejecter[:], r.Rejecter)
	for _, a := range r.Approvals {
		var f fingerprint
		copy(f[:], a)
		q.Approvals = append(q.Approvals, f)
	}
	return q
}

func readReq(tx *bbolt.Tx, id string) (*reqRecord, error) {
	v := tx.Bucket(bucketRequests).Get([]byte(id))
	if v == nil {
		return nil, nil
	}
	var r reqRecord
	if err := decMode.Unmarshal(v, &r); err != nil {
		return nil, fmt.Errorf("operator: request %s: %w", id, err)
	}
	return &r, nil
}

func putReq(tx *bbolt.Tx, r *reqRecord) error {
	v, err := encMode.Marshal(r)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketRequests).Put([]byte(r.ID), v)
}

// LookupRequest returns the request of that ID (errNotFound if none).
func LookupRequest(tx *bbolt.Tx, id string) (Request, error) {
	r, err := readReq(tx, id)
	if err != nil {
		return Request{}, err
	}
	if r == nil {
		return Request{}, fmt.Errorf("%w: request %q", errNotFound, id)
	}
	return r.request(), nil
}

// Requests returns every request, oldest first; those whose State is not Final
// are still open.
func Requests(tx *bbolt.Tx) ([]Request, error) {
	rs, err := requestRecords(tx)
	out := make([]Request, len(rs))
	for i, r := range rs {
		out[i] = r.request()
	}
	return out, err
}

func requestRecords(tx *bbolt.Tx, states ...State) ([]*reqRecord, error) {
	var out []*reqRecord
	err := tx.Bucket(bucketRequests).ForEach(func(k, v []byte) error {
		var r reqRecord
		if err := decMode.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("operator: request %s: %w", k, err)
		}
		if len(states) == 0 || containsState(states, State(r.State)) {
			out = append(out, &r)
		}
		return nil
	})
	sort.SliceStable(out, func(i, j int) bool { return out[i].Created < out[j].Created })
	return out, err
}

func containsState(ss []State, s State) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}
