package audit

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/transparency-dev/merkle/compact"
)

// ProblemKind says what Verify or Compare found wrong.
type ProblemKind string

// Problems about leaves: Index is the leaf's index.
const (
	problemLeafMalformed ProblemKind = "leaf-malformed" // the line or the leaf cannot be read
	problemLeafHash      ProblemKind = "leaf-hash"      // the line's hash is not the hash of its leaf
	problemLeafIndex     ProblemKind = "leaf-index"     // the line's index is not the leaf's own
	problemLeafMissing   ProblemKind = "leaf-missing"   // no line holds this leaf
	problemLeafOrder     ProblemKind = "leaf-order"     // the leaf comes after a leaf with a higher index
	problemLeafDuplicate ProblemKind = "leaf-duplicate" // a second line holds this index
	problemRaftOrder     ProblemKind = "raft-order"     // the leaf's Raft index is below its predecessor's
	problemTruncated     ProblemKind = "truncated"      // leaves end here, before a checkpoint's size
	problemUnsigned      ProblemKind = "unsigned"       // no checkpoint with a valid signature covers the leaves from here
	problemFork          ProblemKind = "fork"           // two exports hold different leaves at this index
)

// Problems about checkpoints: Index is the checkpoint's size.
const (
	problemCheckpointMalformed ProblemKind = "checkpoint-malformed"
	problemCheckpointSignature ProblemKind = "checkpoint-signature" // does not verify with the audit key
	problemCheckpointOrigin    ProblemKind = "checkpoint-origin"    // names another log
	problemCheckpointRoot      ProblemKind = "checkpoint-root"      // its root is not the leaves' root at its size
	problemForkCheckpoint      ProblemKind = "fork-checkpoint"      // not consistent with the other export
)

// problemKey: the export's key is not the pinned one, or two exports' keys differ.
const problemKey ProblemKind = "key"

// Problem is one thing wrong with an export, about one leaf or one checkpoint.
type Problem struct {
	Kind   ProblemKind
	Index  uint64 // the leaf index, or for checkpoint kinds the checkpoint's size
	Detail string
}

func (p Problem) String() string {
	switch {
	case p.Kind == problemKey:
		return "key: " + p.Detail
	case strings.HasPrefix(string(p.Kind), "checkpoint") || p.Kind == problemForkCheckpoint:
		return fmt.Sprintf("checkpoint %d: %s", p.Index, p.Detail)
	}
	return fmt.Sprintf("leaf %d: %s", p.Index, p.Detail)
}

// maxProblems bounds a report: past it problems are only counted.
const maxProblems = 10000

// Report is the outcome of Verify.
type Report struct {
	Origin        string
	Key           string // fingerprint of the key checkpoints were checked with
	KeyFromExport bool   // the key was the export's own, not one pinned by the auditor
	From, Size    uint64 // the export holds leaves [From, Size)
	Checkpoints   int    // checkpoints whose signature verifies
	Latest        *Checkpoint
	Problems      []Problem
	More          int // problems past maxProblems, not listed
	// KeyTransfers are the leaves that record a replicated key (a CA key, the
	// audit key…) wrapped for a node's transport key: the custody of every key,
	// which an auditor reads against the approved joins.
	KeyTransfers []KeyTransfer
}

// KeyTransfer is one leaf of type TypeKeyTransferred, read.
type KeyTransfer struct {
	Index        uint64
	Time         time.Time
	Key          string // the replicated key's name
	Node         string // the node it was wrapped for
	TransportKey string // "sha256:…" of that node's approved transport key
	Via          string // "join" or "share"
}

func (k KeyTransfer) String() string {
	return fmt.Sprintf("leaf %d at %s: key %s wrapped for node %s, transport key %s (%s)",
		k.Index, k.Time.UTC().Format(time.RFC3339), k.Key, k.Node, k.TransportKey, k.Via)
}

// keyTransfer reads a key transfer leaf's data.
func keyTransfer(l Leaf) (KeyTransfer, error) {
	var d map[string]any
	_, dm := cborModes()
	if err := dm.Unmarshal(l.Data, &d); err != nil {
		return KeyTransfer{}, err
	}
	str := func(k string) string { s, _ := d[k].(string); return s }
	kt := KeyTransfer{Index: l.Index, Time: l.Time, Key: str("key"), Node: str("node"), TransportKey: str("transport_key"), Via: str("via")}
	if kt.Key == "" || kt.Node == "" || kt.TransportKey == "" {
		return KeyTransfer{}, errors.New("names no key, node or transport key")
	}
	return kt, nil
}

// OK is true when nothing is wrong.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

func (r *Report) add(p Problem) {
	if len(r.Problems) >= maxProblems {
		r.More++
		return
	}
	r.Problems = append(r.Problems, p)
}

// Verify checks an export offline: it recomputes every leaf hash and the tree, checks
// every checkpoint's signature with key (the export's own audit.pub.pem when key is
// nil), checks that each checkpoint's root is the root of the leaves at its size — one
// sequence of leaves under every checkpoint is what makes each checkpoint consistent
// with the next — and reports every problem with its leaf index. The error is for an
// export that cannot be read at all.
func Verify(export fs.FS, key crypto.PublicKey) (*Report, error) {
	e, err := readExport(export, key)
	if err != nil {
		return nil, err
	}
	r := &Report{Key: KeyFingerprint(e.key), KeyFromExport: key == nil, From: e.from}
	for _, p := range e.problems {
		r.add(p)
	}
	cps := e.validCheckpoints()
	r.Checkpoints = len(cps)
	if len(cps) > 0 {
		r.Origin = cps[0].Origin
		newest := cps[len(cps)-1].Checkpoint
		r.Latest = &newest
	}

	rng, err := rangeFactory.NewRange(0, e.from, slices.Clone(e.start))
	if err != nil {
		return nil, fmt.Errorf("audit: export: %w", err)
	}
	v := &verifier{r: r, cps: cps, lastGood: e.from}
	v.visit(rng) // checkpoints at the start
	seq := newSequence(e.from)
	var lastRaft uint64
	var appendErr error
	err = parseLines(export, func(l parsedLine) {
		idx := l.index
		if !l.indexOK {
			idx = seq.next
		}
		if l.bad != "" {
			r.add(Problem{problemLeafMalformed, idx, fmt.Sprintf("%s line %d: %s", exportLeaves, l.line, l.bad)})
		}
		if l.data != nil {
			if l.stored != nil && !bytes.Equal(l.stored, l.hash) {
				r.add(Problem{problemLeafHash, idx, "the leaf's hash is not the one its line gives: the leaf was changed"})
			}
			if err := rng.Append(l.hash, nil); err != nil && appendErr == nil {
				appendErr = err
			}
			v.visit(rng)
			switch {
			case l.err != nil:
				r.add(Problem{problemLeafMalformed, idx, l.err.Error()})
			case l.leaf.Index != idx:
				r.add(Problem{problemLeafIndex, idx, fmt.Sprintf("the line holds leaf %d", l.leaf.Index)})
			case l.leaf.RaftIndex < lastRaft:
				r.add(Problem{problemRaftOrder, idx, fmt.Sprintf("Raft index %d after %d", l.leaf.RaftIndex, lastRaft)})
			}
			if l.err == nil {
				lastRaft = l.leaf.RaftIndex
				if l.leaf.Type == TypeKeyTransferred {
					if kt, err := keyTransfer(l.leaf); err != nil {
						r.add(Problem{problemLeafMalformed, idx, "key transfer: " + err.Error()})
					} else {
						r.KeyTransfers = append(r.KeyTransfers, kt)
					}
				}
			}
		}
		if p, bad := seq.see(idx, l.line); bad {
			r.add(p)
		}
	})
	if err := errors.Join(err, appendErr); err != nil {
		return nil, err
	}
	for _, p := range seq.missing() {
		r.add(p)
	}
	r.Size = seq.next
	v.finish(seq.next)
	if len(cps) == 0 && r.Size > r.From {
		r.add(Problem{problemUnsigned, r.From, "no checkpoint with a valid signature: nothing vouches for these leaves"})
	}
	slices.SortStableFunc(r.Problems, func(a, b Problem) int { return cmpU64(a.Index, b.Index) })
	return r, nil
}

// verifier checks checkpoints as the tree grows past their sizes. A run of
// checkpoints whose roots disagree with the leaves (every one after a changed leaf)
// is reported as one problem.
type verifier struct {
	r        *Report
	cps      []dirCheckpoint
	next     int    // first checkpoint not yet checked
	lastGood uint64 // size of the last checkpoint that matched
	run      []dirCheckpoint
	runFrom  uint64
}

func (v *verifier) visit(rng *compact.Range) {
	for ; v.next < len(v.cps) && v.cps[v.next].Size <= rng.End(); v.next++ {
		c := v.cps[v.next]
		if c.Size < rng.End() {
			continue // before the export's start: nothing here to check it against
		}
		root, _ := rng.GetRootHash(nil)
		if root == nil {
			root = hasher().EmptyRoot()
		}
		v.check(c, root)
	}
}

func (v *verifier) check(c dirCheckpoint, root []byte) {
	if root != nil && bytes.Equal(root, c.Root) {
		v.flush()
		v.lastGood = c.Size
		return
	}
	if len(v.run) == 0 {
		v.runFrom = v.lastGood
	}
	v.run = append(v.run, c)
}

func (v *verifier) flush() {
	if len(v.run) == 0 {
		return
	}
	first, last := v.run[0], v.run[len(v.run)-1]
	d := fmt.Sprintf("root does not match leaves 0..%d (signed %s); the leaves match the checkpoint of size %d, so a leaf in %d..%d differs from what was signed",
		first.Size-1, first.Time.Format(checkpointTimeLayout), v.runFrom, v.runFrom, first.Size-1)
	if len(v.run) > 1 {
		d += fmt.Sprintf("; the %d checkpoints after it, up to size %d, do not match either", len(v.run)-1, last.Size)
	}
	v.r.add(Problem{problemCheckpointRoot, first.Size, d})
	v.run = nil
}

// finish handles the checkpoints past the tree's size: past the last leaf index the
// export holds, the export is truncated; below it, leaves are missing or unreadable.
func (v *verifier) finish(end uint64) {
	var truncated *dirCheckpoint
	for _, c := range v.cps[v.next:] {
		if c.Size > end {
			truncated = &c
			continue
		}
		v.check(c, nil)
	}
	v.flush()
	if truncated != nil {
		v.r.add(Problem{problemTruncated, end, fmt.Sprintf("the export ends here, but the checkpoint of size %d (signed %s) covers leaves up to %d",
			truncated.Size, truncated.Time.Format(checkpointTimeLayout), truncated.Size-1)})
	}
}

// sequence follows the indices lines declare, to report missing, duplicate and
// out-of-order leaves by index.
type sequence struct {
	from, next uint64
	gaps       [][2]uint64 // [a, b): indices below next not seen yet
}

func newSequence(from uint64) *sequence { return &sequence{from: from, next: from} }

func (s *sequence) see(i, line uint64) (Problem, bool) {
	switch {
	case i == s.next:
		s.next++
		return Problem{}, false
	case i > s.next:
		if len(s.gaps) < 100000 {
			s.gaps = append(s.gaps, [2]uint64{s.next, i})
		}
		s.next = i + 1
		return Problem{}, false
	case i < s.from:
		return Problem{problemLeafIndex, i, fmt.Sprintf("%s line %d: before the export's start %d", exportLeaves, line, s.from)}, true
	}
	for g, r := range s.gaps {
		if i >= r[0] && i < r[1] {
			s.gaps = slices.Delete(s.gaps, g, g+1)
			if i+1 < r[1] {
				s.gaps = slices.Insert(s.gaps, g, [2]uint64{i + 1, r[1]})
			}
			if r[0] < i {
				s.gaps = slices.Insert(s.gaps, g, [2]uint64{r[0], i})
			}
			return Problem{problemLeafOrder, i, fmt.Sprintf("%s line %d: out of order, after leaf %d", exportLeaves, line, s.next-1)}, true
		}
	}
	return Problem{problemLeafDuplicate, i, fmt.Sprintf("%s line %d: a second line for this leaf", exportLeaves, line)}, true
}

func (s *sequence) missing() []Problem {
	var ps []Problem
	for _, g := range s.gaps {
		d := "missing"
		switch n := g[1] - g[0] - 1; {
		case n == 1:
			d = fmt.Sprintf("missing, and leaf %d after it", g[1]-1)
		case n > 1:
			d = fmt.Sprintf("missing, and the %d leaves after it up to %d", n, g[1]-1)
		}
		ps = append(ps, Problem{problemLeafMissing, g[0], d})
	}
	return ps
}

// ErrProblems is returned (wrapped) by VerifyDirs and ProveDir when they found problems.
var ErrProblems = errors.New("audit: the log does not verify")

// VerifyDirs is `inkan audit verify`: it verifies each export directory, and with two
// of them compares them for a fork. It prints one line per problem, then a summary per
// directory. keyFile, if not empty, is the audit public key the auditor trusts.
func VerifyDirs(w io.Writer, keyFile string, dirs ...string) error {
	if len(dirs) == 0 || len(dirs) > 2 {
		return errors.New("audit: verify: give one export directory, or two to compare")
	}
	var key crypto.PublicKey
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return fmt.Errorf("audit: verify: %w", err)
		}
		if key, err = ParsePublicKey(b); err != nil {
			return fmt.Errorf("audit: verify: %s: %w", keyFile, err)
		}
	}
	prefix := func(d string) string {
		if len(dirs) == 1 {
			return ""
		}
		return d + ": "
	}
	fss := make([]fs.FS, len(dirs))
	for i, d := range dirs {
		var err error
		if fss[i], err = openExportDir(d); err != nil {
			return err
		}
	}
	bad := 0
	for i, d := range dirs {
		r, err := Verify(fss[i], key)
		if err != nil {
			return err
		}
		for _, p := range r.Problems {
			fmt.Fprintf(w, "%s%s\n", prefix(d), p)
		}
		if r.More > 0 {
			fmt.Fprintf(w, "%sand %s more\n", prefix(d), count(r.More, "problem", "problems"))
		}
		bad += len(r.Problems) + r.More
		fmt.Fprintf(w, "%s%s\n", prefix(d), r.summary())
		for _, k := range r.KeyTransfers {
			fmt.Fprintf(w, "%skey transfer: %s\n", prefix(d), k)
		}
	}
	if len(dirs) == 2 {
		ps, err := compare(fss[0], fss[1], key)
		if err != nil {
			return err
		}
		for _, p := range ps {
			fmt.Fprintf(w, "%s vs %s: %s\n", dirs[0], dirs[1], p)
		}
		bad += len(ps)
		if len(ps) == 0 {
			fmt.Fprintf(w, "%s and %s are consistent\n", dirs[0], dirs[1])
		}
	}
	if bad > 0 {
		return fmt.Errorf("%w: %s", ErrProblems, count(bad, "problem", "problems"))
	}
	return nil
}

func (r *Report) summary() string {
	var b strings.Builder
	if r.OK() {
		b.WriteString("ok: ")
	} else {
		fmt.Fprintf(&b, "%s: ", count(len(r.Problems)+r.More, "problem", "problems"))
	}
	if r.Size > r.From {
		fmt.Fprintf(&b, "log %q, leaves %d..%d, %s", r.Origin, r.From, r.Size-1, count(r.Checkpoints, "signed checkpoint", "signed checkpoints"))
	} else {
		fmt.Fprintf(&b, "log %q, no leaves from %d on, %s", r.Origin, r.From, count(r.Checkpoints, "signed checkpoint", "signed checkpoints"))
	}
	if r.Latest != nil {
		fmt.Fprintf(&b, ", newest of size %d at %s", r.Latest.Size, r.Latest.Time.Format(checkpointTimeLayout))
		if r.Size > r.Latest.Size {
			if n := r.Size - r.Latest.Size; n == 1 {
				b.WriteString(" (1 leaf after it is not signed yet)")
			} else {
				fmt.Fprintf(&b, " (%d leaves after it are not signed yet)", n)
			}
		}
	}
	fmt.Fprintf(&b, ", key %s", r.Key)
	if r.KeyFromExport {
		b.WriteString(" (from the export: compare it with the published one, or pin it with --key)")
	}
	return b.String()
}

// count is "1 problem" or "n problems".
func count[N int | uint64](n N, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
