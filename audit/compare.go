package audit

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"io/fs"
	"slices"
)

// compare checks two exports of one log against each other, as an auditor does with
// an export fetched earlier or from another node: every checkpoint of each (with a
// valid signature) must have the root that the other export's leaves give at its size,
// and where both hold a leaf it must be the same leaf. Anything else is a fork: the
// log showed two histories. Compare does not re-check each export on its own (Verify
// does); the error is for exports that cannot be read or do not overlap at all.
func compare(a, b fs.FS, key crypto.PublicKey) ([]Problem, error) {
	ea, err := readExport(a, key)
	if err != nil {
		return nil, err
	}
	eb, err := readExport(b, key)
	if err != nil {
		return nil, err
	}
	var ps []Problem
	if fa, fb := KeyFingerprint(ea.key), KeyFingerprint(eb.key); fa != fb {
		ps = append(ps, Problem{problemKey, 0, fmt.Sprintf("the first export is signed with %s, the second with %s", fa, fb)})
	}
	ca, cb := ea.validCheckpoints(), eb.validCheckpoints()
	if len(ca) > 0 && len(cb) > 0 && ca[0].Origin != cb[0].Origin {
		return nil, fmt.Errorf("audit: compare: the exports are of two logs, %q and %q", ca[0].Origin, cb[0].Origin)
	}
	rootsA, err := treeRoots(ea, cb)
	if err != nil {
		return nil, err
	}
	rootsB, err := treeRoots(eb, ca)
	if err != nil {
		return nil, err
	}
	compared := 0
	against := func(cps []dirCheckpoint, roots map[uint64][]byte, this, other string) {
		var bad []dirCheckpoint
		for _, c := range cps {
			if r, ok := roots[c.Size]; ok {
				compared++
				if !bytes.Equal(r, c.Root) {
					bad = append(bad, c)
				}
			}
		}
		if len(bad) == 0 {
			return
		}
		d := fmt.Sprintf("the %s export's checkpoint (signed %s) is not consistent with the %s export: its leaves give another root at this size",
			this, bad[0].Time.Format(checkpointTimeLayout), other)
		if len(bad) > 1 {
			d += fmt.Sprintf("; so are %d later checkpoints up to size %d", len(bad)-1, bad[len(bad)-1].Size)
		}
		ps = append(ps, Problem{problemForkCheckpoint, bad[0].Size, d})
	}
	against(ca, rootsB, "first", "second")
	against(cb, rootsA, "second", "first")

	idx, differ, n, err := firstDifference(ea, eb)
	if err != nil {
		return nil, err
	}
	if differ {
		ps = append(ps, Problem{problemFork, idx, "the exports hold different leaves from here on: the log has forked"})
	}
	if compared == 0 && n == 0 {
		return nil, errors.New("audit: compare: the exports share no leaf and no checkpoint size: nothing to compare")
	}
	slices.SortStableFunc(ps, func(a, b Problem) int { return cmpU64(a.Index, b.Index) })
	return ps, nil
}

// treeRoots is the root of e's leaves, in file order, at each of the sizes of cps
// that e's leaves reach (including e's start).
func treeRoots(e *exportDir, cps []dirCheckpoint) (map[uint64][]byte, error) {
	want := map[uint64]bool{}
	for _, c := range cps {
		want[c.Size] = true
	}
	roots := map[uint64][]byte{}
	rng, err := rangeFactory.NewRange(0, e.from, slices.Clone(e.start))
	if err != nil {
		return nil, fmt.Errorf("audit: export: %w", err)
	}
	record := func() {
		if want[rng.End()] {
			r, _ := rng.GetRootHash(nil)
			if r == nil {
				r = hasher().EmptyRoot()
			}
			roots[rng.End()] = r
		}
	}
	record()
	lr, err := openLeaves(e.fsys)
	if err != nil {
		return nil, err
	}
	defer lr.Close()
	for lr.next() {
		if lr.cur.data == nil {
			break // the tree cannot be followed past an unreadable leaf
		}
		if err := rng.Append(lr.cur.hash, nil); err != nil {
			return nil, err
		}
		record()
	}
	return roots, lr.err()
}

// firstDifference walks both exports' leaves where their ranges overlap and returns
// the first index whose leaves differ, and how many were compared.
func firstDifference(ea, eb *exportDir) (uint64, bool, int, error) {
	ra, err := openLeaves(ea.fsys)
	if err != nil {
		return 0, false, 0, err
	}
	defer ra.Close()
	rb, err := openLeaves(eb.fsys)
	if err != nil {
		return 0, false, 0, err
	}
	defer rb.Close()
	start := max(ea.from, eb.from)
	skip := func(r *leafReader, from uint64) bool {
		for i := from; i < start; i++ {
			if !r.next() {
				return false
			}
		}
		return true
	}
	n := 0
	if skip(ra, ea.from) && skip(rb, eb.from) {
		for i := start; ra.next() && rb.next(); i++ {
			a, b := ra.cur, rb.cur
			if a.data == nil || b.data == nil {
				continue
			}
			n++
			if !bytes.Equal(a.hash, b.hash) {
				return i, true, n, nil
			}
		}
	}
	if err := ra.err(); err != nil {
		return 0, false, n, err
	}
	return 0, false, n, rb.err()
}
