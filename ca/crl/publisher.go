package crl

import (
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"sync"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/crlreason"
)

// CA is one CA certificate whose CRLs the publisher keeps.
type CA struct {
	ID     string
	Cert   *x509.Certificate
	Shards int
	// URL gives a shard's distribution point URL (what its certificates' CRLDP
	// says), and for Delta where the delta CRLs are (the full CRL's freshest
	// CRL extension).
	URL func(shard int) string
}

// source is the CA state as the publisher reads it (ca.Authority.PublishCRLs gives
// the authority's; ca imports this package, so this one cannot read ca's state).
type source interface {
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
	// full CRL lists every revocation, so it is large and archived forever. Between
	// two, a delta CRL of the last full CRL follows every change within Delay,
	// as the shards do.
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
	src source
	cfg PublisherConfig
	log *slog.Logger

	mu        sync.Mutex
	dirty     map[shardRef]time.Time // first pending change
	wasLeader bool

	// bases holds, per CA, the entries of the last full CRL this node
	// published or read, which its deltas are made against.
	bases map[string]*baseCRL
}

// baseCRL is a full CRL's entries, by serial.
type baseCRL struct {
	number  uint64
	entries map[string]baseEntry
}

type baseEntry struct {
	at     int64 // Unix seconds, as the CRL states it
	reason crlreason.Reason
}

type shardRef struct {
	ca    string
	shard int
}

// NewPublisher returns a publisher for the node's cluster.
func NewPublisher(c *cluster.Cluster, src source, cfg PublisherConfig) *Publisher {
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
	return &Publisher{c: c, src: src, cfg: cfg, log: cfg.Logger, dirty: map[shardRef]time.Time{}, bases: map[string]*baseCRL{}}
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
		mark(shardRef{ca.ID, Delta})
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
		// The full CRL first, then its delta (made against it), then the shards.
		order := make([]int, 0, 2+ca.Shards)
		order = append(order, Full, Delta)
		for s := range ca.Shards {
			order = append(order, s)
		}
		fullPublished := false
		for _, shard := range order {
			ref := shardRef{ca.ID, shard}
			var latest Meta
			var have bool
			var number uint64
			if err := p.c.View(func(tx *bbolt.Tx) error {
				var err error
				latest, have, err = Read(tx).Latest(ca.ID, shard)
				number = nextNumber(tx, ca.ID, shard)
				return err
			}); err != nil {
				return err
			}
			p.mu.Lock()
			since, pending := p.dirty[ref]
			p.mu.Unlock()
			stale := !have || now.After(latest.ThisUpdate.Add(p.cfg.Validity/2))
			changed := pending && now.Sub(since) >= p.cfg.Delay
			switch shard {
			case Full:
				if changed && have && now.Sub(latest.ThisUpdate) < p.cfg.FullEvery {
					changed = false // the full CRL follows changes at most every FullEvery; its delta at once
				}
			case Delta:
				// A new full CRL gets its delta at once (empty), so that the
				// newest delta always completes the newest full CRL.
				changed = changed || fullPublished
			}
			if !stale && !changed && !becameLeader {
				continue
			}
			if err := p.publish(ctx, ca, shard, number, now); err != nil {
				return fmt.Errorf("CA %s shard %d: %w", ca.ID, shard, err)
			}
			fullPublished = fullPublished || shard == Full
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
		if shard < 0 || Shard(e.Serial, ca.Shards) == shard {
			entries = append(entries, e)
		}
		return nil
	})
	if err != nil {
		return err
	}
	spec := buildSpec{Shard: shard, Number: new(big.Int).SetUint64(number), ThisUpdate: now.UTC().Truncate(time.Second)}
	spec.NextUpdate = spec.ThisUpdate.Add(p.cfg.Validity)
	switch shard {
	case Full:
		spec.Freshest = ca.URL(Delta)
	case Delta:
		base, err := p.base(ca.ID)
		if err != nil {
			return err
		}
		if base == nil {
			return nil // no full CRL yet: it comes first, then its delta
		}
		spec.Base = new(big.Int).SetUint64(base.number)
		entries = base.delta(entries)
	default:
		spec.URL = ca.URL(shard)
	}
	key, err := p.src.Signer(ctx, ca.ID)
	if err != nil {
		return err
	}
	der, err := build(ca.Cert, key, spec, ca.Shards, entries)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(der)
	parts := (len(der) + partSize - 1) / partSize
	for i := range parts {
		chunk := der[i*partSize : min(len(der), (i+1)*partSize)]
		cmd, err := cluster.NewCommand(commandPart, commandVersion(shard), partBody{CA: ca.ID, Shard: shard, Number: number, Part: i, Data: chunk})
		if err != nil {
			return err
		}
		if _, err := p.c.Submit(ctx, cmd); err != nil {
			return fmt.Errorf("part %d of %d: %w", i, parts, err)
		}
	}
	cmd, err := cluster.NewCommand(commandPublish, publishVersion, Meta{
		CA: ca.ID, Shard: shard, Number: number, ThisUpdate: spec.ThisUpdate, NextUpdate: spec.NextUpdate,
		SHA256: sum[:], Parts: parts, Entries: len(entries),
	})
	if err != nil {
		return err
	}
	if _, err := p.c.Submit(ctx, cmd); err != nil {
		return err
	}
	if shard == Full {
		p.mu.Lock()
		p.bases[ca.ID] = newBase(number, entries)
		p.mu.Unlock()
	}
	p.log.Info("crl: published", "ca", ca.ID, "shard", shard, "number", number, "entries", len(entries), "bytes", len(der))
	return nil
}

func newBase(number uint64, entries []Entry) *baseCRL {
	b := &baseCRL{number: number, entries: make(map[string]baseEntry, len(entries))}
	for _, e := range entries {
		b.entries[string(e.Serial.Bytes())] = baseEntry{at: e.RevokedAt.Unix(), reason: e.Reason}
	}
	return b
}

// base returns the entries of the CA's newest full CRL, from memory if this
// node published it, else read from the state; nil if there is none.
func (p *Publisher) base(caID string) (*baseCRL, error) {
	var m Meta
	var have bool
	var der []byte
	p.mu.Lock()
	cached := p.bases[caID]
	p.mu.Unlock()
	err := p.c.View(func(tx *bbolt.Tx) error {
		var err error
		if m, have, err = Read(tx).Latest(caID, Full); err != nil || !have {
			return err
		}
		if cached != nil && cached.number == m.Number {
			return nil
		}
		der, err = Read(tx).DER(m)
		return err
	})
	switch {
	case err != nil:
		return nil, err
	case !have:
		return nil, nil
	case der == nil:
		return cached, nil
	}
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("crl: full CRL %d of %s: %w", m.Number, caID, err)
	}
	entries := make([]Entry, len(rl.RevokedCertificateEntries))
	for i, e := range rl.RevokedCertificateEntries {
		entries[i] = Entry{Serial: e.SerialNumber, RevokedAt: e.RevocationTime, Reason: crlreason.Reason(e.ReasonCode)}
	}
	b := newBase(m.Number, entries)
	p.mu.Lock()
	p.bases[caID] = b
	p.mu.Unlock()
	return b, nil
}

// delta lists what a delta CRL says against the base, given every entry
// revoked now: those the base lacks or states otherwise (a hold that became
// a revocation), and removeFromCRL for those the base lists that are no
// longer revoked (a hold released).
func (b *baseCRL) delta(now []Entry) []Entry {
	var out []Entry
	inBase := 0
	for _, e := range now {
		was, ok := b.entries[string(e.Serial.Bytes())]
		if ok {
			inBase++
			if was.at == e.RevokedAt.Unix() && was.reason == e.Reason {
				continue
			}
		}
		out = append(out, e)
	}
	if inBase == len(b.entries) { // nothing the base lists was released
		slices.SortFunc(out, func(x, y Entry) int { return x.Serial.Cmp(y.Serial) })
		return out
	}
	revoked := make(map[string]bool, len(now))
	for _, e := range now {
		revoked[string(e.Serial.Bytes())] = true
	}
	for k, was := range b.entries {
		if !revoked[k] {
			out = append(out, Entry{Serial: new(big.Int).SetBytes([]byte(k)), RevokedAt: time.Unix(was.at, 0).UTC(), Reason: reasonRemoveFromCRL})
		}
	}
	slices.SortFunc(out, func(x, y Entry) int { return x.Serial.Cmp(y.Serial) })
	return out
}
