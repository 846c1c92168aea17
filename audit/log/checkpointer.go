package log

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/inkan-pki/inkan/audit"
	"github.com/inkan-pki/inkan/cluster"
	"go.etcd.io/bbolt"
)

// bucketMeta holds the audit key recorded by cmdKey (key "pub", PKIX DER).
var (
	bucketMeta = []byte("audit.meta")
	keyPub     = []byte("pub")
)

func beU64(b []byte) uint64 { return binary.BigEndian.Uint64(b) }

// errKeyMismatch refuses a cmdKey naming another key than the one recorded: the
// audit key is set once.
var errKeyMismatch = errors.New("audit: another audit key is recorded")

// errNoKey: no audit key is recorded yet, so no checkpoint can be checked.
var errNoKey = errors.New("audit: no audit key recorded")

type keyCommand struct {
	_   struct{} `cbor:",toarray"`
	Pub []byte   // PKIX DER
}

type checkpointCommand struct {
	_    struct{} `cbor:",toarray"`
	Body []byte
	Sig  []byte
}

func decodeKeyCommand(c cluster.Command) (crypto.PublicKey, error) {
	var k keyCommand
	if err := c.Decode(&k); err != nil {
		return nil, err
	}
	pub, err := x509.ParsePKIXPublicKey(k.Pub)
	if err != nil {
		return nil, err
	}
	if err := audit.CheckKey(pub); err != nil {
		return nil, err
	}
	return pub, nil
}

// storedKey is the recorded audit key, if any.
func storedKey(tx *bbolt.Tx) (crypto.PublicKey, []byte, error) {
	b := tx.Bucket(bucketMeta)
	if b == nil {
		return nil, nil, nil
	}
	der := b.Get(keyPub)
	if der == nil {
		return nil, nil, nil
	}
	pub, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, nil, fmt.Errorf("audit: storage: recorded key: %w", err)
	}
	return pub, bytes.Clone(der), nil
}

// logIn is the log with the recorded key, for reading and for checking
// checkpoints.
func (s *Service) logIn(tx *bbolt.Tx) (*tree, error) {
	pub, _, err := storedKey(tx)
	if err != nil {
		return nil, err
	}
	if pub == nil {
		return nil, errNoKey
	}
	return newLog(s.origin, pub)
}

// Handlers are the handlers of "audit.key" and "audit.checkpoint" (cluster.Config.Handlers).
func (s *Service) Handlers() []cluster.Handler {
	return []cluster.Handler{
		cluster.NewHandler(cmdKey, []uint{1}, [][]byte{bucketMeta}, applyKey),
		cluster.NewHandler(cmdCheckpoint, []uint{1}, [][]byte{bucketSerials}, s.applyCheckpoint),
	}
}

func applyKey(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	pub, err := decodeKeyCommand(e.Command)
	if err != nil {
		return nil, cluster.Refuse(fmt.Errorf("audit key: %w", err))
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, cluster.Refuse(err)
	}
	have := tx.Bucket(bucketMeta).Get(keyPub)
	if have != nil {
		if bytes.Equal(have, der) {
			return nil, cluster.Refuse(errKeyRecorded) // nothing changes: no leaf either
		}
		return nil, cluster.Refuse(errKeyMismatch)
	}
	return nil, tx.Bucket(bucketMeta).Put(keyPub, der)
}

// errKeyRecorded refuses a second cmdKey of the same key, so that it writes no
// second leaf; the submitter treats it as success.
var errKeyRecorded = cluster.NewRefusal("audit.key-recorded", "audit: this audit key is recorded already")

// errCheckpointExists refuses a checkpoint of a size that has one
// (errCheckpointOfSize): a cluster.Refusal, so that the leader that submitted
// it knows it by its code, from a request record too.
var errCheckpointExists = cluster.NewRefusal("audit.checkpoint-exists", "audit: checkpoint refused")

func (s *Service) applyCheckpoint(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var cc checkpointCommand
	if err := e.Command.Decode(&cc); err != nil {
		return nil, cluster.Refuse(fmt.Errorf("audit checkpoint: %w", err))
	}
	c, err := audit.ParseCheckpoint(cc.Body, cc.Sig)
	if err != nil {
		return nil, cluster.Refuse(err)
	}
	l, err := s.logIn(tx)
	if errors.Is(err, errNoKey) {
		return nil, cluster.Refuse(err)
	}
	if err != nil {
		return nil, err
	}
	if c.Origin != s.origin {
		return nil, cluster.Refuse(fmt.Errorf("audit checkpoint: origin %q, this log is %q", c.Origin, s.origin))
	}
	size, err := l.Size(tx)
	if err != nil {
		return nil, err
	}
	if c.Size > size {
		return nil, cluster.Refuse(fmt.Errorf("audit checkpoint: size %d, the tree holds %d", c.Size, size))
	}
	if err := c.Verify(l.pub); err != nil {
		return nil, cluster.Refuse(err)
	}
	if err := l.addCheckpoint(tx, c); err != nil {
		if errors.Is(err, errCheckpointOfSize) {
			return nil, cluster.Refuse(fmt.Errorf("%w: %w", errCheckpointExists, err))
		}
		if errors.Is(err, errRootMismatch) || errors.Is(err, audit.ErrBadSignature) {
			return nil, cluster.Refuse(err)
		}
		return nil, err
	}
	return nil, nil
}

// leaderCluster is what the checkpointer needs of the cluster.
type leaderCluster interface {
	Submit(ctx context.Context, cmd cluster.Command) ([]byte, error)
	View(fn func(tx *bbolt.Tx) error) error
	ShareKey(ctx context.Context, name string) error
}

// Start registers the leader's duty of signing checkpoints (cluster.OnLeader):
// while this node leads it checks every tick (100 ms) whether a checkpoint is due
// (checkpointDue), makes it from its own tree, signs it with the audit key from
// vault, and submits it as "audit.checkpoint". The first leader makes the audit key if
// no key is recorded, records its public half ("audit.key") and shares it with the
// other voters (ShareKey); a leader whose key is not the recorded one signs
// nothing and logs why.
func (s *Service) Start(c *cluster.Cluster, vault cluster.KeyVault) {
	c.OnLeader(func(ctx context.Context) { s.lead(ctx, c, vault, 100*time.Millisecond) })
}

func (s *Service) lead(ctx context.Context, c leaderCluster, vault cluster.KeyVault, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	var signer crypto.Signer
	var failing bool
	var logged time.Time
	for {
		var err error
		if signer == nil {
			if signer, err = s.leaderKey(ctx, c, vault); err == nil {
				go s.shareKey(ctx, c)
			}
		}
		if err == nil {
			err = s.checkpointOnce(ctx, c, signer, time.Now())
		}
		// A failure is logged when it starts, then once a minute while it lasts.
		if err != nil && ctx.Err() == nil && (!failing || time.Since(logged) >= time.Minute) {
			s.log.Error("audit: checkpoint", "err", err)
			logged = time.Now()
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// leaderKey returns the audit key this leader signs with, making and recording it
// if the cluster has none.
func (s *Service) leaderKey(ctx context.Context, c leaderCluster, vault cluster.KeyVault) (crypto.Signer, error) {
	var recorded []byte
	if err := c.View(func(tx *bbolt.Tx) error {
		_, der, err := storedKey(tx)
		recorded = der
		return err
	}); err != nil {
		return nil, err
	}
	signer, err := vault.ReplicatedKey(ctx, s.keyName, recorded == nil)
	if err != nil {
		return nil, fmt.Errorf("audit: key %s: %w", s.keyName, err)
	}
	pub, err := keyPublic(signer)
	if err != nil {
		return nil, fmt.Errorf("audit: key %s: %w", s.keyName, err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	if recorded != nil {
		if !bytes.Equal(der, recorded) {
			return nil, fmt.Errorf("audit: key %s in this node's HSM is %s, not the recorded audit key: %w", s.keyName, audit.KeyFingerprint(pub), errKeyMismatch)
		}
		return signer, nil
	}
	cmd, err := cluster.NewCommand(cmdKey, 1, keyCommand{Pub: der})
	if err != nil {
		return nil, err
	}
	if _, err := c.Submit(ctx, cmd); err != nil {
		// A refusal (another leader recorded a key meanwhile) is settled on the
		// next tick, which compares with the recorded key.
		return nil, fmt.Errorf("audit: record key: %w", err)
	}
	return signer, nil
}

// shareKey sends the audit key to every voter that lacks it (ShareKey), once per
// term, retrying until it succeeds: a voter that was down when the key was made, or
// joined through a node whose ReplicatedKeys did not name it, gets it from the next
// leader. Checkpoints go on meanwhile: only a voter without the key is at risk,
// should it lead.
func (s *Service) shareKey(ctx context.Context, c leaderCluster) {
	for {
		err := c.ShareKey(ctx, s.keyName)
		if err == nil || ctx.Err() != nil {
			return
		}
		s.log.Warn("audit: share the audit key with the voters", "key", s.keyName, "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// checkpointOnce signs and submits a checkpoint if one is due at now.
func (s *Service) checkpointOnce(ctx context.Context, c leaderCluster, signer crypto.Signer, now time.Time) error {
	var cp audit.Checkpoint
	due := false
	if err := c.View(func(tx *bbolt.Tx) error {
		l, err := s.logIn(tx)
		if err != nil {
			return err
		}
		latest, ok, err := l.latestCheckpoint(tx)
		if err != nil {
			return err
		}
		size, err := l.Size(tx)
		if err != nil {
			return err
		}
		var last *audit.Checkpoint
		if ok {
			last = &latest
		}
		if !checkpointDue(last, size, now) {
			return nil
		}
		if ok && now.Before(latest.Time) {
			now = latest.Time.Add(time.Millisecond) // a slow clock after a leader change
		}
		due = true
		cp, err = l.newCheckpoint(tx, now)
		return err
	}); err != nil || !due {
		return err
	}
	if err := cp.Sign(signer); err != nil {
		return err
	}
	cmd, err := cluster.NewCommand(cmdCheckpoint, 1, checkpointCommand{Body: cp.Body(), Sig: cp.Signature})
	if err != nil {
		return err
	}
	_, err = c.Submit(ctx, cmd)
	if errors.Is(err, errCheckpointExists) {
		return nil // another leader's, or a retry's: the one of this size stands
	}
	return err
}

// How often the leader signs checkpoints.
const (
	checkpointGrowing = time.Second // at least this often while the tree grows
	checkpointIdle    = time.Hour   // and this often when it does not
)

// checkpointDue reports whether a checkpoint should be signed now, given the newest
// stored one (nil if none) and the tree's current size. The leader calls it on a short
// ticker (say 100 ms), so a growing tree is covered within checkpointGrowing plus one
// tick. A clock behind the last checkpoint's (a new leader with a slow clock) does not
// stop checkpoints of a growing tree.
func checkpointDue(last *audit.Checkpoint, size uint64, now time.Time) bool {
	if last == nil {
		return true
	}
	age := now.Sub(last.Time)
	if size > last.Size {
		return age >= checkpointGrowing || age < 0
	}
	return age >= checkpointIdle
}
