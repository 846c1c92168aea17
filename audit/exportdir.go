package audit

import (
	"bufio"
	"bytes"
	"crypto"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/transparency-dev/merkle/compact"
)

// exportDir is an export directory as read back by Verify, Compare and Prove.
type exportDir struct {
	fsys        fs.FS
	key         crypto.PublicKey
	from        uint64
	start       [][]byte        // compact range [0, from)
	checkpoints []dirCheckpoint // by size; history before latest within a size
	problems    []Problem       // found while loading
}

type dirCheckpoint struct {
	Checkpoint
	file  string
	valid bool // parsed and its signature verifies
}

// readExport loads everything but the leaves. pinned, if not nil, is the key the
// auditor trusts; otherwise the export's own audit.pub.pem is used.
func readExport(fsys fs.FS, pinned crypto.PublicKey) (*exportDir, error) {
	if pinned != nil {
		if _, err := auditKey(pinned); err != nil {
			return nil, err
		}
	}
	e := &exportDir{fsys: fsys, key: pinned}
	keyPEM, err := fs.ReadFile(fsys, exportKey)
	switch {
	case err != nil && pinned == nil:
		return nil, fmt.Errorf("audit: export: %w (or give the key with --key)", err)
	case err == nil:
		k, perr := ParsePublicKey(keyPEM)
		switch {
		case perr != nil && pinned == nil:
			return nil, fmt.Errorf("audit: export: %s: %w", exportKey, perr)
		case perr != nil:
			e.problem(problemKey, 0, "%s in the export is not a valid audit key: %v", exportKey, perr)
		case pinned == nil:
			e.key = k
		case KeyFingerprint(k) != KeyFingerprint(pinned):
			e.problem(problemKey, 0, "%s in the export is %s, not the pinned key %s", exportKey, KeyFingerprint(k), KeyFingerprint(pinned))
		}
	}
	if err := e.readStart(); err != nil {
		return nil, err
	}
	if err := e.readCheckpoints(); err != nil {
		return nil, err
	}
	return e, nil
}

func (e *exportDir) problem(k ProblemKind, index uint64, format string, args ...any) {
	e.problems = append(e.problems, Problem{Kind: k, Index: index, Detail: fmt.Sprintf(format, args...)})
}

func (e *exportDir) readStart() error {
	b, err := fs.ReadFile(e.fsys, exportStart)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	from, err := strconv.ParseUint(lines[0], 10, 64)
	if err != nil || from == 0 {
		return fmt.Errorf("audit: export: %s: first line %q: want the start index", exportStart, lines[0])
	}
	if want := compact.RangeSize(0, from); len(lines)-1 != want {
		return fmt.Errorf("audit: export: %s: %d hashes, want %d for start %d", exportStart, len(lines)-1, want, from)
	}
	for i, l := range lines[1:] {
		h, err := base64.StdEncoding.Strict().DecodeString(l)
		if err != nil || len(h) != 32 {
			return fmt.Errorf("audit: export: %s line %d: want base64 of 32 bytes", exportStart, i+2)
		}
		e.start = append(e.start, h)
	}
	e.from = from
	return nil
}

func (e *exportDir) readCheckpoints() error {
	ents, err := fs.ReadDir(e.fsys, exportCheckpoints)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("audit: export: %w", err)
	}
	files := []string{}
	for _, ent := range ents {
		if name, ok := strings.CutSuffix(ent.Name(), ".txt"); ok {
			files = append(files, path.Join(exportCheckpoints, name))
		}
	}
	slices.Sort(files)
	if _, err := fs.Stat(e.fsys, exportLatest+".txt"); err == nil {
		files = append(files, exportLatest)
	}
	origin := ""
	for _, f := range files {
		c, err := e.readCheckpoint(f)
		if err != nil {
			return err
		}
		if c.valid {
			if origin == "" {
				origin = c.Origin
			} else if c.Origin != origin {
				e.problem(problemCheckpointOrigin, c.Size, "%s.txt: origin %q, other checkpoints say %q", f, c.Origin, origin)
				c.valid = false
			}
		}
		if c.file == "" {
			continue
		}
		if f == exportLatest && slices.ContainsFunc(e.checkpoints, func(h dirCheckpoint) bool {
			return h.valid && c.valid && bytes.Equal(h.Body(), c.Body())
		}) {
			continue // the newest checkpoint is also in the history: count it once
		}
		e.checkpoints = append(e.checkpoints, c)
	}
	slices.SortStableFunc(e.checkpoints, func(a, b dirCheckpoint) int { return cmpU64(a.Size, b.Size) })
	return nil
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readCheckpoint reads base.txt and base.sig. A checkpoint that cannot be parsed is
// reported and left out (file == "").
func (e *exportDir) readCheckpoint(base string) (dirCheckpoint, error) {
	var nameSize uint64
	named := false
	if n, ok := strings.CutPrefix(base, exportCheckpoints+"/"); ok {
		v, err := strconv.ParseUint(n, 10, 64)
		nameSize, named = v, err == nil && fmt.Sprintf("%020d", v) == n
		if !named {
			e.problem(problemCheckpointMalformed, 0, "%s.txt: file name is not the checkpoint's size in 20 digits", base)
			return dirCheckpoint{}, nil
		}
	}
	body, err := fs.ReadFile(e.fsys, base+".txt")
	if err != nil {
		return dirCheckpoint{}, fmt.Errorf("audit: export: %w", err)
	}
	sig, err := fs.ReadFile(e.fsys, base+".sig")
	if err != nil {
		e.problem(problemCheckpointMalformed, nameSize, "%s.sig: %v", base, err)
		return dirCheckpoint{}, nil
	}
	c, err := ParseCheckpoint(body, sig)
	if err != nil {
		e.problem(problemCheckpointMalformed, nameSize, "%s.txt: %v", base, err)
		return dirCheckpoint{}, nil
	}
	if named && c.Size != nameSize {
		e.problem(problemCheckpointMalformed, nameSize, "%s.txt holds a checkpoint of size %d", base, c.Size)
		return dirCheckpoint{}, nil
	}
	dc := dirCheckpoint{Checkpoint: c, file: base}
	if err := c.Verify(e.key); err != nil {
		e.problem(problemCheckpointSignature, c.Size, "%s: signature does not verify with the audit key %s", base+".sig", KeyFingerprint(e.key))
		return dc, nil
	}
	dc.valid = true
	return dc, nil
}

// validCheckpoints are the checkpoints whose signature verifies, by size.
func (e *exportDir) validCheckpoints() []dirCheckpoint {
	var v []dirCheckpoint
	for _, c := range e.checkpoints {
		if c.valid {
			v = append(v, c)
		}
	}
	return v
}

// leafLine is one line of leaves.txt as read, before any judgement.
type leafLine struct {
	line    uint64 // 1-based line number
	index   uint64 // the index the line declares
	indexOK bool
	data    []byte // the encoded leaf; nil if it could not be decoded (reused per line)
	hash    []byte // HashLeaf(data)
	stored  []byte // the line's own hash field; nil if malformed
	bad     string // what is malformed about the line, if anything
}

// leafReader reads leaves.txt line by line.
type leafReader struct {
	f   fs.File
	sc  *bufio.Scanner
	buf []byte
	cur leafLine
}

func openLeaves(fsys fs.FS) (*leafReader, error) {
	f, err := fsys.Open(exportLeaves)
	if errors.Is(err, fs.ErrNotExist) {
		return &leafReader{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: export: %w", err)
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), maxLineSize)
	return &leafReader{f: f, sc: sc}, nil
}

func (r *leafReader) Close() {
	if r.f != nil {
		r.f.Close()
	}
}

// next reads one line; false at the end or on a read error (see err).
func (r *leafReader) next() bool {
	if r.sc == nil || !r.sc.Scan() {
		return false
	}
	r.cur, r.buf = parseLine(r.cur.line+1, r.sc.Bytes(), r.buf)
	return true
}

// parseLine reads line number no of leaves.txt. The leaf is decoded into buf, grown
// if need be and returned; pass nil for a fresh one.
func parseLine(no uint64, line, buf []byte) (leafLine, []byte) {
	l := leafLine{line: no}
	f1, rest, ok1 := bytes.Cut(line, []byte{' '})
	f2, f3, ok2 := bytes.Cut(rest, []byte{' '})
	if !ok1 || !ok2 {
		l.bad = "want three fields: index, leaf hash, leaf"
		return l, buf
	}
	var bad []string
	if v, err := strconv.ParseUint(string(f1), 10, 64); err == nil && strconv.FormatUint(v, 10) == string(f1) {
		l.index, l.indexOK = v, true
	} else {
		bad = append(bad, fmt.Sprintf("index %.20q is not a decimal number", f1))
	}
	var h [33]byte // 44 characters, whose DecodedLen is 33: Decode needs that room
	if len(f2) == 44 {
		if n, err := base64.StdEncoding.Strict().Decode(h[:], f2); err == nil && n == 32 {
			l.stored = h[:32]
		}
	}
	if l.stored == nil {
		bad = append(bad, "leaf hash is not base64 of 32 bytes")
	}
	n := base64.StdEncoding.DecodedLen(len(f3))
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	if m, err := base64.StdEncoding.Strict().Decode(buf[:n], f3); err == nil {
		l.data = buf[:m]
		l.hash = HashLeaf(l.data)
	} else {
		bad = append(bad, "leaf is not base64")
	}
	l.bad = strings.Join(bad, "; ")
	return l, buf
}

// parsedLine is a line with its leaf decoded (Verify's unit of work).
type parsedLine struct {
	leafLine
	leaf Leaf
	err  error // from ParseLeaf, when the line's data decoded
}

// parseLines reads leaves.txt and calls fn with every line in order. The lines are
// decoded and their leaves parsed on all CPUs: for a large log this, not the tree,
// is most of the work.
func parseLines(fsys fs.FS, fn func(parsedLine)) error {
	f, err := fsys.Open(exportLeaves)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("audit: export: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), maxLineSize)

	type batch struct {
		first uint64 // line number of raw[0]
		raw   [][]byte
		out   []parsedLine
		done  chan struct{}
	}
	workers := runtime.GOMAXPROCS(0)
	work := make(chan *batch, workers)
	order := make(chan *batch, 2*workers)
	for range workers {
		go func() {
			for b := range work {
				b.out = make([]parsedLine, len(b.raw))
				for i, raw := range b.raw {
					p := &b.out[i]
					p.leafLine, _ = parseLine(b.first+uint64(i), raw, nil)
					if p.data != nil {
						p.leaf, p.err = ParseLeaf(p.data)
					}
				}
				close(b.done)
			}
		}()
	}
	var readErr error
	go func() {
		defer close(order)
		defer close(work)
		next := uint64(1)
		for {
			b := &batch{first: next, done: make(chan struct{})}
			var slab []byte
			for len(b.raw) < 256 && sc.Scan() {
				start := len(slab)
				slab = append(slab, sc.Bytes()...)
				b.raw = append(b.raw, slab[start:len(slab):len(slab)])
			}
			if len(b.raw) == 0 {
				if err := sc.Err(); err != nil {
					readErr = fmt.Errorf("audit: export: %s line %d: %w", exportLeaves, next, err)
				}
				return
			}
			// Slices into slab stay valid when slab grows: each keeps its old array.
			next += uint64(len(b.raw))
			order <- b
			work <- b
		}
	}()
	for b := range order {
		<-b.done
		for _, p := range b.out {
			fn(p)
		}
	}
	return readErr
}

func (r *leafReader) err() error {
	if r.sc == nil {
		return nil
	}
	if err := r.sc.Err(); err != nil {
		return fmt.Errorf("audit: export: %s line %d: %w", exportLeaves, r.cur.line+1, err)
	}
	return nil
}

// openExportDir is the export directory dir as an fs.FS for Verify, Compare and
// Prove, once it is known to be a directory: a path that names nothing, or a
// file, is said to be so (the error wraps the os error: fs.ErrNotExist, or
// syscall.ENOTDIR for a file), not as a missing audit.pub.pem inside it.
func openExportDir(dir string) (fs.FS, error) {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("audit: %s: no such directory (give the directory `inkan audit export --out` wrote): %w", dir, err)
	case err != nil:
		return nil, fmt.Errorf("audit: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("audit: %s is a file, not the directory `inkan audit export --out` wrote: %w", dir, syscall.ENOTDIR)
	}
	return os.DirFS(dir), nil
}
