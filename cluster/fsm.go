package cluster

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// Buckets the state machine itself owns.
var (
	bucketMeta     = []byte("cluster.meta")
	bucketRequests = []byte("cluster.requests")
	keyApplied     = []byte("applied")
)

// dedupWindow is how long the result of a request stays known, so that a
// submission retried across a leader change is applied once. A request ID
// begins with its submitter's clock (8 bytes, Unix nanoseconds, big-endian)
// so that records are kept in time order and pruned from the front: a record
// goes once the entry time passes its ID's time by the window. Both are in
// the log, so every replica prunes alike; the window must not differ
// between replicas.
const dedupWindow = 10 * time.Minute

// newRequestID makes a request ID: the submitter's time, then 8 random bytes.
func newRequestID(now time.Time) ([]byte, error) {
	id := make([]byte, 16)
	binary.BigEndian.PutUint64(id, uint64(now.UnixNano()))
	_, err := rand.Read(id[8:])
	return id, err
}

const snapshotMagic = "inkan-state-v1\x00\x00" // 16 bytes

// applyResult is what one command came to.
type applyResult struct {
	value []byte
	err   error // a *RefusedError, or the node's failure
}

type registered struct {
	h        Handler
	versions map[uint]bool
}

// stateMachine is the raft.BatchingFSM: a bbolt file of its own, commands
// dispatched to their handlers, one bbolt transaction per batch of Raft
// entries that records the last applied index with the change.
type stateMachine struct {
	path     string
	log      *slog.Logger
	handlers map[string]registered
	hooks    []Hook
	buckets  [][]byte
	metrics  *metrics
	subs     *subscribers
	onFatal  func(error)
	onDenied func() // after the set of removed nodes changed

	mu sync.RWMutex // held for writing only while the file is swapped
	db *bbolt.DB

	applied atomic.Uint64 // last Raft index applied to db
	tickMu  sync.Mutex
	tick    chan struct{} // closed and replaced after each apply

	pendMu  sync.Mutex
	pending map[string]chan applyResult // request ID → its submitter

	failed atomic.Pointer[error]

	denied atomic.Pointer[map[string]bool] // removed node IDs (see membership.go)
}

func openStateMachine(path string, log *slog.Logger, handlers []Handler, hooks []Hook, m *metrics, subs *subscribers) (*stateMachine, error) {
	f := &stateMachine{
		path:     path,
		log:      log,
		handlers: map[string]registered{},
		hooks:    hooks,
		metrics:  m,
		subs:     subs,
		tick:     make(chan struct{}),
		pending:  map[string]chan applyResult{},
	}
	owner := map[string]string{}
	for _, b := range [][]byte{bucketMeta, bucketRequests} {
		owner[string(b)] = "cluster"
		f.buckets = append(f.buckets, b)
	}
	for _, h := range handlers {
		if strings.HasPrefix(h.Type(), reservedPrefix) {
			return nil, fmt.Errorf("cluster: handler type %q: the prefix %q is reserved", h.Type(), reservedPrefix)
		}
	}
	for _, h := range append(builtinHandlers(), handlers...) {
		t := h.Type()
		if _, dup := f.handlers[t]; dup || t == "" {
			return nil, fmt.Errorf("cluster: handler type %q registered twice or empty", t)
		}
		r := registered{h: h, versions: map[uint]bool{}}
		for _, v := range h.Versions() {
			r.versions[v] = true
		}
		f.handlers[t] = r
		for _, b := range h.Buckets() {
			if o, taken := owner[string(b)]; taken {
				return nil, fmt.Errorf("cluster: bucket %q claimed by %s and %s", b, o, t)
			}
			owner[string(b)] = t
			f.buckets = append(f.buckets, b)
		}
	}
	if _, err := settleState(path, log); err != nil {
		return nil, err
	}
	if err := markOpen(path); err != nil {
		return nil, err
	}
	if err := f.open(path); err != nil {
		return nil, err
	}
	return f, nil
}

func boltOptions() *bbolt.Options {
	return &bbolt.Options{Timeout: time.Second, InitialMmapSize: 64 << 20, FreelistType: bbolt.FreelistMapType, NoFreelistSync: true}
}

// open opens the state file at path, creates missing buckets and loads the
// applied index and the in-memory views of membership. The file is written
// without fsync: statesync.go says why that is safe.
func (f *stateMachine) open(path string) error {
	o := boltOptions()
	o.NoSync = true
	db, err := bbolt.Open(path, 0o600, o)
	if err != nil {
		return fmt.Errorf("cluster: open state %s: %w", path, err)
	}
	var applied uint64
	err = db.Update(func(tx *bbolt.Tx) error {
		for _, b := range f.buckets {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		applied = readApplied(tx)
		f.denied.Store(loadDenied(tx))
		return nil
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("cluster: prepare state %s: %w", path, err)
	}
	f.db = db
	f.applied.Store(applied)
	return nil
}

func readApplied(tx *bbolt.Tx) uint64 {
	b := tx.Bucket(bucketMeta)
	if b == nil {
		return 0
	}
	v := b.Get(keyApplied)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (f *stateMachine) close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.db == nil {
		return nil
	}
	err := f.db.Sync()
	if cerr := f.db.Close(); err == nil {
		err = cerr
	}
	f.db = nil
	if err != nil {
		return fmt.Errorf("cluster: close state: %w", err)
	}
	return markClosed(f.path)
}

// view runs fn in a read transaction on the local state.
func (f *stateMachine) view(fn func(tx *bbolt.Tx) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return ErrShutdown
	}
	return f.db.View(fn)
}

// begin starts a read transaction on the local state, to be rolled back by
// the caller; it pins the state it sees while applies go on.
func (f *stateMachine) begin() (*bbolt.Tx, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return nil, ErrShutdown
	}
	return f.db.Begin(false)
}

// failure is the error that stopped this replica, if any.
func (f *stateMachine) failure() error {
	if p := f.failed.Load(); p != nil {
		return *p
	}
	return nil
}

func (f *stateMachine) fatal(err error) {
	err = fmt.Errorf("%w: %w", ErrNodeFailed, err)
	if !f.failed.CompareAndSwap(nil, &err) {
		return
	}
	f.metrics.applyErrors.WithLabelValues("fatal").Inc()
	f.log.Error("cluster: replica cannot apply a committed entry; stopping", "err", err)
	f.failPending(err)
	if f.onFatal != nil {
		f.onFatal(err)
	}
}

// register makes the submitter of request id the receiver of its result.
func (f *stateMachine) register(id []byte) chan applyResult {
	ch := make(chan applyResult, 1)
	f.pendMu.Lock()
	f.pending[string(id)] = ch
	f.pendMu.Unlock()
	return ch
}

func (f *stateMachine) unregister(id []byte) {
	f.pendMu.Lock()
	delete(f.pending, string(id))
	f.pendMu.Unlock()
}

func (f *stateMachine) deliver(id []byte, r applyResult) {
	f.pendMu.Lock()
	ch, ok := f.pending[string(id)]
	delete(f.pending, string(id))
	f.pendMu.Unlock()
	if ok {
		ch <- r
	}
}

// deliverRestored answers submitters whose commands arrived inside a
// snapshot rather than as entries, from the request records; called with
// f.mu held.
func (f *stateMachine) deliverRestored() {
	f.pendMu.Lock()
	defer f.pendMu.Unlock()
	_ = f.db.View(func(tx *bbolt.Tx) error {
		reqs := tx.Bucket(bucketRequests)
		for id, ch := range f.pending {
			v := reqs.Get([]byte(id))
			if v == nil {
				continue
			}
			rec, err := decodeDedup(v)
			if err != nil {
				continue
			}
			r := applyResult{value: bytes.Clone(rec.Value)}
			if rec.Refused {
				r.err = rebuildRefusal(rec.Code, rec.Refusal)
			}
			ch <- r
			delete(f.pending, id)
		}
		return nil
	})
}

func (f *stateMachine) failPending(err error) {
	f.pendMu.Lock()
	defer f.pendMu.Unlock()
	for id, ch := range f.pending {
		select {
		case ch <- applyResult{err: err}:
		default:
		}
		delete(f.pending, id)
	}
}

// waitChan returns a channel closed at the next apply.
func (f *stateMachine) waitChan() chan struct{} {
	f.tickMu.Lock()
	defer f.tickMu.Unlock()
	return f.tick
}

func (f *stateMachine) ticked() {
	f.tickMu.Lock()
	close(f.tick)
	f.tick = make(chan struct{})
	f.tickMu.Unlock()
}

// Apply implements raft.FSM.
func (f *stateMachine) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

// pendingItem is one command of a batch being applied.
type pendingItem struct {
	log   int // position of its Raft entry in the batch
	id    []byte
	entry Entry
}

// ApplyBatch implements raft.BatchingFSM: the entries are applied in one
// bbolt transaction that also records the last applied index, so a restart
// neither loses nor repeats any of them. The transaction is not synced: the
// Raft log holds the entries (statesync.go).
func (f *stateMachine) ApplyBatch(logs []*raft.Log) []any {
	resp := make([]any, len(logs))
	if err := f.failure(); err != nil {
		for i := range resp {
			resp[i] = err
		}
		return resp
	}
	applied := f.applied.Load()
	last := logs[len(logs)-1].Index
	if last <= applied {
		return resp // replayed after a restart: already in the state
	}
	var items []pendingItem
	for i, l := range logs {
		if l.Index <= applied || l.Type != raft.LogCommand {
			continue
		}
		var env envelope
		if err := decMode.Unmarshal(l.Data, &env); err != nil {
			f.fatal(fmt.Errorf("entry %d: decode: %w", l.Index, err))
			return f.failAll(resp)
		}
		at := time.Unix(0, env.Time).UTC()
		for seq, it := range env.Items {
			var w wireCommand
			if err := decMode.Unmarshal(it.Cmd, &w); err != nil {
				f.fatal(fmt.Errorf("entry %d.%d: decode command: %w", l.Index, seq, err))
				return f.failAll(resp)
			}
			items = append(items, pendingItem{log: i, id: it.ID, entry: Entry{
				Index: l.Index, Seq: seq, Time: at, Raw: it.Cmd,
				Command: Command{Type: w.Type, Version: w.Version, Body: []byte(w.Body)},
			}})
		}
	}

	// A refusal rolls back the whole transaction and the batch is applied
	// again with the refused command skipped: the effect is a savepoint per
	// command, since the handlers are deterministic. Each pass refuses one
	// more command or finishes, so this ends.
	refused := map[int]error{}
	var results []applyResult
	var fresh []bool
	f.mu.RLock()
	defer f.mu.RUnlock()
	for {
		tx, err := f.db.Begin(true)
		if err != nil {
			f.fatal(fmt.Errorf("entries %d..%d: begin: %w", logs[0].Index, last, err))
			return f.failAll(resp)
		}
		var again bool
		results, fresh, again, err = f.applyItems(tx, items, refused)
		if err == nil && !again {
			err = putApplied(tx, last)
		}
		if err != nil {
			_ = tx.Rollback()
			f.fatal(err)
			return f.failAll(resp)
		}
		if again {
			_ = tx.Rollback()
			continue
		}
		if err := tx.Commit(); err != nil {
			f.fatal(fmt.Errorf("entries %d..%d: commit: %w", logs[0].Index, last, err))
			return f.failAll(resp)
		}
		break
	}
	f.applied.Store(last)
	f.metrics.applied.Set(float64(last))
	if len(refused) > 0 {
		f.metrics.applyErrors.WithLabelValues("refused").Add(float64(len(refused)))
	}
	changedMembers := false
	for i, it := range items {
		f.deliver(it.id, results[i])
		if fresh[i] && results[i].err == nil {
			f.subs.publish(Event{Entry: it.entry, Result: results[i].value})
			if strings.HasPrefix(it.entry.Command.Type, "cluster.member.") {
				changedMembers = true
			}
		}
	}
	if changedMembers {
		_ = f.db.View(func(tx *bbolt.Tx) error { f.denied.Store(loadDenied(tx)); return nil })
		if f.onDenied != nil {
			f.onDenied()
		}
	}
	f.ticked()
	return resp
}

func (f *stateMachine) failAll(resp []any) []any {
	err := f.failure()
	for i := range resp {
		resp[i] = err
	}
	return resp
}

func putApplied(tx *bbolt.Tx, index uint64) error {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], index)
	return tx.Bucket(bucketMeta).Put(keyApplied, b[:])
}

// dedupRecord is what the state remembers of a request for dedupWindow: its
// result, or its refusal with the refusal's code (a Refusal's). Records written
// before codes were kept have three fields (dedupRecordV1).
type dedupRecord struct {
	_       struct{} `cbor:",toarray"`
	Value   []byte
	Refusal string
	Refused bool
	Code    string
}

type dedupRecordV1 struct {
	_       struct{} `cbor:",toarray"`
	Value   []byte
	Refusal string
	Refused bool
}

func decodeDedup(v []byte) (dedupRecord, error) {
	var rec dedupRecord
	err := decMode.Unmarshal(v, &rec)
	if err != nil {
		var old dedupRecordV1
		if decMode.Unmarshal(v, &old) == nil {
			return dedupRecord{Value: old.Value, Refusal: old.Refusal, Refused: old.Refused}, nil
		}
	}
	return rec, err
}

// applyItems applies items in tx. It returns again=true, having added to
// refused, when a handler refused a command not yet known to be refused;
// any error it returns is fatal. fresh[i] tells whether item i was applied
// now (not a duplicate of an earlier request).
func (f *stateMachine) applyItems(tx *bbolt.Tx, items []pendingItem, refused map[int]error) (results []applyResult, fresh []bool, again bool, err error) {
	reqs := tx.Bucket(bucketRequests)
	results = make([]applyResult, len(items))
	fresh = make([]bool, len(items))
	for i, it := range items {
		e := it.entry
		where := fmt.Sprintf("entry %d.%d (%s v%d)", e.Index, e.Seq, e.Command.Type, e.Command.Version)
		if len(it.id) > 0 {
			if v := reqs.Get(it.id); v != nil {
				rec, err := decodeDedup(v)
				if err != nil {
					return nil, nil, false, fmt.Errorf("%s: decode request record: %w", where, err)
				}
				results[i] = applyResult{value: rec.Value}
				if rec.Refused {
					results[i].err = rebuildRefusal(rec.Code, rec.Refusal)
				}
				continue
			}
		}
		if rerr, ok := refused[i]; ok {
			results[i] = applyResult{err: rerr}
		} else {
			r, ok := f.handlers[e.Command.Type]
			if !ok {
				return nil, nil, false, fmt.Errorf("%s: %w", where, errUnknownCommand)
			}
			if !r.versions[e.Command.Version] {
				return nil, nil, false, fmt.Errorf("%s: version not supported: %w", where, errUnknownCommand)
			}
			value, herr := r.h.Apply(tx, e)
			if herr != nil {
				var ref *RefusedError
				if errors.As(herr, &ref) {
					refused[i] = ref
					return nil, nil, true, nil
				}
				return nil, nil, false, fmt.Errorf("%s: %w", where, herr)
			}
			for _, hook := range f.hooks {
				if err := hook(tx, e, value); err != nil {
					return nil, nil, false, fmt.Errorf("%s: hook: %w", where, err)
				}
			}
			results[i] = applyResult{value: value}
			fresh[i] = true
		}
		if len(it.id) > 0 {
			rec := dedupRecord{Value: results[i].value}
			if results[i].err != nil {
				ref := results[i].err.(*RefusedError).Err
				rec.Refused, rec.Refusal, rec.Code = true, ref.Error(), RefusalCode(ref)
			}
			v, err := encMode.Marshal(rec)
			if err != nil {
				return nil, nil, false, fmt.Errorf("%s: %w", where, err)
			}
			if err := reqs.Put(it.id, v); err != nil {
				return nil, nil, false, fmt.Errorf("%s: %w", where, err)
			}
		}
	}
	if len(items) > 0 {
		if err := pruneRequests(reqs, items[len(items)-1].entry.Time.Add(-dedupWindow)); err != nil {
			return nil, nil, false, fmt.Errorf("prune requests: %w", err)
		}
	}
	return results, fresh, false, nil
}

func pruneRequests(reqs *bbolt.Bucket, before time.Time) error {
	limit := make([]byte, 8)
	binary.BigEndian.PutUint64(limit, uint64(before.UnixNano()))
	c := reqs.Cursor()
	for k, _ := c.First(); k != nil && bytes.Compare(k[:min(8, len(k))], limit) < 0; k, _ = c.First() {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

// Snapshot implements raft.FSM: it pins a read transaction, which Persist
// streams while applies go on.
func (f *stateMachine) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if f.db == nil {
		return nil, ErrShutdown
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("cluster: snapshot: %w", err)
	}
	return &stateSnapshot{tx: tx}, nil
}

type stateSnapshot struct{ tx *bbolt.Tx }

// Persist writes a header (magic, applied index) and the bbolt file.
func (s *stateSnapshot) Persist(sink raft.SnapshotSink) error {
	hdr := make([]byte, 24)
	copy(hdr, snapshotMagic)
	binary.BigEndian.PutUint64(hdr[16:], readApplied(s.tx))
	if _, err := sink.Write(hdr); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("cluster: snapshot: %w", err)
	}
	if _, err := s.tx.WriteTo(sink); err != nil {
		_ = sink.Cancel()
		return fmt.Errorf("cluster: snapshot: %w", err)
	}
	return sink.Close()
}

func (s *stateSnapshot) Release() { _ = s.tx.Rollback() }

// Restore implements raft.FSM. A snapshot no newer than the local state is
// skipped (Raft restores its latest snapshot at every start; the state file
// already holds at least that much). Otherwise the file is swapped whole:
// written beside the state, synced, checked, renamed over it and reopened.
func (f *stateMachine) Restore(rc io.ReadCloser) error {
	hdr := make([]byte, 24)
	if _, err := io.ReadFull(rc, hdr); err != nil {
		return fmt.Errorf("cluster: restore: read header: %w", err)
	}
	if string(hdr[:16]) != snapshotMagic {
		return errors.New("cluster: restore: not an inkan state snapshot")
	}
	index := binary.BigEndian.Uint64(hdr[16:])
	if index <= f.applied.Load() {
		f.log.Info("cluster: snapshot is not newer than local state; keeping local state", "snapshot", index, "applied", f.applied.Load())
		return nil
	}
	tmp := f.path + ".restore"
	if err := writeSynced(tmp, rc); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cluster: restore: %w", err)
	}
	check, err := bbolt.Open(tmp, 0o600, &bbolt.Options{Timeout: time.Second, ReadOnly: true})
	if err == nil {
		var got uint64
		err = check.View(func(tx *bbolt.Tx) error { got = readApplied(tx); return nil })
		check.Close()
		if err == nil && got != index {
			err = fmt.Errorf("header says index %d, file says %d", index, got)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cluster: restore: snapshot file: %w", err)
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	// The old state is closed once its last reader is done, not here: a
	// snapshot Raft is persisting holds a read transaction on it, and Raft's
	// snapshot goroutine may be waiting on its main loop, which waits for
	// this restore; closing here (bbolt's Close waits for every transaction)
	// deadlocked a follower that was snapshotting when the leader sent it a
	// snapshot. Readers keep the old file's pages after the rename.
	old := f.db
	f.db = nil
	go func() {
		if err := old.Close(); err != nil {
			f.log.Warn("cluster: closing the state a snapshot replaced", "err", err)
		}
	}()
	if err := os.Rename(tmp, f.path); err != nil {
		f.fatal(fmt.Errorf("restore: %w", err))
		return err
	}
	if err := syncDir(filepath.Dir(f.path)); err != nil {
		f.fatal(fmt.Errorf("restore: %w", err))
		return err
	}
	if err := f.open(f.path); err != nil {
		f.fatal(fmt.Errorf("restore: %w", err))
		return err
	}
	f.metrics.applied.Set(float64(f.applied.Load()))
	f.log.Info("cluster: state restored from snapshot", "applied", f.applied.Load())
	f.deliverRestored()
	f.subs.resync()
	f.ticked()
	return nil
}

func writeSynced(path string, r io.Reader) error {
	w, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(w, r); err != nil {
		w.Close()
		return err
	}
	if err := w.Sync(); err != nil {
		w.Close()
		return err
	}
	return w.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
