package log

import (
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"strings"

	"github.com/inkan-pki/inkan/audit"
	"github.com/inkan-pki/inkan/cluster"
	"go.etcd.io/bbolt"
)

// Record is what a describer says about one change an applied command made: one
// Record becomes one leaf. It is audit's own shape, so that packages above cluster
// (ca) describe their commands without importing audit; node adapts them
// (their handlers' Describe gives a leaf's type, actor, serial and data).
type Record struct {
	Type   string   // the leaf type, e.g. "cert.issued"
	Actor  string   // OperatorActor(cert), "enrollment" or ActorSystem, from the command's body
	Serial *big.Int // the certificate the change is about, or nil
	// Data is the change's own data, encoded as deterministic CBOR: identifiers,
	// codes and hashes only (SHA-256 of certificates, keyed hashes of personal
	// data), never personal data in clear.
	Data any
}

// A Describer describes an applied command for the log: it is given the entry and
// the handler's result, and returns the changes it made (none is allowed: a command
// that changed nothing worth recording). It must be a pure function of its inputs,
// like the handler: every replica must build the same leaves. An error stops the
// node (the change is then not committed on this replica).
type Describer func(e cluster.Entry, result []byte) ([]Record, error)

// Command types of this package.
const (
	// cmdCheckpoint stores a checkpoint signed by the leader (Service.Handlers).
	cmdCheckpoint = "audit.checkpoint"
	// cmdKey records the audit public key, once, in the replicated state; every
	// checkpoint is checked against it.
	cmdKey = "audit.key"
)

// DefaultKeyName is the replicated key (cluster.KeyVault) that signs checkpoints.
const DefaultKeyName = "audit-key"

// Unaudited lists the command types that append no leaf, whatever the
// configuration: a checkpoint is a statement about the log, not a change to the
// cluster's state (and an idle log would otherwise never be idle). Every other
// applied command must have a describer or be listed in Config.Unaudited, or the
// node stops: a change that cannot be audited does not happen.
var unaudited = []string{cmdCheckpoint}

// Config configures the audit component of a node.
type Config struct {
	// Origin is the log's name: the cluster's name, the first line of every
	// checkpoint.
	Origin string
	// KeyName is the replicated key that signs checkpoints (DefaultKeyName if
	// empty). List it in cluster.Config.ReplicatedKeys.
	KeyName string
	// Describers describe the applied commands by type. Commands of cluster's own
	// ("cluster.*": membership, join tokens, replicated key names) and "audit.key" are
	// described by this package unless given here.
	Describers map[string]Describer
	// Unaudited names command types that are applied without a leaf. Keep it short
	// and say why for each one (e.g. "enroll.nonce": it only consumes a nonce, the
	// issuance it leads to is audited). Anything neither described nor listed stops
	// the node when applied.
	Unaudited []string
	Logger    *slog.Logger // default slog.Default()
}

// Service is the audit log of a running node: the in-transaction hook that appends
// the leaves, the handlers of "audit.checkpoint" and "audit.key", the leader's checkpointer,
// and the audit API. Build it with New and hand its Hook and Handlers to
// cluster.Config; call Start once the cluster is open.
type Service struct {
	origin    string
	keyName   string
	describe  map[string]Describer
	unaudited map[string]bool
	log       *slog.Logger
	appender  *tree // a tree for appending: appendLeaves needs no key
}

// New checks cfg and returns the component.
func New(cfg Config) (*Service, error) {
	if err := audit.CheckOrigin(cfg.Origin); err != nil {
		return nil, err
	}
	s := &Service{
		origin:    cfg.Origin,
		keyName:   cfg.KeyName,
		describe:  map[string]Describer{cmdKey: describeKey},
		unaudited: map[string]bool{},
		log:       cfg.Logger,
		appender:  &tree{origin: cfg.Origin},
	}
	if s.keyName == "" {
		s.keyName = DefaultKeyName
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	for _, t := range unaudited {
		s.unaudited[t] = true
	}
	for _, t := range cfg.Unaudited {
		if _, ok := cfg.Describers[t]; ok {
			return nil, fmt.Errorf("audit: command type %q is both described and listed as not audited", t)
		}
		s.unaudited[t] = true
	}
	for t, d := range cfg.Describers {
		if d == nil {
			return nil, fmt.Errorf("audit: command type %q: nil describer", t)
		}
		if s.unaudited[t] {
			return nil, fmt.Errorf("audit: command type %q is not audited and cannot be described", t)
		}
		s.describe[t] = d
	}
	return s, nil
}

// errNotAudited stops the node when a command that has no describer and is not
// listed as unaudited is applied.
var errNotAudited = errors.New("audit: command type has no describer and is not listed as unaudited")

// Hook is the cluster.Hook that appends the leaves of every applied command in the
// command's own transaction (cluster.Config.Hooks). Each leaf records the entry's
// leader-stamped time and Raft index and the describer's type, actor, serial and
// data. Leaves about a certificate are also indexed by serial (Service.Serial).
func (s *Service) Hook() cluster.Hook { return s.hook }

func (s *Service) hook(tx *bbolt.Tx, e cluster.Entry, result []byte) error {
	t := e.Command.Type
	if s.unaudited[t] {
		return nil
	}
	d := s.describe[t]
	if d == nil && strings.HasPrefix(t, "cluster.") {
		d = describeCluster
	}
	if d == nil {
		return fmt.Errorf("audit: %s: %w", t, errNotAudited)
	}
	recs, err := d(e, result)
	if err != nil {
		return fmt.Errorf("audit: describe %s: %w", t, err)
	}
	if len(recs) == 0 {
		return nil
	}
	leaves := make([]audit.Leaf, len(recs))
	for i, r := range recs {
		l, err := audit.NewLeaf(audit.Meta{RaftIndex: e.Index, Time: e.Time, Actor: r.Actor}, r.Type, r.Serial, r.Data)
		if err != nil {
			return fmt.Errorf("audit: %s: %w", t, err)
		}
		leaves[i] = l
	}
	first, err := s.appender.appendLeaves(tx, leaves...)
	if err != nil {
		return err
	}
	return indexSerials(tx, first, leaves)
}

// describeCluster records cluster's own commands (membership changes, join
// tokens, replicated key names) by the SHA-256 of the command's bytes: they carry
// no personal data, and the hash names the exact change. Grants, joins and key
// transfers also name the node, its role and its keys' fingerprints, and a join
// or a transfer adds one leaf per replicated key wrapped for the node: who
// received which key, and for which transport key.
func describeCluster(e cluster.Entry, result []byte) ([]Record, error) {
	h := sha256.Sum256(e.Raw)
	m, ok, err := cluster.DescribeMembership(e, result)
	if err != nil {
		return nil, err
	}
	if !ok {
		return []Record{{Type: e.Command.Type, Actor: audit.ActorSystem, Data: map[string]any{"command_sha256": h[:]}}}, nil
	}
	data := map[string]any{"command_sha256": h[:], "node": m.Node}
	if m.Role != "" {
		data["role"] = string(m.Role)
	}
	if !m.NodeKey.IsZero() {
		data["node_key"] = m.NodeKey.String()
	}
	if !m.TransportKey.IsZero() {
		data["transport_key"] = m.TransportKey.String()
	}
	if len(m.TokenID) > 0 {
		data["token_id"] = fmt.Sprintf("%x", m.TokenID)
	}
	if m.Request != "" {
		data["request"] = m.Request
	}
	var typ string
	switch m.Kind {
	case "grant":
		typ = typeJoinGranted
	case "join":
		typ = typeMemberJoined
	case "bootstrap":
		typ = typeMemberBootstrap
	case "transport":
		typ = typeTransportApproved
	case "remove":
		typ = typeMemberRemoved
	}
	var out []Record
	if typ != "" {
		out = append(out, Record{Type: typ, Actor: audit.ActorSystem, Data: data})
	}
	via := "join"
	if m.Kind == "transfer" {
		via = "share"
	}
	for _, k := range m.Keys {
		out = append(out, Record{Type: audit.TypeKeyTransferred, Actor: audit.ActorSystem, Data: map[string]any{
			"command_sha256": h[:], "key": k, "node": m.Node, "transport_key": m.TransportKey.String(), "via": via}})
	}
	return out, nil
}

// Leaf types of cluster's membership (docs/audit.md); the key transfers are
// audit.TypeKeyTransferred, which the verifier reads.
const (
	typeJoinGranted       = "cluster.join.granted"       // a join token granted to a node's keys
	typeMemberJoined      = "cluster.member.joined"      // a node joined by its grant
	typeMemberBootstrap   = "cluster.member.bootstrap"   // the first node, with its keys
	typeTransportApproved = "cluster.transport.approved" // a voter's transport key approved after its join
	typeMemberRemoved     = "cluster.member.remove"      // a node removed
)

// describeKey records the audit key being set, by its fingerprint.
func describeKey(e cluster.Entry, _ []byte) ([]Record, error) {
	pub, err := decodeKeyCommand(e.Command)
	if err != nil {
		return nil, err
	}
	return []Record{{Type: cmdKey, Actor: audit.ActorSystem, Data: map[string]any{"key": audit.KeyFingerprint(pub)}}}, nil
}

// bucketSerials indexes the leaves about a certificate: key = the serial as
// leaves hold it (lower-case hex), 0x00, the leaf index (8 bytes, big endian);
// empty value. The hook writes it only for leaves that name a serial, so most
// appends do not touch it.
var bucketSerials = []byte("audit.serials")

func indexSerials(tx *bbolt.Tx, first uint64, leaves []audit.Leaf) error {
	var b *bbolt.Bucket
	for i, l := range leaves {
		if l.Serial == "" {
			continue
		}
		if b == nil {
			var err error
			if b, err = tx.CreateBucketIfNotExists(bucketSerials); err != nil {
				return fmt.Errorf("audit: serial index: %w", err)
			}
		}
		if err := b.Put(serialKey(l.Serial, first+uint64(i)), nil); err != nil {
			return fmt.Errorf("audit: serial index: %w", err)
		}
	}
	return nil
}

func serialKey(serial string, index uint64) []byte {
	k := append([]byte(serial), 0)
	return append(k, u64(index)...)
}

// serialLeaves returns the indices of the leaves about serial (in the leaves' hex form).
func serialLeaves(tx *bbolt.Tx, serial string, max int) ([]uint64, error) {
	b := tx.Bucket(bucketSerials)
	if b == nil {
		return nil, nil
	}
	prefix := append([]byte(serial), 0)
	var out []uint64
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && len(k) == len(prefix)+8 && string(k[:len(prefix)]) == string(prefix); k, _ = c.Next() {
		if len(out) == max {
			break
		}
		out = append(out, beU64(k[len(prefix):]))
	}
	return out, nil
}

// keyPublic is the public half of a signer, checked to be an audit key.
func keyPublic(s crypto.Signer) (crypto.PublicKey, error) {
	pub := s.Public()
	if err := audit.CheckKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}
