package audit

import (
	"bufio"
	"context"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Files of an export directory (docs/audit.md describes them for auditors).
const (
	exportKey         = "audit.pub.pem" // the audit public key, PEM PUBLIC KEY
	exportLeaves      = "leaves.txt"    // "<index> <base64 leaf hash> <base64 leaf>\n" per leaf
	exportStart       = "start.txt"     // only with --from N > 0: "N\n" then the compact range [0, N), one base64 hash per line
	exportCheckpoints = "checkpoints"   // <size, 20 digits>.txt (body) and .sig (DER signature)
	exportLatest      = "latest"        // latest.txt and latest.sig: the newest checkpoint
	maxLineSize       = 2*maxLeafSize + 128
)

// Source is what Export reads: a consistent view of a log (a node's, in one
// read transaction of its state, or the audit API through Client).
type Source interface {
	PublicKey() crypto.PublicKey
	// Size is the number of leaves.
	Size(ctx context.Context) (uint64, error)
	// Range is the compact range [0, size): the root hashes of its perfect subtrees,
	// left to right (compact.RangeNodes order).
	Range(ctx context.Context, size uint64) ([][]byte, error)
	// Leaves calls fn with every encoded leaf of [from, to), in order.
	Leaves(ctx context.Context, from, to uint64, fn func(index uint64, leaf []byte) error) error
	// Checkpoints calls fn with the stored checkpoint of every size, by size.
	Checkpoints(ctx context.Context, fn func(Checkpoint) error) error
	// Latest is the newest checkpoint, if any.
	Latest(ctx context.Context) (Checkpoint, bool, error)
}

// Exported says what Export wrote.
type Exported struct {
	Dir         string
	From, Size  uint64 // the leaves From..Size-1
	Checkpoints int    // signed checkpoints written
	Latest      *Checkpoint
}

// String is what `inkan audit export` prints: "leaves 0..48 and 5 signed
// checkpoints (the newest of size 49, 2026-…) to export/".
func (e *Exported) String() string {
	var b strings.Builder
	switch {
	case e.Size > e.From:
		fmt.Fprintf(&b, "leaves %d..%d", e.From, e.Size-1)
	default:
		fmt.Fprintf(&b, "no leaves from %d on", e.From)
	}
	fmt.Fprintf(&b, " and %s", count(e.Checkpoints, "signed checkpoint", "signed checkpoints"))
	if e.Latest != nil {
		fmt.Fprintf(&b, " (the newest of size %d, %s)", e.Latest.Size, e.Latest.Time.Format(checkpointTimeLayout))
	}
	fmt.Fprintf(&b, " to %s", e.Dir)
	return b.String()
}

// Export writes the log from leaf from on into dir, which must not exist or be empty:
// the public key, the leaves [from, size), the compact range [0, from) when from > 0,
// and every checkpoint of a size from from on. Verify reads what it writes. To export
// incrementally, choose from = the size of the newest checkpoint already verified:
// that checkpoint is then in both exports and links them. It says what it wrote.
func Export(ctx context.Context, dir string, src Source, from uint64) (*Exported, error) {
	size, err := src.Size(ctx)
	if err != nil {
		return nil, err
	}
	if from > size {
		return nil, fmt.Errorf("audit: export from %d: the log has %d leaves", from, size)
	}
	if err := os.MkdirAll(filepath.Join(dir, exportCheckpoints), 0o755); err != nil {
		return nil, fmt.Errorf("audit: export: %w", err)
	}
	if ents, err := os.ReadDir(dir); err != nil || len(ents) != 1 {
		return nil, fmt.Errorf("audit: export: %s is not empty", dir)
	}
	keyPEM, err := MarshalPublicKey(src.PublicKey())
	if err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, exportKey), keyPEM); err != nil {
		return nil, err
	}
	if from > 0 {
		rng, err := src.Range(ctx, from)
		if err != nil {
			return nil, err
		}
		buf := []byte(strconv.FormatUint(from, 10) + "\n")
		for _, h := range rng {
			buf = append(base64.StdEncoding.AppendEncode(buf, h), '\n')
		}
		if err := writeFile(filepath.Join(dir, exportStart), buf); err != nil {
			return nil, err
		}
	}
	if err := exportLeafFile(ctx, filepath.Join(dir, exportLeaves), src, from, size); err != nil {
		return nil, err
	}
	out := &Exported{Dir: dir, From: from, Size: size}
	err = src.Checkpoints(ctx, func(c Checkpoint) error {
		if c.Size < from || c.Size > size {
			return nil
		}
		out.Checkpoints++
		return writeCheckpoint(filepath.Join(dir, exportCheckpoints, fmt.Sprintf("%020d", c.Size)), c)
	})
	if err != nil {
		return nil, err
	}
	latest, ok, err := src.Latest(ctx)
	if err != nil {
		return nil, err
	}
	if ok && latest.Size >= from && latest.Size <= size {
		out.Latest = &latest
		if err := writeCheckpoint(filepath.Join(dir, exportLatest), latest); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func exportLeafFile(ctx context.Context, name string, src Source, from, size uint64) (err error) {
	f, err := os.Create(name)
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("audit: export: %w", cerr)
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	var line []byte
	err = src.Leaves(ctx, from, size, func(i uint64, leaf []byte) error {
		line = appendLeafLine(line[:0], i, leaf)
		_, err := w.Write(line)
		return err
	})
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	if err := w.Flush(); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return f.Sync()
}

// appendLeafLine appends one line of leaves.txt.
func appendLeafLine(dst []byte, index uint64, leaf []byte) []byte {
	dst = strconv.AppendUint(dst, index, 10)
	dst = append(dst, ' ')
	dst = base64.StdEncoding.AppendEncode(dst, HashLeaf(leaf))
	dst = append(dst, ' ')
	dst = base64.StdEncoding.AppendEncode(dst, leaf)
	return append(dst, '\n')
}

func writeCheckpoint(base string, c Checkpoint) error {
	if len(c.Signature) == 0 {
		return errors.New("audit: export: unsigned checkpoint")
	}
	if err := writeFile(base+".txt", c.Body()); err != nil {
		return err
	}
	return writeFile(base+".sig", c.Signature)
}

func writeFile(name string, b []byte) error {
	if err := os.WriteFile(name, b, 0o644); err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	return nil
}
