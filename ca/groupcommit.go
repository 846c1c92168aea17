package ca

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
)

// Group commit. Every certificate waits for two commits in a row (its intent, then
// its issued record), and each Raft entry costs the cluster a round of log and
// state writes whatever it carries. So the leader does not submit one command per
// certificate: the intents (and the issued records) that concurrent issuances want
// committed while a batch is on its way gather into the next batch, one ca.intents
// (ca.issues) command, and at most groupInflight batches of each kind are on their
// way at once. The busier the leader, the more certificates share an entry; a lone
// request is sent at once. Each item of a batch is applied, or refused, on its own
// (putIntent, putIssued refuse before they write); the batch's result says which.
const (
	commandIntents = "ca.intents"
	commandIssues  = "ca.issues"
)

// Bounds of one batch: the cluster caps an entry at 1 MiB of commands
// (cluster.Config.MaxBatchBytes), and other commands share the entry.
const (
	maxBatchItems = 512
	maxBatchBytes = 256 << 10
)

// groupInflight is how many batches of one kind a node has on their way at once.
// One would leave the cluster's pipeline idle while a batch is applied; more than
// two split the waiting requests into smaller entries.
const groupInflight = 2

type (
	// intentsBody is ca.intents at version 2: items of intent version 3.
	intentsBody struct {
		_     struct{} `cbor:",toarray"`
		Items []intentBody
	}
	// intentsBodyV1 is ca.intents at version 1: items of intent version 2.
	intentsBodyV1 struct {
		_     struct{} `cbor:",toarray"`
		Items []intentBodyV2
	}
	// intentsBodyV3 is ca.intents at version 3: items of intent version 3,
	// and for each the Publisher's first responses (empty for none), which
	// the state does not keep: every node hands them on as it applies the
	// entry (ChangeOf(…).Responses).
	intentsBodyV3 struct {
		_         struct{} `cbor:",toarray"`
		Items     []intentBody
		Responses [][]byte
	}
	issuesBody struct {
		_     struct{} `cbor:",toarray"`
		Items []issueBody
	}
	// batchResult is the result of ca.intents and ca.issues: the issuer, the
	// serials of the items applied (in item order) and the items refused.
	batchResult struct {
		_       struct{} `cbor:",toarray"`
		Issuer  string
		Serials [][]byte
		Refused []refusedItem
	}
	// refusedItem is an item's refusal: its cluster.Refusal code ("" if it
	// has none) and message.
	refusedItem struct {
		_     struct{} `cbor:",toarray"`
		Index int
		Code  string
		Msg   string
	}
)

// applyBatch applies the items of a batch, all of one issuer, each on its own:
// put applies one item, refusing (cluster.Refuse) before it writes; any other
// error stops the replica.
func applyBatch(n int, issuerOf func(i int) string, put func(i int) (serial []byte, err error)) ([]byte, error) {
	if n == 0 || n > maxBatchItems {
		return nil, refusef("batch of %d items: want 1-%d", n, maxBatchItems)
	}
	res := batchResult{Issuer: issuerOf(0)}
	for i := 1; i < n; i++ {
		if issuerOf(i) != res.Issuer {
			return nil, refusef("batch: items of more than one issuer")
		}
	}
	for i := range n {
		serial, err := put(i)
		var ref *cluster.RefusedError
		switch {
		case err == nil:
			res.Serials = append(res.Serials, serial)
		case errors.As(err, &ref):
			res.Refused = append(res.Refused, refusedItem{Index: i, Code: cluster.RefusalCode(ref.Err), Msg: ref.Err.Error()})
		default:
			return nil, err
		}
	}
	return encMode.Marshal(res)
}

func applyIntents(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	b, err := decodeIntents(e.Command)
	if err != nil {
		return nil, cluster.Refuse(err)
	}
	if len(b.Items) > 0 && len(b.Items) <= maxBatchItems {
		if err := prunedNonces(tx, e.Time); err != nil {
			return nil, err
		}
	}
	return applyBatch(len(b.Items), func(i int) string { return b.Items[i].Issuer }, func(i int) ([]byte, error) {
		return b.Items[i].Serial, putIntent(tx, e.Time, &b.Items[i])
	})
}

// decodeIntents decodes a batch of intents of any version.
func decodeIntents(c cluster.Command) (intentsBody, error) {
	if c.Version == 3 {
		var v3 intentsBodyV3
		if err := c.Decode(&v3); err != nil {
			return intentsBody{}, err
		}
		if len(v3.Responses) != len(v3.Items) {
			return intentsBody{}, fmt.Errorf("ca: %s v3: %d intents, %d responses", c.Type, len(v3.Items), len(v3.Responses))
		}
		return intentsBody{Items: v3.Items}, nil
	}
	if c.Version == 1 {
		var v1 intentsBodyV1
		if err := c.Decode(&v1); err != nil {
			return intentsBody{}, err
		}
		b := intentsBody{Items: make([]intentBody, len(v1.Items))}
		for i, it := range v1.Items {
			b.Items[i] = fromV2(it)
		}
		return b, nil
	}
	var b intentsBody
	err := c.Decode(&b)
	return b, err
}

// intentsCommand encodes a batch at the lowest version that holds its items
// and, if any item has some, their first responses (version 3).
func intentsCommand(b intentsBody, responses [][]byte) (cluster.Command, error) {
	for _, r := range responses {
		if len(r) > 0 {
			return cluster.NewCommand(commandIntents, 3, intentsBodyV3{Items: b.Items, Responses: responses})
		}
	}
	for _, it := range b.Items {
		if intentVersion(&it) > 2 {
			return cluster.NewCommand(commandIntents, 2, b)
		}
	}
	v1 := intentsBodyV1{Items: make([]intentBodyV2, len(b.Items))}
	for i, it := range b.Items {
		v1.Items[i] = intentV2(it)
	}
	return cluster.NewCommand(commandIntents, 1, v1)
}

// applyIssues records issued certificates. An issued record names no issuer: the
// batch's is the one of its first item's intent, and every item's must match.
func applyIssues(tx *bbolt.Tx, e cluster.Entry) ([]byte, error) {
	var b issuesBody
	if err := e.Command.Decode(&b); err != nil {
		return nil, cluster.Refuse(err)
	}
	issuers := make([]string, len(b.Items))
	for i, it := range b.Items {
		r, err := readCert(tx, it.Serial)
		if err != nil {
			return nil, err
		}
		if r != nil {
			issuers[i] = r.Issuer
		}
	}
	// An item without a record is refused as not pending; it takes the batch's
	// issuer so as not to refuse its batch-mates.
	first := ""
	for _, is := range issuers {
		if is != "" {
			first = is
			break
		}
	}
	return applyBatch(len(b.Items), func(i int) string {
		if issuers[i] == "" {
			return first
		}
		return issuers[i]
	}, func(i int) ([]byte, error) {
		_, err := putIssued(tx, e.Time, &b.Items[i])
		return b.Items[i].Serial, err
	})
}

// refusedIndex returns the refusals of a batch result by item index.
func (r *batchResult) refusedIndex() map[int]refusedItem {
	m := make(map[int]refusedItem, len(r.Refused))
	for _, f := range r.Refused {
		m[f.Index] = f
	}
	return m
}

// groupCommit gathers the items of one kind (intents, or issued records) that
// concurrent issuances on this node want committed, and commits them in batches.
type groupCommit struct {
	a        *Authority
	typ      string
	max      int // batches on their way at once (groupInflight)
	mu       sync.Mutex
	queue    []*groupItem
	inflight int
}

type groupItem struct {
	ctx    context.Context
	issuer string
	body   any    // intentBody or issueBody
	attach []byte // an intent's first responses (Publisher), or nil
	size   int
	done   chan error // buffered: the batch never waits for the requester
}

// commit queues one item and waits until its batch is committed and applied on
// this node: nil if the item was applied, a refusal (cluster.ErrRefused and the
// authority's sentinel) if it was refused, another error if the batch failed (it
// may be committed all the same, as with cluster.Submit).
func (g *groupCommit) commit(ctx context.Context, issuer string, body any, size int) error {
	return g.commitWith(ctx, issuer, body, nil, size)
}

// commitWith is commit for an intent that carries first responses.
func (g *groupCommit) commitWith(ctx context.Context, issuer string, body any, attach []byte, size int) error {
	it := &groupItem{ctx: ctx, issuer: issuer, body: body, attach: attach, size: size + len(attach), done: make(chan error, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, it)
	start := g.inflight < g.max
	if start {
		g.inflight++
	}
	g.mu.Unlock()
	if start {
		go g.run()
	}
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("ca: %s: %w", g.typ, ctx.Err())
	}
}

// run sends batches while items are queued.
func (g *groupCommit) run() {
	for {
		g.mu.Lock()
		batch := g.take()
		if len(batch) == 0 {
			g.inflight--
			g.mu.Unlock()
			return
		}
		g.mu.Unlock()
		g.send(batch)
	}
}

// take removes the next batch from the queue: items of the first live item's
// issuer, in order, within the bounds. Items whose requester gave up are dropped
// (an intent nobody waits for would only dangle). Called with g.mu held.
func (g *groupCommit) take() []*groupItem {
	var batch, rest []*groupItem
	size := 0
	for _, it := range g.queue {
		switch {
		case it.ctx.Err() != nil:
			it.done <- it.ctx.Err()
		case len(batch) == 0 || it.issuer == batch[0].issuer && len(batch) < maxBatchItems && size+it.size <= maxBatchBytes:
			batch = append(batch, it)
			size += it.size
		default:
			rest = append(rest, it)
		}
	}
	g.queue = rest
	return batch
}

func (g *groupCommit) send(batch []*groupItem) {
	var body any
	var responses [][]byte
	switch g.typ {
	case commandIntents:
		b := intentsBody{Items: make([]intentBody, len(batch))}
		responses = make([][]byte, len(batch))
		for i, it := range batch {
			b.Items[i] = it.body.(intentBody)
			responses[i] = it.attach
		}
		body = b
	default:
		b := issuesBody{Items: make([]issueBody, len(batch))}
		for i, it := range batch {
			b.Items[i] = it.body.(issueBody)
		}
		body = b
	}
	err := g.submit(body, responses, batch)
	for _, it := range batch {
		if err != nil {
			it.done <- err
		}
	}
}

// submit commits one batch and hands each item its outcome; an error is the
// whole batch's.
func (g *groupCommit) submit(body any, responses [][]byte, batch []*groupItem) error {
	var cmd cluster.Command
	var err error
	if b, ok := body.(intentsBody); ok {
		cmd, err = intentsCommand(b, responses)
	} else {
		cmd, err = cluster.NewCommand(g.typ, 1, body)
	}
	if err != nil {
		return err
	}
	// The batch outlives any one requester; the cluster bounds it by its
	// request timeout.
	out, err := g.a.c.Submit(g.a.closed, cmd)
	if err != nil {
		return err
	}
	var res batchResult
	if err := decMode.Unmarshal(out, &res); err != nil {
		return fmt.Errorf("ca: %s: result: %w", g.typ, err)
	}
	refused := res.refusedIndex()
	for i, it := range batch {
		if f, ok := refused[i]; ok {
			it.done <- cluster.RefusedWith(f.Code, f.Msg)
		} else {
			it.done <- nil
		}
	}
	return nil
}
