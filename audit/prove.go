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

	"github.com/fxamacker/cbor/v2"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
)

// Inclusion is one leaf about a certificate and the proof that it is in the log.
type Inclusion struct {
	Leaf     Leaf
	LeafHash []byte
	// Checkpoint is the newest checkpoint of the export whose signature verifies;
	// nil if there is none.
	Checkpoint *Checkpoint
	Proof      [][]byte
	// Err is nil when Proof shows the leaf under Checkpoint's root.
	Err error
}

// Prove finds the leaves of the certificate with the given serial (any common hex
// spelling) in an export and proves each included under the export's newest
// checkpoint whose signature verifies with key (the export's own key if nil).
func Prove(export fs.FS, key crypto.PublicKey, serial string) ([]Inclusion, error) {
	s, err := normalizeSerial(serial)
	if err != nil {
		return nil, err
	}
	e, err := readExport(export, key)
	if err != nil {
		return nil, err
	}
	var cp *Checkpoint
	if cps := e.validCheckpoints(); len(cps) > 0 {
		cp = &cps[len(cps)-1].Checkpoint
	}

	// Pass 1: the certificate's leaves.
	var found []Inclusion
	var positions []uint64
	err = e.eachLeaf(func(pos uint64, l leafLine) bool {
		if l.data == nil || !bytes.Contains(l.data, []byte(s)) {
			return true
		}
		leaf, err := ParseLeaf(l.data)
		if err != nil || leaf.Serial != s {
			return true
		}
		in := Inclusion{Leaf: leaf, LeafHash: l.hash, Checkpoint: cp}
		if leaf.Index != pos {
			in.Err = fmt.Errorf("the leaf says index %d but is line %d of the export, leaf %d", leaf.Index, l.line, pos)
		}
		found = append(found, in)
		positions = append(positions, pos)
		return true
	})
	if err != nil || len(found) == 0 || cp == nil {
		if cp == nil {
			for i := range found {
				found[i].Err = errors.New("the export has no checkpoint with a valid signature")
			}
		}
		return found, err
	}

	// Pass 2: the tree up to the checkpoint, keeping the nodes the proofs need.
	needed := map[compact.NodeID][]byte{}
	plans := make([]proof.Nodes, len(found))
	for i, pos := range positions {
		if pos >= cp.Size {
			if found[i].Err == nil {
				found[i].Err = fmt.Errorf("newer than the newest checkpoint (size %d)", cp.Size)
			}
			continue
		}
		plans[i], _ = proof.Inclusion(pos, cp.Size)
		for _, id := range plans[i].IDs {
			needed[id] = nil
		}
	}
	for i, id := range compact.RangeNodes(0, e.from, nil) {
		if _, ok := needed[id]; ok {
			needed[id] = e.start[i]
		}
	}
	rng, err := rangeFactory.NewRange(0, e.from, slices.Clone(e.start))
	if err != nil {
		return nil, fmt.Errorf("audit: export: %w", err)
	}
	keep := func(id compact.NodeID, h []byte) {
		if _, ok := needed[id]; ok {
			needed[id] = h
		}
	}
	err = e.eachLeaf(func(_ uint64, l leafLine) bool {
		if rng.End() >= cp.Size || l.data == nil {
			return false
		}
		return rng.Append(l.hash, keep) == nil
	})
	if err != nil {
		return nil, err
	}
	for i := range found {
		if found[i].Err != nil {
			continue
		}
		found[i].Proof, found[i].Err = inclusionProof(plans[i], needed)
		if found[i].Err == nil && proof.VerifyInclusion(hasher(), positions[i], cp.Size, found[i].LeafHash, found[i].Proof, cp.Root) != nil {
			found[i].Err = fmt.Errorf("the proof from the export's leaves does not give the root of the checkpoint of size %d: this leaf or one near it is not what was signed (run verify)", cp.Size)
		}
	}
	return found, nil
}

func inclusionProof(p proof.Nodes, nodes map[compact.NodeID][]byte) ([][]byte, error) {
	hs := make([][]byte, len(p.IDs))
	for i, id := range p.IDs {
		if hs[i] = nodes[id]; hs[i] == nil {
			return nil, fmt.Errorf("node %d.%d is not in the export: leaves are missing", id.Level, id.Index)
		}
	}
	return p.Rehash(hs, hasher().HashChildren)
}

// eachLeaf calls fn with every line of leaves.txt and its position in the tree,
// until fn returns false.
func (e *exportDir) eachLeaf(fn func(pos uint64, l leafLine) bool) error {
	lr, err := openLeaves(e.fsys)
	if err != nil {
		return err
	}
	defer lr.Close()
	for pos := e.from; lr.next(); pos++ {
		if !fn(pos, lr.cur) {
			break
		}
	}
	return lr.err()
}

// ProveDir is `inkan audit prove`: it prints the leaves of the certificate with the
// given serial in the export in dir and whether each is proven under the newest
// checkpoint. keyFile, if not empty, is the audit public key the auditor trusts.
func ProveDir(w io.Writer, keyFile, dir, serial string) error {
	var key crypto.PublicKey
	if keyFile != "" {
		b, err := os.ReadFile(keyFile)
		if err != nil {
			return fmt.Errorf("audit: prove: %w", err)
		}
		if key, err = ParsePublicKey(b); err != nil {
			return fmt.Errorf("audit: prove: %s: %w", keyFile, err)
		}
	}
	found, err := Prove(os.DirFS(dir), key, serial)
	if err != nil {
		return err
	}
	if len(found) == 0 {
		n, _ := normalizeSerial(serial) // Prove accepted it
		return fmt.Errorf("audit: prove: no leaf for serial %s in %s", printedSerial(n), dir)
	}
	bad := 0
	for _, in := range found {
		l := in.Leaf
		fmt.Fprintf(w, "leaf %d: %s serial %s at %s by %s (raft %d)\n", l.Index, l.Type, printedSerial(l.Serial),
			l.Time.UTC().Format(checkpointTimeLayout), l.Actor, l.RaftIndex)
		if len(l.Data) > 0 {
			d, err := cbor.Diagnose(l.Data)
			if err != nil {
				d = err.Error()
			}
			fmt.Fprintf(w, "  data: %s\n", d)
		}
		switch {
		case in.Err != nil:
			bad++
			fmt.Fprintf(w, "  NOT PROVEN: %v\n", in.Err)
		default:
			fmt.Fprintf(w, "  included in the log of size %d signed at %s (%d-hash inclusion proof verified)\n",
				in.Checkpoint.Size, in.Checkpoint.Time.Format(checkpointTimeLayout), len(in.Proof))
		}
	}
	if bad > 0 {
		return fmt.Errorf("%w: %s not proven", ErrProblems, count(bad, "leaf", "leaves"))
	}
	return nil
}
