package cluster

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/bbolt"
)

const reservedPrefix = "cluster."

// Buckets holding membership metadata and join tokens.
var (
	bucketMembers = []byte("cluster.members")
	bucketTokens  = []byte("cluster.tokens")
	bucketDenied  = []byte("cluster.denied")
)

// Role is a node's part in the cluster.
type Role string

const (
	// Voter nodes count toward quorum and hold the replicated keys.
	Voter Role = "voter"
	// Nonvoter nodes (OCSP edges) follow the log but never count toward
	// quorum and receive no replicated key.
	Nonvoter Role = "nonvoter"
)

func (r Role) valid() bool { return r == Voter || r == Nonvoter }

// Member is a node's membership metadata, kept in the replicated state.
type Member struct {
	ID       string
	Addr     string // host:port for Raft, RPC and join
	Role     Role
	JoinedAt time.Time
}

type memberRecord struct {
	_        struct{} `cbor:",toarray"`
	ID       string
	Addr     string
	Role     string
	JoinedAt int64
}

type tokenRecord struct {
	_       struct{} `cbor:",toarray"`
	Hash    []byte   // SHA-256 of the secret
	Expires int64    // Unix nanoseconds
	Role    string
	UsedBy  string
}

// Bodies of the built-in commands.
type (
	tokenCreate struct {
		_       struct{} `cbor:",toarray"`
		ID      []byte
		Hash    []byte
		Expires int64
		Role    string
	}
	memberJoin struct {
		_     struct{} `cbor:",toarray"`
		Token []byte   // empty only for the bootstrap node's own record
		Node  string
		Addr  string
	}
	memberRemove struct {
		_    struct{} `cbor:",toarray"`
		Node string
	}
)

// Errors of membership, for callers to act on.
var (
	ErrTokenInvalid = errors.New("cluster: join token unknown, forged, used or expired")
	ErrNodeRemoved  = errors.New("cluster: node was removed from the cluster")
)

const (
	cmdTokenCreate  = "cluster.token.create"
	cmdMemberJoin   = "cluster.member.join"
	cmdMemberSelf   = "cluster.member.bootstrap"
	cmdMemberRemove = "cluster.member.remove"
)

type builtin struct {
	typ   string
	apply func(tx *bbolt.Tx, e Entry) ([]byte, error)
}

func (b builtin) Type() string                                { return b.typ }
func (b builtin) Versions() []uint                            { return []uint{1} }
func (b builtin) Buckets() [][]byte                           { return nil }
func (b builtin) Apply(tx *bbolt.Tx, e Entry) ([]byte, error) { return b.apply(tx, e) }

func builtinHandlers() []Handler {
	return []Handler{
		builtin{cmdTokenCreate, applyTokenCreate},
		builtin{cmdMemberJoin, applyMemberJoin},
		builtin{cmdMemberSelf, applyMemberBootstrap},
		builtin{cmdMemberRemove, applyMemberRemove},
		// bucket ownership for the membership buckets
		bucketOwner{},
	}
}

// bucketOwner only declares the membership buckets; its command is never
// submitted.
type bucketOwner struct{}

func (bucketOwner) Type() string      { return "cluster.buckets" }
func (bucketOwner) Versions() []uint  { return nil }
func (bucketOwner) Buckets() [][]byte { return [][]byte{bucketMembers, bucketTokens, bucketDenied} }
func (bucketOwner) Apply(*bbolt.Tx, Entry) ([]byte, error) {
	return nil, errors.New("cluster.buckets is not a command")
}

func applyTokenCreate(tx *bbolt.Tx, e Entry) ([]byte, error) {
	var c tokenCreate
	if err := e.Command.Decode(&c); err != nil {
		return nil, Refuse(err)
	}
	if len(c.ID) == 0 || len(c.Hash) != sha256.Size || !Role(c.Role).valid() {
		return nil, Refuse(errors.New("malformed join token"))
	}
	b := tx.Bucket(bucketTokens)
	if b.Get(c.ID) != nil {
		return nil, Refuse(errors.New("join token ID already exists"))
	}
	v, err := encMode.Marshal(tokenRecord{Hash: c.Hash, Expires: c.Expires, Role: c.Role})
	if err != nil {
		return nil, err
	}
	return nil, b.Put(c.ID, v)
}

func applyMemberJoin(tx *bbolt.Tx, e Entry) ([]byte, error) {
	var c memberJoin
	if err := e.Command.Decode(&c); err != nil {
		return nil, Refuse(err)
	}
	tb := tx.Bucket(bucketTokens)
	v := tb.Get(c.Token)
	if v == nil || len(c.Token) == 0 {
		return nil, Refuse(ErrTokenInvalid)
	}
	var t tokenRecord
	if err := decMode.Unmarshal(v, &t); err != nil {
		return nil, err
	}
	if t.UsedBy != "" || e.Time.UnixNano() >= t.Expires {
		return nil, Refuse(ErrTokenInvalid)
	}
	if err := checkNewMember(tx, c.Node); err != nil {
		return nil, err
	}
	t.UsedBy = c.Node
	nv, err := encMode.Marshal(t)
	if err != nil {
		return nil, err
	}
	if err := tb.Put(c.Token, nv); err != nil {
		return nil, err
	}
	return []byte(t.Role), putMember(tx, Member{ID: c.Node, Addr: c.Addr, Role: Role(t.Role), JoinedAt: e.Time})
}

func applyMemberBootstrap(tx *bbolt.Tx, e Entry) ([]byte, error) {
	var c memberJoin
	if err := e.Command.Decode(&c); err != nil {
		return nil, Refuse(err)
	}
	if k, _ := tx.Bucket(bucketMembers).Cursor().First(); k != nil {
		if string(k) == c.Node && tx.Bucket(bucketMembers).Stats().KeyN == 1 {
			return nil, nil // already recorded (bootstrap node restarted before it knew)
		}
		return nil, Refuse(errors.New("cluster already has members"))
	}
	if err := checkNewMember(tx, c.Node); err != nil {
		return nil, err
	}
	return nil, putMember(tx, Member{ID: c.Node, Addr: c.Addr, Role: Voter, JoinedAt: e.Time})
}

func checkNewMember(tx *bbolt.Tx, id string) error {
	if !validNodeID(id) {
		return Refuse(fmt.Errorf("invalid node ID %q", id))
	}
	if tx.Bucket(bucketDenied).Get([]byte(id)) != nil {
		return Refuse(ErrNodeRemoved)
	}
	if tx.Bucket(bucketMembers).Get([]byte(id)) != nil {
		return Refuse(fmt.Errorf("node %s is already a member", id))
	}
	return nil
}

func applyMemberRemove(tx *bbolt.Tx, e Entry) ([]byte, error) {
	var c memberRemove
	if err := e.Command.Decode(&c); err != nil {
		return nil, Refuse(err)
	}
	if err := tx.Bucket(bucketMembers).Delete([]byte(c.Node)); err != nil {
		return nil, err
	}
	var at [8]byte
	putUint64(at[:], uint64(e.Time.UnixNano()))
	return nil, tx.Bucket(bucketDenied).Put([]byte(c.Node), at[:])
}

func putMember(tx *bbolt.Tx, m Member) error {
	v, err := encMode.Marshal(memberRecord{ID: m.ID, Addr: m.Addr, Role: string(m.Role), JoinedAt: m.JoinedAt.UnixNano()})
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMembers).Put([]byte(m.ID), v)
}

// readMembers lists the members recorded in the state.
func readMembers(tx *bbolt.Tx) ([]Member, error) {
	var out []Member
	err := tx.Bucket(bucketMembers).ForEach(func(k, v []byte) error {
		var r memberRecord
		if err := decMode.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("member %s: %w", k, err)
		}
		out = append(out, Member{ID: r.ID, Addr: r.Addr, Role: Role(r.Role), JoinedAt: time.Unix(0, r.JoinedAt).UTC()})
		return nil
	})
	return out, err
}

func readMember(tx *bbolt.Tx, id string) (Member, bool) {
	v := tx.Bucket(bucketMembers).Get([]byte(id))
	if v == nil {
		return Member{}, false
	}
	var r memberRecord
	if decMode.Unmarshal(v, &r) != nil {
		return Member{}, false
	}
	return Member{ID: r.ID, Addr: r.Addr, Role: Role(r.Role), JoinedAt: time.Unix(0, r.JoinedAt).UTC()}, true
}

func loadDenied(tx *bbolt.Tx) *map[string]bool {
	m := map[string]bool{}
	if b := tx.Bucket(bucketDenied); b != nil {
		_ = b.ForEach(func(k, _ []byte) error { m[string(k)] = true; return nil })
	}
	return &m
}

func (f *stateMachine) isDenied(id string) bool {
	p := f.denied.Load()
	return p != nil && (*p)[id]
}

// A join token is "inkan-join.<id>.<secret>.<ca fingerprint>": the ID names
// the token in the state, the secret proves the bearer may use it (the state
// keeps only its SHA-256), and the fingerprint (SHA-256 of the cluster CA's
// SubjectPublicKeyInfo) lets the joiner authenticate the cluster before it
// holds any certificate.
const tokenPrefix = "inkan-join"

type joinToken struct {
	id, secret  []byte
	fingerprint []byte
}

func (t joinToken) String() string {
	return strings.Join([]string{tokenPrefix,
		hex.EncodeToString(t.id),
		base64.RawURLEncoding.EncodeToString(t.secret),
		hex.EncodeToString(t.fingerprint)}, ".")
}

func parseJoinToken(s string) (joinToken, error) {
	parts := strings.Split(strings.TrimSpace(s), ".")
	if len(parts) != 4 || parts[0] != tokenPrefix {
		return joinToken{}, fmt.Errorf("%w: malformed", ErrTokenInvalid)
	}
	var t joinToken
	var err1, err2, err3 error
	t.id, err1 = hex.DecodeString(parts[1])
	t.secret, err2 = base64.RawURLEncoding.Strict().DecodeString(parts[2])
	t.fingerprint, err3 = hex.DecodeString(parts[3])
	if err := errors.Join(err1, err2, err3); err != nil || len(t.id) != 8 || len(t.secret) != 32 || len(t.fingerprint) != sha256.Size {
		return joinToken{}, fmt.Errorf("%w: malformed", ErrTokenInvalid)
	}
	return t, nil
}

// checkTokenSecret tells whether secret matches the token id in the state
// and the token is still usable at now.
func checkTokenSecret(tx *bbolt.Tx, id, secret []byte, now time.Time) (Role, error) {
	v := tx.Bucket(bucketTokens).Get(id)
	if v == nil {
		return "", ErrTokenInvalid
	}
	var t tokenRecord
	if err := decMode.Unmarshal(v, &t); err != nil {
		return "", err
	}
	h := sha256.Sum256(secret)
	if subtle.ConstantTimeCompare(h[:], t.Hash) != 1 || t.UsedBy != "" || now.UnixNano() >= t.Expires {
		return "", ErrTokenInvalid
	}
	return Role(t.Role), nil
}

func validNodeID(id string) bool {
	if len(id) < 1 || len(id) > 64 {
		return false
	}
	for _, c := range id {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func putUint64(b []byte, v uint64) {
	for i := 7; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
}
