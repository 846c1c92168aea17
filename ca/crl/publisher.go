package crl

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// CA is one CA certificate whose CRLs the publisher keeps.
type CA struct {
	ID     string
	Cert   *x509.Certificate
	Shards int
	// URL gives a shard's distribution point URL (what its certificates' CRLDP says).
	URL func(shard int) string
}

// Source is the CA state as the publisher reads it (node adapts ca's state to it).
type Source interface {
	// CAs lists every CA certificate with certificates that may still need a CRL.
	CAs(ctx context.Context) ([]CA, error)
	// Revoked calls fn for every revoked (or held) certificate of the CA.
	Revoked(ctx context.Context, caID string, fn func(Entry) error) error
	// Signer returns the CA's key; it is called on the leader only.
	Signer(ctx context.Context, caID string) (crypto.Signer, error)
}

// Change says certificates of a CA changed status.
type Change struct {
	CA      string
	Serials []*big.Int
	Resync  bool // changes were missed: rebuild everything
}

// PublisherConfig tunes a Publisher; zero values take the defaults in parentheses.
type PublisherConfig struct {
	// Validity is nextUpdate - thisUpdate (24h). A CRL is rebuilt once half of it
	// has passed, so a published CRL always has at least half its life left.
	Validity time.Duration
	// Delay batches changes: a shard is rebuilt this long after its first pending
	// change (1s), so a burst of revocations makes one CRL, well within 5 s.
	Delay time.Duration
	// FullEvery is the least time between two full CRLs of a CA for changes (1h); the
	// full CRL lists every revocation, so it is large and kept forever.
	FullEvery time.Duration
	// Tick is how often the publisher looks at its work (250ms).
	Tick   time.Duration
	Now    func() time.Time
	Logger *slog.Logger
}

// Publisher keeps every CA's CRLs current while its node leads: shard CRLs within
// seconds of a revocation, every CRL well before its nextUpdate. It signs with the CA
// key on the leader and commits what it signs through Raft, so every node serves the
// same CRLs; a new leader rebuilds whatever it cannot be sure is current.
type Publisher struct {
	c   *cluster.Cluster
	src Source
	cfg PublisherConfig
	log *slog.Logger

	mu        sync.Mutex
	dirty     map[shardRef]time.Time // first pending change
	wasLeader bool
}

type shardRef struct {
	ca    string
	shard int
}

// NewPublisher returns a publisher for the node's cluster.
func NewPublisher(c *cluster.Cluster, src Source, cfg PublisherConfig) *Publisher {
	if cfg.Validity == 0 {
		cfg.Validity = 24 * time.Hour
	}
	if cfg.Delay == 0 {
		cfg.Delay = time.Second
	}
	if cfg.FullEvery == 0 {
		cfg.FullEvery = time.Hour
	}
	if cfg.Tick == 0 {
		cfg.Tick = 250 * time.Millisecond
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Publisher{c: c, src: src, cfg: cfg, log: cfg.Logger, dirty: map[shardRef]time.Time{}}
}

// Run publishes until ctx ends.
func (p *Publisher) Run(ctx context.Context, changes <-chan Change) error {
	t := time.NewTicker(p.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ch, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			p.note(ctx, ch)
		case <-t.C:
			if err := p.tick(ctx); err != nil && ctx.Err() == nil {
				p.log.Error("crl: publish", "err", err)
			}
		}
	}
}

func (p *Publisher) note(ctx context.Context, ch Change) {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.cfg.Now()
	mark := func(r shardRef) {
		if _, ok := p.dirty[r]; !ok {
			p.dirty[r] = now
		}
	}
	if ch.Resync {
		p.wasLeader = false // rebuild all at the next tick, as a new leader does
		return
	}
	cas, err := p.src.CAs(ctx)
	if err != nil {
		p.log.Error("crl: list CAs", "err", err)
		return
	}
	for _, ca := range cas {
		if ca.ID != ch.CA {
			continue
		}
		for _, s := range ch.Serials {
			mark(shardRef{ca.ID, Shard(s, ca.Shards)})
		}
		mark(shardRef{ca.ID, Full})
	}
}

func (p *Publisher) tick(ctx context.Context) error {
	st, err := p.c.Status()
	if err != nil {
		return err
	}
	leading := st.LeaderID == p.c.ID()
	p.mu.Lock()
	// A node that has not completed a pass as leader rebuilds everything: a change
	// may have been committed under the old leader and never published.
	becameLeader := leading && !p.wasLeader
	if !leading {
		p.wasLeader = false
	}
	p.mu.Unlock()
	if !leading {
		return nil
	}
	cas, err := p.src.CAs(ctx)
	if err != nil {
		return err
	}
	// The state must hold everything committed before we compare against it.
	if err := p.c.Barrier(ctx); err != nil {
		return err
	}
	now := p.cfg.Now()
	for _, ca := range cas {
		for shard := Full; shard < ca.Shards; shard++ {
			ref := shardRef{ca.ID, shard}
			var latest Meta
			var have bool
			if err := p.c.View(func(tx *bbolt.Tx) error {
				var err error
				latest, have, err = Latest(tx, ca.ID, shard)
				return err
			}); err != nil {
				return err
			}
			p.mu.Lock()
			since, pending := p.dirty[ref]
			p.mu.Unlock()
			stale := !have || now.After(latest.ThisUpdate.Add(p.cfg.Validity/2))
			changed := pending && now.Sub(since) >= p.cfg.Delay
			if shard == Full && changed && have && now.Sub(latest.ThisUpdate) < p.cfg.FullEvery {
				changed = false // the full CRL follows changes at most every FullEvery
			}
			if !stale && !changed && !becameLeader {
				continue
			}
			if err := p.publish(ctx, ca, shard, latest.Number+1, now); err != nil {
				return fmt.Errorf("CA %s shard %d: %w", ca.ID, shard, err)
			}
			p.mu.Lock()
			if t, ok := p.dirty[ref]; ok && !t.After(since) {
				delete(p.dirty, ref)
			}
			p.mu.Unlock()
		}
	}
	p.mu.Lock()
	p.wasLeader = true
	p.mu.Unlock()
	return nil
}

// publish builds, signs and commits one CRL.
func (p *Publisher) publish(ctx context.Context, ca CA, shard int, number uint64, now time.Time) error {
	var entries []Entry
	err := p.src.Revoked(ctx, ca.ID, func(e Entry) error {
		if shard == Full || Shard(e.Serial, ca.Shards) == shard {
			entries = append(entries, e)
		}
		return nil
	})
	if err != nil {
		return err
	}
	key, err := p.src.Signer(ctx, ca.ID)
	if err != nil {
		return err
	}
	spec := Spec{Shard: shard, Number: new(big.Int).SetUint64(number), ThisUpdate: now.UTC().Truncate(time.Second)}
	spec.NextUpdate = spec.ThisUpdate.Add(p.cfg.Validity)
	if shard != Full {
		spec.URL = ca.URL(shard)
	}
	der, err := Build(ca.Cert, key, spec, ca.Shards, entries)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(der)
	parts := (len(der) + PartSize - 1) / PartSize
	for i := range parts {
		chunk := der[i*PartSize : min(len(der), (i+1)*PartSize)]
		cmd, err := cluster.NewCommand(TypePart, 1, partBody{CA: ca.ID, Shard: shard, Number: number, Part: i, Data: chunk})
		if err != nil {
			return err
		}
		if _, err := p.c.Submit(ctx, cmd); err != nil {
			return fmt.Errorf("part %d of %d: %w", i, parts, err)
		}
	}
	cmd, err := cluster.NewCommand(TypePublish, 1, Meta{
		CA: ca.ID, Shard: shard, Number: number, ThisUpdate: spec.ThisUpdate, NextUpdate: spec.NextUpdate,
		SHA256: sum[:], Parts: parts, Entries: len(entries),
	})
	if err != nil {
		return err
	}
	if _, err := p.c.Submit(ctx, cmd); err != nil {
		return err
	}
	p.log.Info("crl: published", "ca", ca.ID, "shard", shard, "number", number, "entries", len(entries), "bytes", len(der))
	return nil
}
