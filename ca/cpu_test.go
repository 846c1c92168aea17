package ca

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"testing"
	"text/tabwriter"
)

// CPU per node in a benchmark that runs a whole cluster in one process.
//
// The benchmark opens node i under the pprof label node=node<i> (goroutines
// inherit their creator's labels, so Raft's goroutines, the transport's, the
// FSM's and the authority's carry it) and runs its requests under the leader's
// label; a CPU profile of the timed part, summed by that label, splits the
// process's CPU into the leader's, the followers' and the unlabelled rest (the
// runtime's own goroutines: background GC marking and sweeping, the scavenger,
// timers). A sample taken in C (SoftHSM) carries the labels of the goroutine
// that called it.
//
// The profile is decoded here with encoding/binary rather than with
// github.com/google/pprof/profile, which is not in the module graph: only the
// few fields needed are read (sample types and values, labels, locations,
// functions, strings).

// nodeLabel is the pprof label that names a node of a test cluster.
const nodeLabel = "node"

// nodeName is node i's label value: not a bare number, which go tool pprof's
// -tagfocus would take for a numeric range.
func nodeName(i int) string { return fmt.Sprintf("node%d", i) }

// nodeLabels returns ctx with node i's label.
func nodeLabels(ctx context.Context, i int) context.Context {
	return pprof.WithLabels(ctx, pprof.Labels(nodeLabel, nodeName(i)))
}

// cpuWindow is a CPU profile of a benchmark's timed part.
type cpuWindow struct {
	buf  bytes.Buffer
	name string // where to write the profile and the table (CA_BENCH_CPU), without suffix; or ""
}

// startCPU starts a CPU profile into memory, unless the test binary profiles
// already (-test.cpuprofile: then go tool pprof on that file is the way) or
// CA_BENCH_CPU=off, nor for a run of one op (the benchmark's first, a probe).
// With CA_BENCH_CPU=DIR the profile is also written to DIR, for go tool pprof.
// It returns nil when it does not profile.
func startCPU(b *testing.B) *cpuWindow {
	b.Helper()
	env := os.Getenv("CA_BENCH_CPU")
	if env == "off" || b.N < 2 {
		return nil
	}
	if f := flag.Lookup("test.cpuprofile"); f != nil && f.Value.String() != "" {
		b.Log("no per-node CPU figures: the test binary profiles already (-test.cpuprofile)")
		return nil
	}
	w := &cpuWindow{}
	if env != "" {
		w.name = filepath.Join(env, strings.NewReplacer("/", "_", "=", "-").Replace(b.Name()))
	}
	if err := pprof.StartCPUProfile(&w.buf); err != nil {
		b.Logf("no per-node CPU figures: %v", err)
		return nil
	}
	return w
}

// stop ends the profile and reports the CPU of the node labelled leader, of the
// other labelled nodes (followers) and of the unlabelled rest, in µs per op for
// n ops (unit names one: "cert", "pair"), and logs where each goes, by group.
// With CA_BENCH_CPU=DIR it writes the profile, and the table of the groups with
// the leader's heaviest functions in each, to DIR.
func (w *cpuWindow) stop(b *testing.B, leader int, n int, unit string) {
	b.Helper()
	if w == nil {
		return
	}
	pprof.StopCPUProfile()
	samples, err := parseCPUProfile(w.buf.Bytes())
	if err != nil {
		b.Errorf("per-node CPU: %v", err)
		return
	}
	u := splitCPU(samples, nodeName(leader))
	per := func(ns int64) float64 { return float64(ns) / 1e3 / float64(n) }
	b.ReportMetric(per(u.leader.total), "leader-cpu-us/"+unit)
	b.ReportMetric(per(u.followers.total), "followers-cpu-us/"+unit)
	b.ReportMetric(per(u.other.total), "other-cpu-us/"+unit)
	// The benchmark trims its log to 10 lines: one line per role.
	b.Logf("CPU µs per %s, %d of them, leader node %d, profile at 100 Hz (a sample counts in the first group that matches its stack):\n"+
		"leader %s\nfollowers %s\nunlabelled %s", unit, n, leader, u.leader.line(per), u.followers.line(per), u.other.line(per))
	if u.leader.total > 0 && u.followers.total == 0 {
		// The followers always append and apply: none of their CPU under
		// their label says the labels did not reach their goroutines.
		b.Log("no sample of a follower: are the nodes opened under their labels?")
	}
	if w.name != "" {
		table := fmt.Sprintf("%s: CPU µs per %s, %d of them, leader node %d\n%s", b.Name(), unit, n, leader, u.table(per))
		if err := errors.Join(os.WriteFile(w.name+".pprof", w.buf.Bytes(), 0o644), os.WriteFile(w.name+".txt", []byte(table), 0o644)); err != nil {
			b.Error(err)
		}
		b.Logf("%s.txt; go tool pprof -tagfocus %s=%s -top %s.pprof", w.name, nodeLabel, nodeName(leader), w.name)
	}
}

// line is the total and the groups, the heaviest first.
func (c *cpuUse) line(per func(int64) float64) string {
	gs := slices.SortedFunc(maps.Keys(c.groups), func(a, b string) int {
		return cmp.Or(cmp.Compare(c.groups[b], c.groups[a]), strings.Compare(a, b))
	})
	out := make([]string, len(gs))
	for i, g := range gs {
		out[i] = fmt.Sprintf("%s %.1f", g, per(c.groups[g]))
	}
	return fmt.Sprintf("%.1f: %s", per(c.total), strings.Join(out, ", "))
}

// cpuSample is one sample of a CPU profile: its CPU time, labels and stack
// (function names, the innermost first, inlined calls included).
type cpuSample struct {
	ns     int64
	labels map[string]string
	stack  []string
}

// cpuUse is CPU time summed by group.
type cpuUse struct {
	total  int64
	groups map[string]int64
	leaves map[string]map[string]int64 // group → innermost function → time
}

func (c *cpuUse) add(s cpuSample) {
	g := cpuGroupOf(s.stack)
	c.total += s.ns
	if c.groups == nil {
		c.groups, c.leaves = map[string]int64{}, map[string]map[string]int64{}
	}
	c.groups[g] += s.ns
	if c.leaves[g] == nil {
		c.leaves[g] = map[string]int64{}
	}
	leaf := "?"
	if len(s.stack) > 0 {
		leaf = s.stack[0]
	}
	c.leaves[g][leaf] += s.ns
}

// cpuSplit is a profile's CPU by node role.
type cpuSplit struct{ leader, followers, other cpuUse }

func splitCPU(samples []cpuSample, leader string) cpuSplit {
	var u cpuSplit
	for _, s := range samples {
		switch node, ok := s.labels[nodeLabel]; {
		case !ok:
			u.other.add(s)
		case node == leader:
			u.leader.add(s)
		default:
			u.followers.add(s)
		}
	}
	return u
}

// table is the groups with their time per op for the leader, the followers and
// the rest, and the leader's three heaviest innermost functions in each group.
func (u cpuSplit) table(per func(int64) float64) string {
	var sb strings.Builder
	tw := tabwriter.NewWriter(&sb, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "group\tleader\tfollowers\tunlabelled\t\tthe leader's heaviest functions\t")
	row := func(name string, l, f, o int64, top string) {
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%.1f\t\t%s\t\n", name, per(l), per(f), per(o), top)
	}
	names := []string{}
	for _, g := range cpuGroups {
		names = append(names, g.name)
	}
	for _, g := range append(names, cpuOther) {
		l, f, o := u.leader.groups[g], u.followers.groups[g], u.other.groups[g]
		if l+f+o == 0 {
			continue
		}
		row(g, l, f, o, topLeaves(u.leader.leaves[g], 3, per))
	}
	row("total", u.leader.total, u.followers.total, u.other.total, "")
	tw.Flush()
	return sb.String()
}

// topLeaves names the k functions with the most time in m, with their time per op.
func topLeaves(m map[string]int64, k int, per func(int64) float64) string {
	names := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		return cmp.Or(cmp.Compare(m[b], m[a]), strings.Compare(a, b))
	})
	var out []string
	for _, n := range names[:min(k, len(names))] {
		out = append(out, fmt.Sprintf("%s %.1f", shortFunc(n), per(m[n])))
	}
	return strings.Join(out, ", ")
}

// shortFunc drops a function name's import path and generic shapes.
func shortFunc(name string) string {
	if i := strings.Index(name, "["); i > 0 {
		name = name[:i]
	}
	if i := strings.LastIndex(name, "/"); i >= 0 {
		name = name[i+1:]
	}
	return name
}

// cpuGroup is where a sample's CPU goes: the first group (in cpuGroups' order)
// each of whose lists has a pattern that matches a function of the sample's
// stack. A pattern ending in "*" matches a prefix, any other one the whole name.
//
// The groups: SoftHSM's C_SignInit and C_Sign (the time in C), the rest of
// PKCS#11 and hsm; GC work (assists on any goroutine; the background workers
// are unlabelled); x509.CreateCertificate's signature with the throwaway key,
// its check of that signature, and the rest of it (building and encoding the
// TBS); the leader's check of the HSM's signature over the TBS; lint; the rest
// of prepare (serial, key ID); the Raft log store (raft-boltdb with its
// fsyncs); the FSM's apply (the state file's bbolt transaction, its fsyncs, the
// ca handlers and their decoding); reads and writes on sockets with TLS (Raft's
// transport, cluster calls); encoding elsewhere (CBOR, msgpack, ASN.1); the rest
// of Raft (replication, its loops and metrics); the rest of inkan's code
// (submitting, group commit, the request goroutines); the rest of the runtime.
type cpuGroup struct {
	name string
	when [][]string
}

const cpuOther = "other"

var (
	x509Build   = []string{"crypto/x509.CreateCertificate*"}
	sigCheck    = []string{"crypto/x509.checkSignature", "crypto/x509.(*Certificate).CheckSignature*", "crypto/ecdsa.Verify*", "crypto/ecdsa.verify*", "crypto/rsa.Verify*", "crypto/ed25519.Verify*"}
	softwareSig = []string{"crypto.SignMessage", "crypto/ecdsa.Sign*", "crypto/ecdsa.sign*", "crypto/ecdsa.(*PrivateKey).Sign", "crypto/rsa.Sign*", "crypto/ed25519.Sign*", "crypto/ed25519.PrivateKey.Sign"}
)

var cpuGroups = []cpuGroup{
	{"HSM C_SignInit", [][]string{{"github.com/miekg/pkcs11._Cfunc_SignInit"}}},
	{"HSM C_Sign", [][]string{{"github.com/miekg/pkcs11._Cfunc_Sign"}}},
	{"HSM other", [][]string{{"github.com/miekg/pkcs11.*", "github.com/inkan-pki/inkan/hsm.*", "github.com/inkan-pki/inkan/hsm/*"}}},
	{"GC", [][]string{{"runtime.gcBgMarkWorker", "runtime.gcAssistAlloc*", "runtime.gcDrain*", "runtime.markroot*",
		"runtime.gcStart", "runtime.gcMarkDone", "runtime.gcMarkTermination", "runtime.bgsweep", "runtime.bgscavenge", "runtime.sweepone", "runtime.deductSweepCredit"}}},
	{"x509 throwaway signature", [][]string{x509Build, softwareSig}},
	{"x509 self-check", [][]string{x509Build, sigCheck}},
	{"x509 TBS build", [][]string{x509Build}},
	{"HSM signature check", [][]string{sigCheck}},
	{"lint", [][]string{{"github.com/zmap/*", "github.com/inkan-pki/inkan/ca.(*linter).lint", "github.com/inkan-pki/inkan/ca.newLinter"}}},
	{"prepare", [][]string{{"github.com/inkan-pki/inkan/ca.prepare*", "github.com/inkan-pki/inkan/ca.(*Authority).prepare*"}}},
	{"Raft log store", [][]string{{"github.com/hashicorp/raft-boltdb/*"}}},
	{"FSM apply", [][]string{{"github.com/inkan-pki/inkan/cluster.(*stateMachine).*", "github.com/hashicorp/raft.(*Raft).runFSM*"}}},
	{"sockets and TLS", [][]string{{"net.*", "crypto/tls.*", "internal/poll.*"}}},
	{"encoding", [][]string{{"github.com/fxamacker/cbor/*", "github.com/hashicorp/go-msgpack/*", "encoding/*", "golang.org/x/crypto/cryptobyte*"}}},
	{"Raft rest", [][]string{{"github.com/hashicorp/raft.*", "github.com/inkan-pki/inkan/cluster.(*netLayer)*"}}},
	{"ca/cluster rest", [][]string{{"github.com/inkan-pki/inkan/*"}}},
	{"runtime rest", [][]string{{"runtime.*"}}},
}

func cpuGroupOf(stack []string) string {
	for _, g := range cpuGroups {
		all := true
		for _, pats := range g.when {
			all = all && slices.ContainsFunc(stack, func(fn string) bool { return matchFunc(pats, fn) })
		}
		if all {
			return g.name
		}
	}
	return cpuOther
}

func matchFunc(pats []string, fn string) bool {
	for _, p := range pats {
		if pre, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(fn, pre) || p == fn {
			return true
		}
	}
	return false
}

var errProfile = errors.New("malformed CPU profile")

// parseCPUProfile reads the samples of a gzipped profile.proto CPU profile
// (github.com/google/pprof/proto/profile.proto), with their CPU nanoseconds.
func parseCPUProfile(data []byte) ([]cpuSample, error) {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errProfile, err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errProfile, err)
	}
	var strs []string
	var types, samples, locs, funcs [][]byte
	err = protoFields(raw, func(num int, _ uint64, b []byte) error {
		switch num {
		case 1:
			types = append(types, b)
		case 2:
			samples = append(samples, b)
		case 4:
			locs = append(locs, b)
		case 5:
			funcs = append(funcs, b)
		case 6:
			strs = append(strs, string(b))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	str := func(i uint64) (string, error) {
		if i >= uint64(len(strs)) {
			return "", fmt.Errorf("%w: string %d of %d", errProfile, i, len(strs))
		}
		return strs[i], nil
	}
	// The value that counts CPU nanoseconds.
	value := -1
	for i, t := range types {
		var typ, unit string
		err := protoFields(t, func(num int, v uint64, _ []byte) error {
			var err error
			switch num {
			case 1:
				typ, err = str(v)
			case 2:
				unit, err = str(v)
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		if typ == "cpu" && unit == "nanoseconds" {
			value = i
		}
	}
	if value < 0 {
		return nil, fmt.Errorf("%w: no cpu/nanoseconds sample type", errProfile)
	}
	names := map[uint64]string{} // function ID → name
	for _, f := range funcs {
		var id, name uint64
		if err := protoFields(f, func(num int, v uint64, _ []byte) error {
			switch num {
			case 1:
				id = v
			case 2:
				name = v
			}
			return nil
		}); err != nil {
			return nil, err
		}
		if names[id], err = str(name); err != nil {
			return nil, err
		}
	}
	frames := map[uint64][]string{} // location ID → function names, innermost first
	for _, l := range locs {
		var id uint64
		var fns []string
		if err := protoFields(l, func(num int, v uint64, b []byte) error {
			switch num {
			case 1:
				id = v
			case 4: // Line
				return protoFields(b, func(num int, v uint64, _ []byte) error {
					if num == 1 {
						fns = append(fns, names[v])
					}
					return nil
				})
			}
			return nil
		}); err != nil {
			return nil, err
		}
		frames[id] = fns
	}
	out := make([]cpuSample, 0, len(samples))
	for _, sb := range samples {
		s := cpuSample{labels: map[string]string{}}
		var values []uint64
		if err := protoFields(sb, func(num int, v uint64, b []byte) error {
			switch num {
			case 1:
				ids, err := protoInts(v, b)
				for _, id := range ids {
					s.stack = append(s.stack, frames[id]...)
				}
				return err
			case 2:
				vs, err := protoInts(v, b)
				values = append(values, vs...)
				return err
			case 3: // Label
				var k, vs uint64
				if err := protoFields(b, func(num int, v uint64, _ []byte) error {
					switch num {
					case 1:
						k = v
					case 2:
						vs = v
					}
					return nil
				}); err != nil {
					return err
				}
				key, err := str(k)
				if err != nil {
					return err
				}
				s.labels[key], err = str(vs)
				return err
			}
			return nil
		}); err != nil {
			return nil, err
		}
		if value >= len(values) {
			return nil, fmt.Errorf("%w: a sample has %d values, want %d", errProfile, len(values), len(types))
		}
		s.ns = int64(values[value])
		out = append(out, s)
	}
	return out, nil
}

// protoFields calls fn with each field of the protobuf message m: its number,
// and its value (varint and fixed fields) or its bytes (length-delimited ones).
// A varint field's bytes are nil, a length-delimited field's value its length.
func protoFields(m []byte, fn func(num int, v uint64, b []byte) error) error {
	for len(m) > 0 {
		key, n := binary.Uvarint(m)
		if n <= 0 {
			return fmt.Errorf("%w: field key", errProfile)
		}
		m = m[n:]
		var v uint64
		var b []byte
		switch key & 7 {
		case 0:
			if v, n = binary.Uvarint(m); n <= 0 {
				return fmt.Errorf("%w: varint", errProfile)
			}
			m = m[n:]
		case 1:
			if len(m) < 8 {
				return fmt.Errorf("%w: fixed64", errProfile)
			}
			v, m = binary.LittleEndian.Uint64(m), m[8:]
		case 2:
			if v, n = binary.Uvarint(m); n <= 0 || v > uint64(len(m)-n) {
				return fmt.Errorf("%w: length", errProfile)
			}
			b, m = m[n:n+int(v)], m[n+int(v):]
			if b == nil {
				b = []byte{}
			}
		case 5:
			if len(m) < 4 {
				return fmt.Errorf("%w: fixed32", errProfile)
			}
			v, m = uint64(binary.LittleEndian.Uint32(m)), m[4:]
		default:
			return fmt.Errorf("%w: wire type %d", errProfile, key&7)
		}
		if err := fn(int(key>>3), v, b); err != nil {
			return err
		}
	}
	return nil
}

// protoInts is a repeated integer field's values: one varint (b is nil), or
// packed varints (b holds them).
func protoInts(v uint64, b []byte) ([]uint64, error) {
	if b == nil {
		return []uint64{v}, nil
	}
	var out []uint64
	for len(b) > 0 {
		x, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, fmt.Errorf("%w: packed varint", errProfile)
		}
		out = append(out, x)
		b = b[n:]
	}
	return out, nil
}

// cpuWork hashes n MiB: CPU work of a size that does not depend on the load.
//
//go:noinline
func cpuWork(n int) [32]byte {
	buf := make([]byte, 1<<20)
	var sum [32]byte
	for range n {
		sum = sha256.Sum256(append(buf[:0:0], sum[:]...))
		sum = sha256.Sum256(buf)
	}
	return sum
}

// TestCPUProfileByLabel profiles work done by a goroutine started under a node's
// label and by one without, and checks that the decoded profile gives each its
// own CPU, with the function's name in its stacks.
func TestCPUProfileByLabel(t *testing.T) {
	if f := flag.Lookup("test.cpuprofile"); f != nil && f.Value.String() != "" {
		t.Skip("the test binary profiles already")
	}
	var buf bytes.Buffer
	if err := pprof.StartCPUProfile(&buf); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	pprof.Do(context.Background(), pprof.Labels(nodeLabel, nodeName(7)), func(context.Context) {
		go func() { // inherits node=node7
			defer close(done)
			cpuWork(100)
		}()
	})
	cpuWork(100) // unlabelled
	<-done
	pprof.StopCPUProfile()
	samples, err := parseCPUProfile(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	u := splitCPU(samples, nodeName(7))
	inWork := func(s cpuSample) bool { return slices.Contains(s.stack, "github.com/inkan-pki/inkan/ca.cpuWork") }
	var labelled, unlabelled int64
	for _, s := range samples {
		if !inWork(s) {
			continue
		}
		if s.labels[nodeLabel] == nodeName(7) {
			labelled += s.ns
		} else if len(s.labels) == 0 {
			unlabelled += s.ns
		}
	}
	if labelled == 0 || unlabelled == 0 {
		t.Fatalf("CPU in cpuWork: %d ns under node=node7, %d ns unlabelled; want both > 0 (%d samples)", labelled, unlabelled, len(samples))
	}
	if u.leader.total < labelled || u.other.total < unlabelled || u.followers.total != 0 {
		t.Errorf("split: leader %d ns (cpuWork %d), others %d ns (cpuWork %d), followers %d ns (want 0)",
			u.leader.total, labelled, u.other.total, unlabelled, u.followers.total)
	}
}

func TestParseCPUProfileRefuses(t *testing.T) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte{0x12, 0x05, 0x01}) // field 2, 5 bytes long, 1 there
	zw.Close()
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"not gzip", []byte("profile")},
		{"truncated message", gz.Bytes()},
		{"no cpu sample type", func() []byte {
			var b bytes.Buffer
			zw := gzip.NewWriter(&b)
			zw.Write([]byte{0x32, 0x00}) // an empty string, nothing else
			zw.Close()
			return b.Bytes()
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := parseCPUProfile(tc.data); !errors.Is(err, errProfile) {
				t.Errorf("err = %v, want errProfile", err)
			}
		})
	}
}

func TestCPUGroupOf(t *testing.T) {
	const inkan = "github.com/inkan-pki/inkan/"
	for _, tc := range []struct {
		name  string
		stack []string // innermost first
		want  string
	}{
		{"C_SignInit", []string{"runtime.cgocall", "github.com/miekg/pkcs11._Cfunc_SignInit", "github.com/miekg/pkcs11.(*Ctx).SignInit", inkan + "hsm.(*Signer).Sign"}, "HSM C_SignInit"},
		{"C_Sign", []string{"runtime.cgocall", "github.com/miekg/pkcs11._Cfunc_Sign", "github.com/miekg/pkcs11.(*Ctx).Sign", inkan + "hsm.(*Signer).Sign"}, "HSM C_Sign"},
		{"throwaway signature", []string{"p256MulInternal", "crypto/ecdsa.SignASN1", "crypto/x509.CreateCertificate", inkan + "ca.prepare"}, "x509 throwaway signature"},
		{"x509's check of its own signature", []string{"crypto/ecdsa.VerifyASN1", "crypto/x509.checkSignature", "crypto/x509.CreateCertificate", inkan + "ca.prepare"}, "x509 self-check"},
		{"TBS encoding", []string{"runtime.mallocgc", "crypto/x509.buildCertExtensions", "crypto/x509.CreateCertificate", inkan + "ca.prepare"}, "x509 TBS build"},
		{"the leader's check", []string{"crypto/ecdsa.VerifyASN1", "crypto/x509.checkSignature", "crypto/x509.(*Certificate).CheckSignature", inkan + "ca.(*Authority).runPipeline"}, "HSM signature check"},
		{"GC assist in an apply", []string{"runtime.scanObject", "runtime.gcDrainN", "runtime.gcAssistAlloc", "runtime.mallocgc", inkan + "cluster.(*stateMachine).ApplyBatch"}, "GC"},
		{"log store fsync", []string{"internal/runtime/syscall/linux.Syscall6", "internal/poll.(*FD).Fsync", "go.etcd.io/bbolt.fdatasync", "github.com/hashicorp/raft-boltdb/v2.(*BoltStore).StoreLogs", "github.com/hashicorp/raft.(*Raft).leaderLoop"}, "Raft log store"},
		{"CBOR in an apply", []string{"github.com/fxamacker/cbor/v2.(*decoder).parseToValue", inkan + "ca.applyIntent", inkan + "cluster.(*stateMachine).ApplyBatch", "github.com/hashicorp/raft.(*Raft).runFSM"}, "FSM apply"},
		{"CBOR of a command", []string{"github.com/fxamacker/cbor/v2.(*encoder).marshal", inkan + "ca.intentCommand"}, "encoding"},
		{"socket write", []string{"internal/runtime/syscall/linux.Syscall6", "internal/poll.(*FD).Write", "crypto/tls.(*Conn).Write", "github.com/hashicorp/raft.(*NetworkTransport).AppendEntries"}, "sockets and TLS"},
		{"msgpack of an RPC", []string{"github.com/hashicorp/go-msgpack/v2/codec.(*Encoder).Encode", "github.com/hashicorp/raft.sendRPC"}, "encoding"},
		{"replication", []string{"runtime.mapaccess1_faststr", "github.com/hashicorp/raft.(*Raft).replicateTo"}, "Raft rest"},
		{"zlint", []string{"github.com/zmap/zlint/v3.LintCertificateEx", inkan + "ca.(*linter).lint", inkan + "ca.prepare"}, "lint"},
		{"the TBS without lint is not lint", []string{"runtime.mallocgc", inkan + "ca.(*linter).build", inkan + "ca.prepare"}, "prepare"},
		{"group commit", []string{"runtime.mallocgc", inkan + "ca.(*groupCommit).take"}, "ca/cluster rest"},
		{"scheduler", []string{"runtime.findRunnable", "runtime.schedule"}, "runtime rest"},
		{"nothing known", []string{"main.main"}, cpuOther},
		{"a prefix pattern is not a whole name's", []string{"github.com/miekg/pkcs11._Cfunc_SignFinal"}, "HSM other"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cpuGroupOf(tc.stack); got != tc.want {
				t.Errorf("group %q, want %q", got, tc.want)
			}
		})
	}
}
