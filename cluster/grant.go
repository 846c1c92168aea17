package cluster

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/bbolt"
)

// Joins are granted to a node's keys. A node about to join makes its keys first
// (PrepareJoin: its TLS key and its standing transport key, in its HSM) and
// shows their fingerprints; operators approve a grant naming the node ID, both
// fingerprints and the role (the admin API holds it to the rules of dual
// control); the grant records a one-time token bound to exactly that
// (GrantJoin). At the join the leader admits only the node that presents those
// keys — the CSR proves the node key, and the replicated keys are wrapped for the
// approved transport key alone, whose private half never leaves the joiner's HSM.
// The member's fingerprints stay in the state (cluster.member.keys), and every
// later transfer to it (ShareKey) is wrapped for its approved transport key, and
// recorded, before it happens. The token's secret is chosen by whoever asks for
// the grant (NewJoinToken) and only its SHA-256 ever reaches the state, so the
// approvers, who read the grant, never see it.

// bucketMemberKeys: node ID → memberKeys, for members that joined by a grant (or
// bootstrapped) and voters whose transport key was approved later.
var bucketMemberKeys = []byte("cluster.member.keys")

const (
	cmdKeyTransfer     = "cluster.key.transfer"     // a replicated key sent to a voter (ShareKey)
	cmdMemberTransport = "cluster.member.transport" // a voter's transport key approved after its join
)

type (
	memberKeys struct {
		_         struct{} `cbor:",toarray"`
		NodeKey   []byte   // fingerprint of the node's TLS key (empty if approved after the join)
		Transport []byte   // fingerprint of its standing transport key
		Request   string   // the approved request, if any
		Approved  int64    // entry time
	}
	keyTransfer struct {
		_         struct{} `cbor:",toarray"`
		Key       string
		Node      string
		Transport []byte
	}
	memberTransport struct {
		_         struct{} `cbor:",toarray"`
		Node      string
		Transport []byte
		Request   string
	}
)

func putMemberKeys(tx *bbolt.Tx, node string, k memberKeys) error {
	v, err := encMode.Marshal(k)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketMemberKeys).Put([]byte(node), v)
}

func readMemberKeys(tx *bbolt.Tx, node string) (memberKeys, bool, error) {
	v := tx.Bucket(bucketMemberKeys).Get([]byte(node))
	if v == nil {
		return memberKeys{}, false, nil
	}
	var k memberKeys
	if err := decMode.Unmarshal(v, &k); err != nil {
		return memberKeys{}, false, fmt.Errorf("cluster: keys of member %s: %w", node, err)
	}
	return k, true, nil
}

// applyKeyTransfer records a replicated key about to be wrapped for a voter: it
// refuses unless the node is a voter and the transport key is the one approved
// for it.
func applyKeyTransfer(tx *bbolt.Tx, e Entry) ([]byte, error) {
	var c keyTransfer
	if err := e.Command.Decode(&c); err != nil {
		return nil, Refuse(err)
	}
	if c.Key == "" || len(c.Key) > 128 || len(c.Transport) != sha256.Size {
		return nil, Refuse(errors.New("malformed key transfer"))
	}
	m, ok := readMember(tx, c.Node)
	if !ok || m.Role != Voter {
		return nil, Refuse(fmt.Errorf("%w: %s is not a voter of the cluster", errTransportNotApproved, c.Node))
	}
	k, ok, err := readMemberKeys(tx, c.Node)
	if err != nil {
		return nil, err
	}
	if !ok || len(k.Transport) != sha256.Size {
		return nil, Refuse(fmt.Errorf("%w: no transport key was approved for %s (it joined before joins were granted to keys: approve the one its status shows)", errTransportNotApproved, c.Node))
	}
	if KeyFingerprint(k.Transport) != KeyFingerprint(c.Transport) {
		return nil, Refuse(fmt.Errorf("%w: %s presents %s, %s was approved", errTransportNotApproved, c.Node,
			KeyFingerprint(c.Transport), KeyFingerprint(k.Transport)))
	}
	return nil, nil
}

// applyMemberTransport records the approved transport key of a voter that joined
// before joins were granted to keys (or whose key was never recorded).
func applyMemberTransport(tx *bbolt.Tx, e Entry) ([]byte, error) {
	var c memberTransport
	if err := e.Command.Decode(&c); err != nil {
		return nil, Refuse(err)
	}
	if len(c.Transport) != sha256.Size || len(c.Request) > 64 {
		return nil, Refuse(errors.New("malformed transport key approval"))
	}
	m, ok := readMember(tx, c.Node)
	if !ok || m.Role != Voter {
		return nil, Refuse(fmt.Errorf("%w: %s is not a voter of the cluster", errTransportNotApproved, c.Node))
	}
	k, _, err := readMemberKeys(tx, c.Node)
	if err != nil {
		return nil, err
	}
	k.Transport, k.Request, k.Approved = c.Transport, c.Request, e.Time.UnixNano()
	return nil, putMemberKeys(tx, c.Node, k)
}

// JoinKeys are what operators approve of a node about to join: its ID and the
// fingerprints of its TLS key and its transport key.
type JoinKeys struct {
	Node         string
	NodeKey      KeyFingerprint
	TransportKey KeyFingerprint
}

// PrepareJoin makes, in the vault, the keys a node joins with (its TLS key and
// its standing transport key; both are kept, and made only once), fixes its node
// ID in dataDir (nodeID, or a new one if empty, as Open would), and returns what
// the operators approve. It refuses a data dir that holds a cluster already.
func PrepareJoin(ctx context.Context, dataDir, nodeID string, vault KeyVault) (JoinKeys, error) {
	if _, err := os.Stat(filepath.Join(dataDir, nodeCertFile)); err == nil {
		return JoinKeys{}, fmt.Errorf("cluster: %s holds a node of a cluster already", dataDir)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return JoinKeys{}, fmt.Errorf("cluster: data_dir: %w", err)
	}
	id, err := loadNodeID(dataDir, nodeID)
	if err != nil {
		return JoinKeys{}, err
	}
	key, err := vault.NodeKey(ctx)
	if err != nil {
		return JoinKeys{}, fmt.Errorf("cluster: node key: %w", err)
	}
	nk, err := fingerprintKey(key.Public())
	if err != nil {
		return JoinKeys{}, err
	}
	tk, err := vault.TransportKey(ctx)
	if err != nil {
		return JoinKeys{}, fmt.Errorf("cluster: transport key: %w", err)
	}
	tf, err := vault.TransportKeyFingerprint(tk)
	if err != nil {
		return JoinKeys{}, fmt.Errorf("cluster: transport key: %w", err)
	}
	return JoinKeys{Node: id, NodeKey: nk, TransportKey: tf}, nil
}

// Bounds of a grant's lifetime (JoinGrant.Check).
const (
	minJoinTTL = time.Minute
	maxJoinTTL = 7 * 24 * time.Hour
)

// JoinGrant is a join token granted to one node's keys.
type JoinGrant struct {
	// TokenID and SecretHash come from NewJoinToken, run by whoever asked
	// for the grant: the state keeps the hash only.
	TokenID    []byte
	SecretHash []byte
	Role       Role
	Keys       JoinKeys
	TTL        time.Duration // minJoinTTL..maxJoinTTL, from the grant's commit
	Request    string        // the approved request that grants it, if any (for the audit)
}

// Check checks a grant's shape, naming the field at fault.
func (g JoinGrant) Check() error {
	var errs []error
	if len(g.TokenID) != 8 {
		errs = append(errs, errors.New("token_id: want 8 bytes"))
	}
	if len(g.SecretHash) != sha256.Size {
		errs = append(errs, errors.New("secret_sha256: want 32 bytes"))
	}
	if !g.Role.valid() {
		errs = append(errs, fmt.Errorf("role %q: want voter or nonvoter", g.Role))
	}
	if !ValidNodeID(g.Keys.Node) {
		errs = append(errs, fmt.Errorf("node %q: want 1-64 of a-z, 0-9, '-'", g.Keys.Node))
	}
	if g.Keys.NodeKey.IsZero() {
		errs = append(errs, errors.New("node_key: required"))
	}
	if g.Keys.TransportKey.IsZero() {
		errs = append(errs, errors.New("transport_key: required"))
	}
	if g.TTL < minJoinTTL || g.TTL > maxJoinTTL {
		errs = append(errs, fmt.Errorf("ttl %s: want %s..%s", g.TTL, minJoinTTL, maxJoinTTL))
	}
	return errors.Join(errs...)
}

// NewJoinToken makes a join token for the cluster whose CA has caFingerprint
// (CAFingerprint): the token to hand to the new node, and its ID and the SHA-256
// of its secret for a JoinGrant. The token means nothing until the grant is
// recorded.
func NewJoinToken(caFingerprint []byte) (token string, id, secretHash []byte, err error) {
	if len(caFingerprint) != sha256.Size {
		return "", nil, nil, errors.New("cluster: join token: CA fingerprint: want 32 bytes")
	}
	t := joinToken{id: make([]byte, 8), secret: make([]byte, 32), fingerprint: caFingerprint}
	if _, err := rand.Read(t.id); err != nil {
		return "", nil, nil, err
	}
	if _, err := rand.Read(t.secret); err != nil {
		return "", nil, nil, err
	}
	h := sha256.Sum256(t.secret)
	return t.String(), t.id, h[:], nil
}

// CAFingerprint is the SHA-256 of the cluster CA's SubjectPublicKeyInfo: the
// last part of every join token, by which a joiner authenticates the cluster.
func (c *Cluster) CAFingerprint() []byte { return caFingerprint(c.creds.ca) }

// GrantJoin records a join token granted to g.Keys, for role, valid for g.TTL.
// The caller decides who may grant (the admin API: the rules of dual control).
func (c *Cluster) GrantJoin(ctx context.Context, g JoinGrant) error {
	if err := g.Check(); err != nil {
		return fmt.Errorf("cluster: join grant: %w", err)
	}
	cmd, err := NewCommand(cmdTokenCreate, 2, tokenGrant{ID: g.TokenID, Hash: g.SecretHash, TTL: int64(g.TTL), Role: string(g.Role),
		Node: g.Keys.Node, NodeKey: g.Keys.NodeKey[:], Transport: g.Keys.TransportKey[:], Request: g.Request})
	if err != nil {
		return err
	}
	if _, err := c.submit(ctx, cmd); err != nil {
		return fmt.Errorf("cluster: join grant: %w", err)
	}
	return nil
}

// ApproveTransportKey records fp as the transport key of voter node: for a voter
// that joined before joins were granted to keys, so that replicated keys made
// later can reach it (ShareKey sends them to approved transport keys only). The
// caller decides who may (the admin API: the rules of dual control).
func (c *Cluster) ApproveTransportKey(ctx context.Context, node string, fp KeyFingerprint, request string) error {
	if fp.IsZero() {
		return fmt.Errorf("cluster: approve transport key: %w", errFingerprint)
	}
	cmd, err := NewCommand(cmdMemberTransport, 1, memberTransport{Node: node, Transport: fp[:], Request: request})
	if err != nil {
		return err
	}
	if _, err := c.submit(ctx, cmd); err != nil {
		return fmt.Errorf("cluster: approve transport key of %s: %w", node, err)
	}
	return nil
}

// Membership is what an applied membership command changed, for the audit log:
// the node, its role and keys, and the replicated keys wrapped for it.
type Membership struct {
	Kind         string // "grant", "join", "bootstrap", "transport", "transfer" or "remove"
	Node         string
	Role         Role
	NodeKey      KeyFingerprint // zero if not recorded
	TransportKey KeyFingerprint // zero if not recorded
	TokenID      []byte
	Request      string
	Keys         []string // the replicated keys wrapped for TransportKey
}

// DescribeMembership decodes an applied command of cluster's own membership
// (join tokens granted, members joined, bootstrapped, removed, transport keys
// approved, keys transferred); ok is false for other commands.
func DescribeMembership(e Entry, result []byte) (m Membership, ok bool, err error) {
	switch {
	case e.Command.Type == cmdTokenCreate && e.Command.Version == 2:
		var g tokenGrant
		if err := e.Command.Decode(&g); err != nil {
			return m, false, err
		}
		return Membership{Kind: "grant", Node: g.Node, Role: Role(g.Role), NodeKey: KeyFingerprint(g.NodeKey),
			TransportKey: KeyFingerprint(g.Transport), TokenID: g.ID, Request: g.Request}, true, nil
	case e.Command.Type == cmdMemberJoin && e.Command.Version == 2:
		var j memberJoinV2
		if err := e.Command.Decode(&j); err != nil {
			return m, false, err
		}
		return Membership{Kind: "join", Node: j.Node, Role: Role(result), NodeKey: KeyFingerprint(j.NodeKey),
			TransportKey: KeyFingerprint(j.Transport), TokenID: j.Token, Keys: j.Keys}, true, nil
	case e.Command.Type == cmdMemberSelf && e.Command.Version == 2:
		var b memberSelfV2
		if err := e.Command.Decode(&b); err != nil {
			return m, false, err
		}
		return Membership{Kind: "bootstrap", Node: b.Node, Role: Voter, NodeKey: KeyFingerprint(b.NodeKey),
			TransportKey: KeyFingerprint(b.Transport)}, true, nil
	case e.Command.Type == cmdKeyTransfer:
		var k keyTransfer
		if err := e.Command.Decode(&k); err != nil {
			return m, false, err
		}
		return Membership{Kind: "transfer", Node: k.Node, Role: Voter, TransportKey: KeyFingerprint(k.Transport), Keys: []string{k.Key}}, true, nil
	case e.Command.Type == cmdMemberTransport:
		var t memberTransport
		if err := e.Command.Decode(&t); err != nil {
			return m, false, err
		}
		return Membership{Kind: "transport", Node: t.Node, Role: Voter, TransportKey: KeyFingerprint(t.Transport), Request: t.Request}, true, nil
	case e.Command.Type == cmdMemberRemove:
		var r memberRemove
		if err := e.Command.Decode(&r); err != nil {
			return m, false, err
		}
		return Membership{Kind: "remove", Node: r.Node}, true, nil
	}
	return m, false, nil
}
