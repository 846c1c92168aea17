package audit

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// exportLog builds a test log of n leaves (checkpoints every 16 leaves and at the end)
// and exports it from leaf from.
func exportLog(t *testing.T, l *memLog, from uint64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "export")
	err := func() error { _, err := Export(context.Background(), dir, l.Source(), from); return err }()
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func readLines(t *testing.T, dir string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, exportLeaves))
	if err != nil {
		t.Fatal(err)
	}
	return strings.SplitAfter(strings.TrimSuffix(string(b), "\n"), "\n")
}

func writeLines(t *testing.T, dir string, lines []string) {
	t.Helper()
	s := strings.Join(lines, "")
	if s != "" && !strings.HasSuffix(s, "\n") {
		s += "\n"
	}
	if err := os.WriteFile(filepath.Join(dir, exportLeaves), []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// editLeaf changes the leaf of line i with edit; the line keeps its hash unless rehash.
func editLeaf(t *testing.T, dir string, i int, rehash bool, edit func([]byte) []byte) {
	t.Helper()
	lines := readLines(t, dir)
	f := strings.Fields(lines[i])
	leaf, err := base64.StdEncoding.DecodeString(f[2])
	if err != nil {
		t.Fatal(err)
	}
	changed := edit(bytes.Clone(leaf))
	if bytes.Equal(changed, leaf) {
		t.Fatal("the edit changed nothing")
	}
	hash := f[1]
	if rehash {
		hash = base64.StdEncoding.EncodeToString(HashLeaf(changed))
	}
	lines[i] = f[0] + " " + hash + " " + base64.StdEncoding.EncodeToString(changed) + "\n"
	writeLines(t, dir, lines)
}

func cpFile(dir string, size uint64) string {
	return filepath.Join(dir, exportCheckpoints, fmt.Sprintf("%020d", size))
}

func readCP(t *testing.T, dir string, size uint64) Checkpoint {
	t.Helper()
	body, err1 := os.ReadFile(cpFile(dir, size) + ".txt")
	sig, err2 := os.ReadFile(cpFile(dir, size) + ".sig")
	c, err := ParseCheckpoint(body, sig)
	if err := errors.Join(err1, err2, err); err != nil {
		t.Fatal(err)
	}
	return c
}

func writeCP(t *testing.T, dir string, c Checkpoint) {
	t.Helper()
	if err := errors.Join(
		os.WriteFile(cpFile(dir, c.Size)+".txt", c.Body(), 0o644),
		os.WriteFile(cpFile(dir, c.Size)+".sig", c.Signature, 0o644)); err != nil {
		t.Fatal(err)
	}
}

type want struct {
	kind  ProblemKind
	index uint64
}

func has(ps []Problem, w want) bool {
	return slices.ContainsFunc(ps, func(p Problem) bool { return p.Kind == w.kind && p.Index == w.index })
}

// TestTamperIsFound changes an export the ways an operator hiding something would,
// and checks that verify reports each with its index.
func TestTamperIsFound(t *testing.T) {
	key, other := newKey(t), newKey(t)
	l := newTestLog(t, key)
	buildLog(t, l, key, 0, 100, 4, 16) // checkpoints 16, 32, …, 96 and 100

	// A fork: the same log up to leaf 39, then other leaves, under checkpoints signed
	// with the same key (a compromised or misbehaving appliance).
	forkLog := newTestLog(t, key)
	buildLogWith(t, forkLog, key, 0, 100, 4, 16, func(t testing.TB, i int) Leaf {
		lf := testLeaf(t, i)
		if i >= 40 {
			lf.Actor = ActorSystem
		}
		return lf
	})

	cases := []struct {
		name   string
		tamper func(t *testing.T, dir string) (against string)
		pin    bool   // verify with the pinned key instead of the export's own
		want   []want // each must be reported
		only   bool   // and nothing else
		detail string // a reported detail must contain this
	}{
		{name: "untouched", only: true},
		{
			name: "one changed byte in a leaf",
			tamper: func(t *testing.T, dir string) string {
				editLeaf(t, dir, 37, false, func(b []byte) []byte { return bytes.Replace(b, []byte("a change"), []byte("b change"), 1) })
				return ""
			},
			want: []want{{problemLeafHash, 37}, {problemCheckpointRoot, 48}},
		},
		{
			name: "one changed byte in a leaf, its hash recomputed",
			tamper: func(t *testing.T, dir string) string {
				editLeaf(t, dir, 37, true, func(b []byte) []byte { return bytes.Replace(b, []byte("a change"), []byte("b change"), 1) })
				return ""
			},
			// Nothing in the export can tell which leaf of 32..47 changed; the report
			// names that range, and Compare with an earlier export names the leaf.
			want:   []want{{problemCheckpointRoot, 48}},
			detail: "a leaf in 32..47 differs",
		},
		{
			name: "one changed byte in leaves.txt",
			tamper: func(t *testing.T, dir string) string {
				lines := readLines(t, dir)
				f := strings.Fields(lines[37])
				b := []byte(f[2])
				mid := len(b) / 2
				if b[mid] == 'A' {
					b[mid] = 'B'
				} else {
					b[mid] = 'A'
				}
				lines[37] = f[0] + " " + f[1] + " " + string(b) + "\n"
				writeLines(t, dir, lines)
				return ""
			},
			want: []want{{problemLeafHash, 37}, {problemCheckpointRoot, 48}},
		},
		{
			name: "a dropped leaf",
			tamper: func(t *testing.T, dir string) string {
				lines := readLines(t, dir)
				writeLines(t, dir, slices.Delete(lines, 37, 38))
				return ""
			},
			want: []want{{problemLeafMissing, 37}, {problemCheckpointRoot, 48}},
		},
		{
			name: "two leaves swapped",
			tamper: func(t *testing.T, dir string) string {
				lines := readLines(t, dir)
				lines[37], lines[38] = lines[38], lines[37]
				writeLines(t, dir, lines)
				return ""
			},
			want: []want{{problemLeafOrder, 37}, {problemCheckpointRoot, 48}},
		},
		{
			name: "two leaves swapped and renumbered",
			tamper: func(t *testing.T, dir string) string {
				lines := readLines(t, dir)
				a, b := strings.SplitN(lines[37], " ", 2), strings.SplitN(lines[38], " ", 2)
				lines[37], lines[38] = a[0]+" "+b[1], b[0]+" "+a[1]
				writeLines(t, dir, lines)
				return ""
			},
			want: []want{{problemLeafIndex, 37}, {problemLeafIndex, 38}, {problemCheckpointRoot, 48}},
		},
		{
			name: "truncated before the last checkpoint",
			tamper: func(t *testing.T, dir string) string {
				writeLines(t, dir, readLines(t, dir)[:70])
				return ""
			},
			want: []want{{problemTruncated, 70}},
			only: true,
		},
		{
			name: "a checkpoint signed by another key",
			tamper: func(t *testing.T, dir string) string {
				c := readCP(t, dir, 48)
				if err := c.Sign(other); err != nil {
					t.Fatal(err)
				}
				writeCP(t, dir, c)
				return ""
			},
			want: []want{{problemCheckpointSignature, 48}},
			only: true,
		},
		{
			name: "a checkpoint whose root disagrees",
			tamper: func(t *testing.T, dir string) string {
				c := readCP(t, dir, 48)
				c.Root = readCP(t, dir, 32).Root
				if err := c.Sign(key); err != nil {
					t.Fatal(err)
				}
				writeCP(t, dir, c)
				return ""
			},
			want: []want{{problemCheckpointRoot, 48}},
			only: true,
		},
		{
			name: "a line cut short",
			tamper: func(t *testing.T, dir string) string {
				lines := readLines(t, dir)
				lines[37] = lines[37][:len(lines[37])/2] + "\n"
				writeLines(t, dir, lines)
				return ""
			},
			want: []want{{problemLeafMalformed, 37}, {problemCheckpointRoot, 48}},
		},
		{
			name: "a checkpoint edited without signing it again",
			tamper: func(t *testing.T, dir string) string {
				c := readCP(t, dir, 48)
				c.Root = readCP(t, dir, 32).Root
				writeCP(t, dir, c)
				return ""
			},
			want: []want{{problemCheckpointSignature, 48}},
			only: true,
		},
		{
			name: "a checkpoint's file renamed",
			tamper: func(t *testing.T, dir string) string {
				for _, ext := range []string{".txt", ".sig"} {
					if err := os.Rename(cpFile(dir, 48)+ext, cpFile(dir, 47)+ext); err != nil {
						t.Fatal(err)
					}
				}
				return ""
			},
			want: []want{{problemCheckpointMalformed, 47}},
			only: true,
		},
		{
			name: "every checkpoint removed",
			tamper: func(t *testing.T, dir string) string {
				os.RemoveAll(filepath.Join(dir, exportCheckpoints))
				os.Remove(filepath.Join(dir, exportLatest+".txt"))
				return ""
			},
			want: []want{{problemUnsigned, 0}},
			only: true,
		},
		{
			name: "the export's key replaced",
			tamper: func(t *testing.T, dir string) string {
				pemBytes, _ := MarshalPublicKey(other.Public())
				os.WriteFile(filepath.Join(dir, exportKey), pemBytes, 0o644)
				return ""
			},
			pin:  true,
			want: []want{{problemKey, 0}},
			only: true,
		},
		{
			name: "a forked history",
			tamper: func(t *testing.T, dir string) string {
				return exportLog(t, forkLog, 0)
			},
			want: []want{{problemFork, 40}, {problemForkCheckpoint, 48}, {problemForkCheckpoint, 48}}, // each export's checkpoint 48 against the other's leaves
			only: true,
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := exportLog(t, l, 0)
			against := ""
			if c.tamper != nil {
				against = c.tamper(t, dir)
			}
			var pinned any
			if c.pin {
				pinned = key.Public()
			}
			r, err := Verify(os.DirFS(dir), pinned)
			if err != nil {
				t.Fatal(err)
			}
			got := r.Problems
			if against != "" {
				ra, err := Verify(os.DirFS(against), pinned)
				if err != nil || !ra.OK() {
					t.Fatalf("the other export on its own: %v %v", err, ra.Problems)
				}
				ps, err := compare(os.DirFS(dir), os.DirFS(against), pinned)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, ps...)
			}
			for _, w := range c.want {
				if !has(got, w) {
					t.Errorf("not reported: %s at %d", w.kind, w.index)
				}
			}
			if c.only && len(got) != len(c.want) {
				t.Errorf("reported %d problems, want %d", len(got), len(c.want))
			}
			if c.detail != "" && !slices.ContainsFunc(got, func(p Problem) bool { return strings.Contains(p.Detail, c.detail) }) {
				t.Errorf("no problem says %q", c.detail)
			}
			if t.Failed() || testing.Verbose() {
				for _, p := range got {
					t.Log(p)
				}
			}
		})
	}
}

func TestExportFrom(t *testing.T) {
	key := newKey(t)
	l := newTestLog(t, key)
	buildLog(t, l, key, 0, 100, 4, 16)
	full := exportLog(t, l, 0)
	part := exportLog(t, l, 48)
	r, err := Verify(os.DirFS(part), nil)
	if err != nil || !r.OK() || r.From != 48 || r.Size != 100 || r.Checkpoints != 5 {
		t.Fatalf("export from 48: %v %+v", err, r)
	}
	ps, err := compare(os.DirFS(full), os.DirFS(part), nil)
	if err != nil || len(ps) != 0 {
		t.Fatalf("compare full and part: %v %v", err, ps)
	}
	// A start range that is not the log's fails at the first checkpoint.
	start, _ := os.ReadFile(filepath.Join(part, exportStart))
	lines := strings.Split(string(start), "\n")
	lines[1] = base64.StdEncoding.EncodeToString(make([]byte, 32))
	os.WriteFile(filepath.Join(part, exportStart), []byte(strings.Join(lines, "\n")), 0o644)
	r, err = Verify(os.DirFS(part), nil)
	if err != nil || !has(r.Problems, want{problemCheckpointRoot, 48}) {
		t.Fatalf("changed start range: %v %v", err, r.Problems)
	}
	ps, err = compare(os.DirFS(full), os.DirFS(part), nil)
	if err != nil || !has(ps, want{problemForkCheckpoint, 48}) {
		t.Fatalf("compare with a changed start range: %v %v", err, ps)
	}
	// Exports that share nothing cannot be compared.
	l2 := newTestLog(t, key)
	buildLog(t, l2, key, 0, 10, 5, 0)
	if _, err := compare(os.DirFS(exportLog(t, l2, 0)), os.DirFS(exportLog(t, l, 96)), nil); err == nil {
		t.Error("compared exports that do not overlap")
	}
	if err := func() error { _, err := Export(context.Background(), full, l.Source(), 0); return err }(); err == nil {
		t.Error("exported into a directory that is not empty")
	}
}

func TestVerifyDirsOutput(t *testing.T) {
	key := newKey(t)
	l := newTestLog(t, key)
	buildLog(t, l, key, 0, 40, 4, 16)
	dir := exportLog(t, l, 0)
	keyFile := filepath.Join(t.TempDir(), "audit.pub.pem")
	pemBytes, _ := MarshalPublicKey(key.Public())
	os.WriteFile(keyFile, pemBytes, 0o644)

	var out bytes.Buffer
	if err := VerifyDirs(&out, keyFile, dir); err != nil {
		t.Fatalf("%v\n%s", err, &out)
	}
	if !strings.HasPrefix(out.String(), `ok: log "inkan.test/cluster-1", leaves 0..39, 3 signed checkpoints`) {
		t.Errorf("clean export:\n%s", &out)
	}
	lines := readLines(t, dir)
	writeLines(t, dir, slices.Delete(lines, 20, 21))
	out.Reset()
	err := VerifyDirs(&out, keyFile, dir)
	if !errors.Is(err, ErrProblems) {
		t.Errorf("error %v, want ErrProblems", err)
	}
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(got) != 3 || got[0] != "leaf 20: missing" || !strings.HasPrefix(got[1], "checkpoint 32: root does not match leaves 0..31") ||
		!strings.HasPrefix(got[2], "2 problems: ") {
		t.Errorf("dropped leaf 20:\n%s", &out)
	}
}

// TestExportSaysWhatItWrote: Export's account of what it wrote is what Verify
// reads back, and reads as `inkan audit export` prints it.
func TestExportSaysWhatItWrote(t *testing.T) {
	key := newKey(t)
	l := newTestLog(t, key)
	buildLog(t, l, key, 0, 100, 4, 16) // checkpoints at 16, 32, …, 96 and 100
	for _, c := range []struct {
		from        uint64
		checkpoints int
		says        string
	}{
		{0, 7, "leaves 0..99 and 7 signed checkpoints (the newest of size 100, "},
		{96, 2, "leaves 96..99 and 2 signed checkpoints (the newest of size 100, "},
		{100, 1, "no leaves from 100 on and 1 signed checkpoint (the newest of size 100, "},
	} {
		dir := filepath.Join(t.TempDir(), "export")
		exp, err := Export(context.Background(), dir, l.Source(), c.from)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Verify(os.DirFS(dir), nil)
		if err != nil || !r.OK() {
			t.Fatalf("from %d: %v %+v", c.from, err, r)
		}
		if exp.From != r.From || exp.Size != r.Size || exp.Checkpoints != c.checkpoints || exp.Checkpoints != r.Checkpoints ||
			exp.Latest == nil || exp.Latest.Size != r.Latest.Size || exp.Dir != dir {
			t.Errorf("from %d: exported %+v, verified %+v", c.from, exp, r)
		}
		if got := exp.String(); !strings.HasPrefix(got, c.says) || !strings.HasSuffix(got, ") to "+dir) {
			t.Errorf("from %d: %q, want %q… to %s", c.from, got, c.says, dir)
		}
	}
}

// TestVerifyDirsCountsInWords: one of a thing is said in the singular.
func TestVerifyDirsCountsInWords(t *testing.T) {
	key := newKey(t)
	l := newTestLog(t, key)
	buildLog(t, l, key, 0, 10, 5, 0) // one checkpoint, at the end
	dir := exportLog(t, l, 0)
	var out bytes.Buffer
	if err := VerifyDirs(&out, "", dir); err != nil {
		t.Fatalf("%v\n%s", err, &out)
	}
	if !strings.HasPrefix(out.String(), `ok: log "inkan.test/cluster-1", leaves 0..9, 1 signed checkpoint, newest of size 10`) {
		t.Errorf("one checkpoint:\n%s", &out)
	}
	c := readCP(t, dir, 10)
	c.Signature[len(c.Signature)/2] ^= 1
	writeCP(t, dir, c)
	out.Reset()
	err := VerifyDirs(&out, "", dir)
	if !errors.Is(err, ErrProblems) || !strings.HasSuffix(err.Error(), ": 1 problem") {
		t.Errorf("error %v, want ErrProblems ending in 1 problem", err)
	}
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(got) != 2 || !strings.HasPrefix(got[0], "checkpoint 10: ") || !strings.HasPrefix(got[1], "1 problem: log ") {
		t.Errorf("one bad signature:\n%s", &out)
	}
	// Two leaves dropped in a row: the first and the one after it.
	dir = exportLog(t, l, 0)
	writeLines(t, dir, slices.Delete(readLines(t, dir), 4, 6))
	r, err := Verify(os.DirFS(dir), nil)
	if err != nil || !slices.ContainsFunc(r.Problems, func(p Problem) bool {
		return p.Kind == problemLeafMissing && p.Index == 4 && p.Detail == "missing, and leaf 5 after it"
	}) {
		t.Errorf("two leaves dropped: %v %v", err, r.Problems)
	}
}

func TestEmptyLog(t *testing.T) {
	key := newKey(t)
	l := newTestLog(t, key)
	c, err := l.SignCheckpoint(key, testTime)
	if err != nil || c.Size != 0 || !bytes.Equal(c.Root, hasher().EmptyRoot()) {
		t.Fatalf("checkpoint of the empty log: %+v %v", c, err)
	}
	dir := exportLog(t, l, 0)
	r, err := Verify(os.DirFS(dir), key.Public())
	if err != nil || !r.OK() || r.Size != 0 || r.Checkpoints != 1 {
		t.Fatalf("verify the empty log: %v %+v", err, r)
	}
	// audit/log's TestEmptyLog: the node's log signs it too and proves nothing in it.
}

// TestCommandsNameAMissingExportDir: verify and prove given a path that names
// nothing, or a file, say so of the path itself (fs.ErrNotExist, ENOTDIR), not
// of an audit.pub.pem missing inside it.
func TestCommandsNameAMissingExportDir(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-export")
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, path string
		want       error
	}{
		{"missing", missing, fs.ErrNotExist},
		{"a file", file, syscall.ENOTDIR},
	} {
		for cmd, run := range map[string]func() error{
			"verify":        func() error { return VerifyDirs(io.Discard, "", c.path) },
			"verify two":    func() error { return VerifyDirs(io.Discard, "", dir, c.path) },
			"prove":         func() error { return ProveDir(io.Discard, "", c.path, "01") },
			"prove --token": func() error { return ProveTokenDir(io.Discard, "", c.path, file) },
		} {
			t.Run(c.name+"/"+cmd, func(t *testing.T) {
				err := run()
				if !errors.Is(err, c.want) {
					t.Fatalf("err = %v, want %v", err, c.want)
				}
				if !strings.Contains(err.Error(), c.path) || strings.Contains(err.Error(), "audit.pub.pem") {
					t.Errorf("%q does not speak of %s itself", err, c.path)
				}
			})
		}
	}
}
