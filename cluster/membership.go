package cluster

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/raft"
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

// member is a node's membership metadata, kept in the replicated state.
type member struct {
	ID       string
	Addr     string // host:port for Raft, RPC and join
	Role     Role
	JoinedAt time.Time
	// NodeKey and TransportKey are the fingerprints approved for the member
	// (zero for a member that joined before joins were granted to keys, until
	// its transport key is approved); Request is the approval.
	NodeKey      KeyFingerprint
	TransportKey KeyFingerprint
	Request      string
}

type memberRecord struct {
	_        struct{} `cbor:",toarray"`
	ID       string
	Addr     string
	Role     string
	JoinedAt int64
}

// tokenRecord is a join token in the state. A token made before joins were
// granted to a node's keys (tokenRecordV1, four fields) decodes unbound and
// admits nobody.
type tokenRecord struct {
	_         struct{} `cbor:",toarray"`
	Hash      []byte   // SHA-256 of the secret
	Expires   int64    // Unix nanoseconds
	Role      string
	UsedBy    string
	Node      string // the node it was granted to
	NodeKey   []byte // the fingerprint of that node's TLS key
	Transport []byte // the fingerprint of its transport key
	Request   string // the approved request that granted it, if any
}

type tokenRecordV1 struct {
	_       struct{} `cbor:",toarray"`
	Hash    []byte
	Expires int64
	Role    string
	UsedBy  string
}

func decodeToken(v []byte) (tokenRecord, error) {
	var t tokenRecord
	err := decMode.Unmarshal(v, &t)
	if err != nil {
		var old tokenRecordV1
		if decMode.Unmarshal(v, &old) == nil {
			return tokenRecord{Hash: old.Hash, Expires: old.Expires, Role: old.Role, UsedBy: old.UsedBy}, nil
		}
	}
	return t, err
}

// bound reports whether the token was granted to a node's keys.
func (t tokenRecord) bound() bool {
	return t.Node != "" && len(t.NodeKey) == sha256.Size && len(t.Transport) == sha256.Size
}

// admits checks that the joiner is the node the token was granted to.
func (t tokenRecord) admits(node string, nodeKey, transport KeyFingerprint) error {
	if !t.bound() {
		return errTokenUnbound
	}
	var why []string
	if node != t.Node {
		why = append(why, fmt.Sprintf("granted to node %q, not %q", t.Node, node))
	}
	if subtle.ConstantTimeCompare(nodeKey[:], t.NodeKey) != 1 {
		why = append(why, fmt.Sprintf("its node key is %s, the joiner's %s", KeyFingerprint(t.NodeKey), nodeKey))
	}
	if subtle.ConstantTimeCompare(transport[:], t.Transport) != 1 {
		why = append(why, fmt.Sprintf("its transport key is %s, the joiner's %s", KeyFingerprint(t.Transport), transport))
	}
	if len(why) > 0 {
		return fmt.Errorf("%w: %s", ErrJoinBinding, strings.Join(why, "; "))
	}
	return nil
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
	// tokenGrant (cluster.token.create v2) records a join token granted to a
	// node's keys; it expires TTL after the entry's time.
	tokenGrant struct {
		_         struct{} `cbor:",toarray"`
		ID        []byte
		Hash      []byte
		TTL       int64
		Role      string
		Node      string
		NodeKey   []byte
		Transport []byte
		Request   string
	}
	// memberJoinV2 (cluster.member.join v2) records a joined member with its
	// keys' fingerprints and the replicated keys wrapped for it.
	memberJoinV2 struct {
		_         struct{} `cbor:",toarray"`
		Token     []byte
		Node      string
		Addr      string
		NodeKey   []byte
		Transport []byte
		Keys      []string
	}
	// memberSelfV2 (cluster.member.bootstrap v2): the first node, with its keys.
	memberSelfV2 struct {
		_         struct{} `cbor:",toarray"`
		Node      string
		Addr      string
		NodeKey   []byte
		Transport []byte
	}
)

// Errors of membership, for callers to act on.
var (
	ErrTokenInvalid = errors.New("cluster: join token unknown, forged, used or expired")
	ErrNodeRemoved  = errors.New("cluster: node was removed from the cluster")
	// ErrJoinBinding: the joiner is not the node its token was granted to
	// (another node ID, node key or transport key).
	ErrJoinBinding = NewRefusal("cluster.join-binding", "cluster: the join token was granted to another node, node key or transport key")
	// ErrJoinRole: the token is for another role than the joiner's configuration.
	ErrJoinRole = NewRefusal("cluster.join-role", "cluster: the join token is for another role than the node is configured for")
	// errTokenUnbound: a token made before tokens were granted to a node's keys.
	errTokenUnbound = NewRefusal("cluster.token-unbound", "cluster: the join token is bound to no node's keys; grant a new one")
	// errTransportNotApproved: a key transfer to a transport key that is not the
	// one approved for the receiving voter (or to a nonvoter).
	errTransportNotApproved = NewRefusal("cluster.transport-not-approved", "cluster: the receiving node's transport key is not the one approved for it")
)

const (
	cmdTokenCreate  = "cluster.token.create"
	cmdMemberJoin   = "cluster.member.join"
	cmdMemberSelf   = "cluster.member.bootstrap"
	cmdMemberRemove = "cluster.member.remove"
)

func builtinHandlers() []Handler {
	v1, v12 := []uint{1}, []uint{1, 2}
	return []Handler{
		NewHandler(cmdTokenCreate, v12, nil, applyTokenCreate),
		NewHandler(cmdMemberJoin, v12, nil, applyMemberJoin),
		NewHandler(cmdMemberSelf, v12, nil, applyMemberBootstrap),
		NewHandler(cmdMemberRemove, v1, nil, applyMemberRemove),
		NewHandler(cmdKeyTransfer, v1, nil, applyKeyTransfer),
		NewHandler(cmdMemberTransport, v1, nil, applyMemberTransport),
		NewHandler(cmdKeyRecord, v1, [][]byte{bucketKeys}, applyKeyRecord),
		// Only declares the membership buckets: its command is never submitted
		// (no version is applied).
		NewHandler("cluster.buckets", nil, [][]byte{bucketMembers, bucketTokens, bucketDenied, bucketMemberKeys},
			func(*bbolt.Tx, Entry) ([]byte, error) { return nil, errors.New("cluster.buckets is not a command") }),
	}
}

func applyTokenCreate(tx *bbolt.Tx, e Entry) ([]byte, error) {
	var rec tokenRecord
	var id []byte
	if e.Command.Version == 1 {
		// Replayed from a log written before grants: the token admits nobody.
		var c tokenCreate
		if err := e.Command.Decode(&c); err != nil {
			return nil, Refuse(err)
		}
		id, rec = c.ID, tokenRecord{Hash: c.Hash, Expires: c.Expires, Role: c.Role}
	} else {
		var g tokenGrant
		if err := e.Command.Decode(&g); err != nil {
			return nil, Refuse(err)
		}
		if !ValidNodeID(g.Node) || len(g.NodeKey) != sha256.Size || len(g.Transport) != sha256.Size || g.TTL <= 0 || len(g.Request) > 64 {
			return nil, Refuse(errors.New("malformed join grant"))
		}
		id = g.ID
		rec = tokenRecord{Hash: g.Hash, Expires: e.Time.Add(time.Duration(g.TTL)).UnixNano(), Role: g.Role,
			Node: g.Node, NodeKey: g.NodeKey, Transport: g.Transport, Request: g.Request}
	}
	if len(id) != 8 || len(rec.Hash) != sha256.Size || !Role(rec.Role).valid() {
		return nil, Refuse(errors.New("malformed join token"))
	}
	b := tx.Bucket(bucketTokens)
	if b.Get(id) != nil {
		return nil, Refuse(errors.New("join token ID already exists"))
	}
	if rec.Node != "" {
		if err := checkNewMember(tx, rec.Node); err != nil {
			return nil, err
		}
	}
	v, err := encMode.Marshal(rec)
	if err != nil {
		return nil, err
	}
	return nil, b.Put(id, v)
}

func applyMemberJoin(tx *bbolt.Tx, e Entry) ([]byte, error) {
	var c memberJoinV2
	if e.Command.Version == 1 {
		// Replayed from a log written before grants: a join by an unbound token.
		var old memberJoin
		if err := e.Command.Decode(&old); err != nil {
			return nil, Refuse(err)
		}
		c = memberJoinV2{Token: old.Token, Node: old.Node, Addr: old.Addr}
	} else if err := e.Command.Decode(&c); err != nil {
		return nil, Refuse(err)
	}
	tb := tx.Bucket(bucketTokens)
	v := tb.Get(c.Token)
	if v == nil || len(c.Token) == 0 {
		return nil, Refuse(ErrTokenInvalid)
	}
	t, err := decodeToken(v)
	if err != nil {
		return nil, err
	}
	if t.UsedBy != "" || e.Time.UnixNano() >= t.Expires {
		return nil, Refuse(ErrTokenInvalid)
	}
	if e.Command.Version >= 2 {
		if len(c.NodeKey) != sha256.Size || len(c.Transport) != sha256.Size {
			return nil, Refuse(errors.New("malformed join"))
		}
		if err := t.admits(c.Node, KeyFingerprint(c.NodeKey), KeyFingerprint(c.Transport)); err != nil {
			return nil, Refuse(err)
		}
		if len(c.Keys) > 0 && Role(t.Role) != Voter {
			return nil, Refuse(fmt.Errorf("%w: keys for a %s", errTransportNotApproved, t.Role))
		}
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
	if e.Command.Version >= 2 {
		if err := putMemberKeys(tx, c.Node, memberKeys{NodeKey: c.NodeKey, Transport: c.Transport, Request: t.Request,
			Approved: e.Time.UnixNano()}); err != nil {
			return nil, err
		}
	}
	return []byte(t.Role), putMember(tx, member{ID: c.Node, Addr: c.Addr, Role: Role(t.Role), JoinedAt: e.Time})
}

func applyMemberBootstrap(tx *bbolt.Tx, e Entry) ([]byte, error) {
	var c memberSelfV2
	if e.Command.Version == 1 {
		var old memberJoin
		if err := e.Command.Decode(&old); err != nil {
			return nil, Refuse(err)
		}
		c = memberSelfV2{Node: old.Node, Addr: old.Addr}
	} else if err := e.Command.Decode(&c); err != nil {
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
	if len(c.NodeKey) == sha256.Size && len(c.Transport) == sha256.Size {
		if err := putMemberKeys(tx, c.Node, memberKeys{NodeKey: c.NodeKey, Transport: c.Transport, Approved: e.Time.UnixNano()}); err != nil {
			return nil, err
		}
	}
	return nil, putMember(tx, member{ID: c.Node, Addr: c.Addr, Role: Voter, JoinedAt: e.Time})
}

func checkNewMember(tx *bbolt.Tx, id string) error {
	if !ValidNodeID(id) {
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
	if err := tx.Bucket(bucketMemberKeys).Delete([]byte(c.Node)); err != nil {
		return nil, err
	}
	var at [8]byte
	putUint64(at[:], uint64(e.Time.UnixNano()))
	return nil, tx.Bucket(bucketDenied).Put([]byte(c.Node), at[:])
}

func putMember(tx *bbolt.Tx, m member) error {
	v, err := encMode.Marshal(memberRecord{ID: m.ID, Addr: m.Addr, Role: string(m.Role), JoinedAt: m.JoinedAt.UnixNano()})
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMembers).Put([]byte(m.ID), v)
}

// readMembers lists the members recorded in the state, with their keys.
func readMembers(tx *bbolt.Tx) ([]member, error) {
	var out []member
	err := tx.Bucket(bucketMembers).ForEach(func(k, v []byte) error {
		var r memberRecord
		if err := decMode.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("member %s: %w", k, err)
		}
		m := member{ID: r.ID, Addr: r.Addr, Role: Role(r.Role), JoinedAt: time.Unix(0, r.JoinedAt).UTC()}
		keys, ok, err := readMemberKeys(tx, r.ID)
		if err != nil {
			return err
		}
		if ok {
			copy(m.NodeKey[:], keys.NodeKey)
			copy(m.TransportKey[:], keys.Transport)
			m.Request = keys.Request
		}
		out = append(out, m)
		return nil
	})
	return out, err
}

func readMember(tx *bbolt.Tx, id string) (member, bool) {
	v := tx.Bucket(bucketMembers).Get([]byte(id))
	if v == nil {
		return member{}, false
	}
	var r memberRecord
	if decMode.Unmarshal(v, &r) != nil {
		return member{}, false
	}
	return member{ID: r.ID, Addr: r.Addr, Role: Role(r.Role), JoinedAt: time.Unix(0, r.JoinedAt).UTC()}, true
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
	// The base64 decoder skips '\r' and '\n' even in strict mode: accept only the
	// secret's one canonical spelling, so a token has one written form.
	if base64.RawURLEncoding.EncodeToString(t.secret) != parts[2] {
		return joinToken{}, fmt.Errorf("%w: malformed", ErrTokenInvalid)
	}
	return t, nil
}

// checkTokenSecret tells whether secret matches the token id in the state
// and the token is still usable at now, and returns it.
func checkTokenSecret(tx *bbolt.Tx, id, secret []byte, now time.Time) (tokenRecord, error) {
	v := tx.Bucket(bucketTokens).Get(id)
	if v == nil {
		return tokenRecord{}, ErrTokenInvalid
	}
	t, err := decodeToken(v)
	if err != nil {
		return tokenRecord{}, err
	}
	h := sha256.Sum256(secret)
	if subtle.ConstantTimeCompare(h[:], t.Hash) != 1 || t.UsedBy != "" || now.UnixNano() >= t.Expires {
		return tokenRecord{}, ErrTokenInvalid
	}
	return t, nil
}

// ValidNodeID is the rule for a node's ID: 1 to 64 characters of a-z, 0-9
// and '-'. The node's configuration and the admin API check it too, so that
// their errors name the field.
func ValidNodeID(id string) bool {
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

// addServer adds a joined member to the Raft configuration in its role.
func (c *Cluster) addServer(ctx context.Context, id string) error {
	var m member
	var ok bool
	if err := c.ViewCurrent(ctx, func(tx *bbolt.Tx) error { m, ok = readMember(tx, id); return nil }); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("cluster: admit %s: not a member (join first)", id)
	}
	var f raft.IndexFuture
	if m.Role == Nonvoter {
		f = c.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(m.Addr), 0, 0)
	} else {
		f = c.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(m.Addr), 0, 0)
	}
	return waitFuture(ctx, f)
}

// removeServer takes a node out of the Raft configuration and records it
// as removed, so its certificate is refused from then on.
func (c *Cluster) removeServer(ctx context.Context, id string) error {
	if err := waitFuture(ctx, c.raft.RemoveServer(raft.ServerID(id), 0, 0)); err != nil {
		return err
	}
	cmd, err := NewCommand(cmdMemberRemove, 1, memberRemove{Node: id})
	if err != nil {
		return err
	}
	_, err = c.submit(ctx, cmd)
	return err
}

// RemoveNode removes a node from the cluster (from any node). Its
// certificate is refused from then on; a removed ID never rejoins.
func (c *Cluster) RemoveNode(ctx context.Context, id string) error {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	_, err := c.leaderCall(ctx, rpcRequest{Op: opRemove, Node: id}, "")
	return err
}

// TransferLeadership asks the leader to hand leadership to another voter.
func (c *Cluster) TransferLeadership(ctx context.Context) error {
	ctx, cancel := c.bound(ctx)
	defer cancel()
	_, err := c.leaderCall(ctx, rpcRequest{Op: opTransfer}, "")
	return err
}

// Leave is the clean exit for a node being decommissioned: it hands off
// leadership if it leads, has itself removed, and shuts down.
func (c *Cluster) Leave(ctx context.Context) error {
	if c.raft.State() == raft.Leader {
		if err := c.transferLeadership(ctx); err != nil {
			return fmt.Errorf("cluster: leave: transfer leadership: %w", err)
		}
	}
	if err := c.RemoveNode(ctx, c.id); err != nil && !c.removedSelf() {
		return fmt.Errorf("cluster: leave: %w", err)
	}
	return c.Shutdown(ctx)
}

// removedSelf tells whether this node saw itself removed: Raft stops a
// node removed from its configuration, and the leader drops a removed
// node's connections, so the answer to its own removal may never arrive.
func (c *Cluster) removedSelf() bool {
	return c.fsm.isDenied(c.id) || (c.raft.State() == raft.Shutdown && c.Err() == nil)
}

// Leader returns the leader's ID and address as this node knows them
// (empty if none).
func (c *Cluster) Leader() (id, addr string) {
	a, i := c.raft.LeaderWithID()
	return string(i), string(a)
}

// Status is a node's view of the cluster.
type Status struct {
	ID           string
	State        string // Leader, Follower, Candidate, Shutdown
	Role         Role
	LeaderID     string
	LeaderAddr   string
	CommitIndex  uint64
	AppliedIndex uint64
	Members      []member // from the replicated state
	Voters       []string // from the Raft configuration
	Nonvoters    []string
}

// Status reports this node's view of the cluster.
func (c *Cluster) Status() (Status, error) {
	s := Status{ID: c.id, State: c.raft.State().String(), Role: c.creds.role,
		CommitIndex: c.raft.CommitIndex(), AppliedIndex: c.fsm.applied.Load()}
	s.LeaderID, s.LeaderAddr = c.Leader()
	if err := c.View(func(tx *bbolt.Tx) error {
		var err error
		s.Members, err = readMembers(tx)
		return err
	}); err != nil {
		return s, err
	}
	f := c.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return s, err
	}
	for _, srv := range f.Configuration().Servers {
		if srv.Suffrage == raft.Voter {
			s.Voters = append(s.Voters, string(srv.ID))
		} else {
			s.Nonvoters = append(s.Nonvoters, string(srv.ID))
		}
	}
	return s, nil
}
