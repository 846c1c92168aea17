package audit

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"

	"github.com/fxamacker/cbor/v2"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
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
	return prove(export, key, func(data []byte) (Leaf, bool) {
		if !bytes.Contains(data, []byte(s)) {
			return Leaf{}, false
		}
		leaf, err := ParseLeaf(data)
		return leaf, err == nil && leaf.Serial == s
	})
}

// typeTSATokens is the leaf type of a batch of time-stamp tokens a node
// issued: its data's "tokens" lists the SHA-256 of each token's DER.
const typeTSATokens = "tsa.tokens"

// proveToken finds the tsa.tokens leaf that lists the time-stamp token (the
// DER of its ContentInfo, as `openssl ts -reply -token_out` writes it) in an
// export and proves it included, as Prove does: the token was issued, and
// logged before its client got it.
func proveToken(export fs.FS, key crypto.PublicKey, token []byte) ([]Inclusion, error) {
	sum := sha256.Sum256(token)
	return prove(export, key, func(data []byte) (Leaf, bool) {
		if !bytes.Contains(data, sum[:]) {
			return Leaf{}, false
		}
		leaf, err := ParseLeaf(data)
		if err != nil || leaf.Type != typeTSATokens {
			return leaf, false
		}
		var d struct {
			Tokens [][]byte `cbor:"tokens"`
		}
		if err := cbor.Unmarshal(leaf.Data, &d); err != nil {
			return leaf, false
		}
		return leaf, slices.ContainsFunc(d.Tokens, func(h []byte) bool { return bytes.Equal(h, sum[:]) })
	})
}

// prove finds the leaves match accepts (given a leaf's encoding, it returns
// the leaf parsed) and proves each as Prove says.
func prove(export fs.FS, key crypto.PublicKey, match func(data []byte) (Leaf, bool)) ([]Inclusion, error) {
	e, err := readExport(export, key)
	if err != nil {
		return nil, err
	}
	var cp *Checkpoint
	if cps := e.validCheckpoints(); len(cps) > 0 {
		cp = &cps[len(cps)-1].Checkpoint
	}

	// Pass 1: the leaves asked for.
	var found []Inclusion
	var positions []uint64
	err = e.eachLeaf(func(pos uint64, l leafLine) bool {
		if l.data == nil {
			return true
		}
		leaf, ok := match(l.data)
		if !ok {
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
	key, err := readKeyFile(keyFile)
	if err != nil {
		return err
	}
	fsys, err := openExportDir(dir)
	if err != nil {
		return err
	}
	found, err := Prove(fsys, key, serial)
	if err != nil {
		return err
	}
	if len(found) == 0 {
		n, _ := normalizeSerial(serial) // Prove accepted it
		return fmt.Errorf("audit: prove: no leaf for serial %s in %s", printedSerial(n), dir)
	}
	return printInclusions(w, found)
}

// ProveTokenDir is `inkan audit prove --token`: it prints the leaf that logs
// the time-stamp token in tokenFile (the token's DER, or the whole
// TimeStampResp) and whether it is proven under the newest checkpoint.
func ProveTokenDir(w io.Writer, keyFile, dir, tokenFile string) error {
	key, err := readKeyFile(keyFile)
	if err != nil {
		return err
	}
	fsys, err := openExportDir(dir)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("audit: prove: %w", err)
	}
	token, err := tokenOf(b)
	if err != nil {
		return fmt.Errorf("audit: prove: %s: %w", tokenFile, err)
	}
	found, err := proveToken(fsys, key, token)
	if err != nil {
		return err
	}
	sum := sha256.Sum256(token)
	if len(found) == 0 {
		return fmt.Errorf("audit: prove: no %s leaf lists the token (SHA-256 %x) in %s", typeTSATokens, sum, dir)
	}
	fmt.Fprintf(w, "token SHA-256 %x\n", sum)
	return printInclusions(w, found)
}

// errNotToken: the file holds neither a time-stamp token nor a TimeStampResp
// with one.
var errNotToken = errors.New("not a time-stamp token (DER ContentInfo) or a TimeStampResp holding one")

// tokenOf returns the time-stamp token of b: b itself if it is a DER
// ContentInfo, or the token of a granted DER TimeStampResp (RFC 3161 §2.4.2).
func tokenOf(b []byte) ([]byte, error) {
	in := cryptobyte.String(b)
	var outer cryptobyte.String
	if !in.ReadASN1(&outer, cbasn1.SEQUENCE) || !in.Empty() {
		return nil, errNotToken
	}
	switch {
	case outer.PeekASN1Tag(cbasn1.OBJECT_IDENTIFIER): // ContentInfo
		return b, nil
	case outer.PeekASN1Tag(cbasn1.SEQUENCE): // TimeStampResp: status, token
		var token cryptobyte.String
		if !outer.SkipASN1(cbasn1.SEQUENCE) || !outer.ReadASN1Element(&token, cbasn1.SEQUENCE) || !outer.Empty() {
			return nil, errNotToken
		}
		return token, nil
	}
	return nil, errNotToken
}

func printInclusions(w io.Writer, found []Inclusion) error {
	bad := 0
	for _, in := range found {
		l := in.Leaf
		about := ""
		if l.Serial != "" {
			about = " serial " + printedSerial(l.Serial)
		}
		fmt.Fprintf(w, "leaf %d: %s%s at %s by %s (raft %d)\n", l.Index, l.Type, about,
			l.Time.UTC().Format(checkpointTimeLayout), l.Actor, l.RaftIndex)
		var batch struct {
			Node   string   `cbor:"node"`
			Tokens [][]byte `cbor:"tokens"`
		}
		switch {
		case l.Type == typeTSATokens && cbor.Unmarshal(l.Data, &batch) == nil:
			// A batch lists up to a thousand hashes: say whose and how many.
			fmt.Fprintf(w, "  data: %d tokens issued by node %s\n", len(batch.Tokens), batch.Node)
		case len(l.Data) > 0:
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

// readKeyFile reads the audit public key (PEM) the auditor trusts; nil if
// keyFile is empty.
func readKeyFile(keyFile string) (crypto.PublicKey, error) {
	if keyFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w", keyFile, err)
	}
	return k, nil
}
