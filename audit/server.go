package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/inkan-pki/inkan/certserial"
)

// The server side of the audit API: its routes and answers are here, beside the
// Client that reads them, so the format is written once. A node serves its own
// log through a Snapshot (audit/log), and this package needs nothing of how the
// node stores it.

// Snapshot is one consistent read of a node's log, for the audit API: every
// answer is made from one Snapshot, so its proofs and roots agree. Its
// PublicKey is nil while no audit key is recorded, and the API then answers
// "no-key".
type Snapshot interface {
	Source
	// Checkpoint is the stored checkpoint of the given size, if any.
	Checkpoint(size uint64) (Checkpoint, bool, error)
	// CheckpointsFrom is at most max stored checkpoints, of sizes from from on.
	CheckpointsFrom(from uint64, max int) ([]Checkpoint, error)
	// Leaf is the leaf at index.
	Leaf(index uint64) (Leaf, error)
	// RootAt is the tree's root at size.
	RootAt(size uint64) ([]byte, error)
	// InclusionProof is the RFC 6962 audit path of leaf index in the tree of size.
	InclusionProof(index, size uint64) ([][]byte, error)
	// ConsistencyProof is the RFC 6962 proof between the trees of sizes from and to.
	ConsistencyProof(from, to uint64) ([][]byte, error)
	// SerialLeaves is the indexes of at most max leaves about the certificate
	// whose serial is given as leaves hold it (lower-case hex).
	SerialLeaves(serial string, max int) ([]uint64, error)
}

const (
	maxSerialLeaves = 100
	contentJSON     = "application/json"
)

type problemType struct {
	name   string
	status int
	title  string
}

var (
	probBadRequest    = problemType{"bad-request", http.StatusBadRequest, "The request is not valid"}
	probNotFound      = problemType{"not-found", http.StatusNotFound, "No such audit endpoint"}
	probNoCheckpoint  = problemType{problemNoCheckpoint, http.StatusNotFound, "No checkpoint of that size"}
	probBeyondTree    = problemType{"beyond-tree", http.StatusNotFound, "The tree does not hold that many leaves"}
	probNoKey         = problemType{"no-key", http.StatusServiceUnavailable, "The audit key is not recorded yet"}
	probMethod        = problemType{"method-not-allowed", http.StatusMethodNotAllowed, "Only GET is served"}
	probUnavailable   = problemType{"unavailable", http.StatusServiceUnavailable, "The node cannot read its state"}
	errBeyondTree     = errors.New("beyond the tree")
	errNoCheckpointSz = errors.New("no checkpoint of that size")
	errNoKey          = errors.New("audit: no audit key recorded")
)

func writeProblem(w http.ResponseWriter, t problemType, detail string) {
	w.Header().Set("Content-Type", contentProblem)
	w.WriteHeader(t.status)
	_ = json.NewEncoder(w).Encode(apiProblem{Type: problemBase + t.name, Title: t.title, Status: t.status, Detail: detail})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", contentJSON)
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// NewAPI is the audit API (an http.Handler to mount under APIPrefix): view
// calls its function with one Snapshot of the log (a node's read transaction),
// once per request; pages are bounded. An error view returns that is not about
// the request is logged to log and answered 503 "unavailable".
func NewAPI(view func(fn func(Snapshot) error) error, log *slog.Logger) http.Handler {
	if log == nil {
		log = slog.Default()
	}
	return &api{view: view, log: log}
}

type api struct {
	view func(fn func(Snapshot) error) error
	log  *slog.Logger
}

func (a *api) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeProblem(w, probMethod, r.Method)
		return
	}
	q := r.URL.Query()
	p := r.URL.Path
	var err error
	switch {
	case p == pathKey:
		err = a.key(w)
	case p == pathCheckpoint:
		err = a.latest(r.Context(), w)
	case p == pathCheckpoints:
		err = a.checkpoints(w, q.Get("from"))
	case strings.HasPrefix(p, pathCheckpoints+"/"):
		err = a.checkpoint(w, strings.TrimPrefix(p, pathCheckpoints+"/"))
	case p == pathLeaves:
		err = a.leaves(r.Context(), w, q.Get("from"), q.Get("to"))
	case p == pathRange:
		err = a.rangeAt(r.Context(), w, q.Get("size"))
	case p == pathInclusion:
		err = a.inclusion(r.Context(), w, q.Get("index"), q.Get("size"))
	case p == pathConsistency:
		err = a.consistency(r.Context(), w, q.Get("from"), q.Get("to"))
	case strings.HasPrefix(p, pathSerials):
		err = a.serial(r.Context(), w, strings.TrimPrefix(p, pathSerials))
	default:
		writeProblem(w, probNotFound, p)
		return
	}
	if err != nil {
		a.fail(w, err)
	}
}

type badRequest string

func (b badRequest) Error() string { return string(b) }

func (a *api) fail(w http.ResponseWriter, err error) {
	var br badRequest
	switch {
	case errors.As(err, &br):
		writeProblem(w, probBadRequest, string(br))
	case errors.Is(err, errNoKey):
		writeProblem(w, probNoKey, "")
	case errors.Is(err, errBeyondTree):
		writeProblem(w, probBeyondTree, err.Error())
	case errors.Is(err, errNoCheckpointSz):
		writeProblem(w, probNoCheckpoint, err.Error())
	default:
		a.log.Error("audit API", "err", err)
		writeProblem(w, probUnavailable, "")
	}
}

func parseU64(name, v string) (uint64, error) {
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, badRequest(fmt.Sprintf("%s: want a decimal number, got %q", name, v))
	}
	return n, nil
}

// snapshot calls fn with one Snapshot of a log whose key is recorded.
func (a *api) snapshot(fn func(Snapshot) error) error {
	return a.view(func(s Snapshot) error {
		if s.PublicKey() == nil {
			return errNoKey
		}
		return fn(s)
	})
}

// within fails with errBeyondTree unless the tree holds size leaves.
func within(ctx context.Context, s Snapshot, size uint64) error {
	n, err := s.Size(ctx)
	if err != nil || size > n {
		return errors.Join(err, fmt.Errorf("size %d, tree %d: %w", size, n, errBeyondTree))
	}
	return nil
}

func (a *api) key(w http.ResponseWriter) error {
	var pemBytes []byte
	err := a.snapshot(func(s Snapshot) (err error) { pemBytes, err = MarshalPublicKey(s.PublicKey()); return err })
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(pemBytes)
	return nil
}

func (a *api) latest(ctx context.Context, w http.ResponseWriter) error {
	var c Checkpoint
	var ok bool
	err := a.snapshot(func(s Snapshot) (err error) { c, ok, err = s.Latest(ctx); return err })
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("none yet: %w", errNoCheckpointSz)
	}
	writeJSON(w, newCheckpointJSON(c))
	return nil
}

func (a *api) checkpoint(w http.ResponseWriter, sz string) error {
	size, err := parseU64("size", sz)
	if err != nil {
		return err
	}
	var c Checkpoint
	var ok bool
	if err := a.snapshot(func(s Snapshot) (err error) { c, ok, err = s.Checkpoint(size); return err }); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("size %d: %w", size, errNoCheckpointSz)
	}
	writeJSON(w, newCheckpointJSON(c))
	return nil
}

func (a *api) checkpoints(w http.ResponseWriter, fromS string) error {
	var from uint64
	if fromS != "" {
		var err error
		if from, err = parseU64("from", fromS); err != nil {
			return err
		}
	}
	var page []Checkpoint
	if err := a.snapshot(func(s Snapshot) (err error) {
		page, err = s.CheckpointsFrom(from, maxPageCheckpoints)
		return err
	}); err != nil {
		return err
	}
	out := struct {
		Checkpoints []checkpointJSON `json:"checkpoints"`
	}{Checkpoints: []checkpointJSON{}}
	for _, c := range page {
		out.Checkpoints = append(out.Checkpoints, newCheckpointJSON(c))
	}
	writeJSON(w, out)
	return nil
}

func (a *api) leaves(ctx context.Context, w http.ResponseWriter, fromS, toS string) error {
	from, err := parseU64("from", fromS)
	if err != nil {
		return err
	}
	to, err := parseU64("to", toS)
	if err != nil {
		return err
	}
	if to <= from {
		return badRequest("to must be greater than from")
	}
	to = min(to, from+maxPageLeaves)
	out := LeavesJSON{Leaves: []LeafJSON{}}
	if err := a.snapshot(func(s Snapshot) error {
		size, err := s.Size(ctx)
		if err != nil {
			return err
		}
		out.Size = size
		if from >= size {
			return fmt.Errorf("from %d, size %d: %w", from, size, errBeyondTree)
		}
		return s.Leaves(ctx, from, min(to, size), func(i uint64, leaf []byte) error {
			b := []byte(string(leaf)) // a node's bytes are valid only in its read
			out.Leaves = append(out.Leaves, LeafJSON{Index: i, Hash: HashLeaf(b), Leaf: b})
			return nil
		})
	}); err != nil {
		return err
	}
	writeJSON(w, out)
	return nil
}

func (a *api) rangeAt(ctx context.Context, w http.ResponseWriter, sz string) error {
	size, err := parseU64("size", sz)
	if err != nil {
		return err
	}
	out := rangeJSON{Size: size, Hashes: [][]byte{}}
	if err := a.snapshot(func(s Snapshot) error {
		if err := within(ctx, s, size); err != nil {
			return err
		}
		h, err := s.Range(ctx, size)
		if h != nil {
			out.Hashes = h
		}
		return err
	}); err != nil {
		return err
	}
	writeJSON(w, out)
	return nil
}

func (a *api) inclusion(ctx context.Context, w http.ResponseWriter, idxS, sizeS string) error {
	idx, err := parseU64("index", idxS)
	if err != nil {
		return err
	}
	size, err := parseU64("size", sizeS)
	if err != nil {
		return err
	}
	if idx >= size {
		return badRequest("index must be below size")
	}
	out := ProofJSON{Index: &idx, Size: size}
	if err := a.snapshot(func(s Snapshot) error {
		if err := within(ctx, s, size); err != nil {
			return err
		}
		leaf, err := s.Leaf(idx)
		if err != nil {
			return err
		}
		enc, err := EncodeLeaf(leaf)
		if err != nil {
			return err
		}
		out.Hash = HashLeaf(enc)
		if out.Root, err = s.RootAt(size); err != nil {
			return err
		}
		out.Proof, err = s.InclusionProof(idx, size)
		return err
	}); err != nil {
		return err
	}
	if out.Proof == nil {
		out.Proof = [][]byte{}
	}
	writeJSON(w, out)
	return nil
}

func (a *api) consistency(ctx context.Context, w http.ResponseWriter, fromS, toS string) error {
	from, err := parseU64("from", fromS)
	if err != nil {
		return err
	}
	to, err := parseU64("to", toS)
	if err != nil {
		return err
	}
	if from > to {
		return badRequest("from must not exceed to")
	}
	out := ProofJSON{From: from, Size: to}
	if err := a.snapshot(func(s Snapshot) error {
		if err := within(ctx, s, to); err != nil {
			return err
		}
		var err error
		if out.Old, err = s.RootAt(from); err != nil {
			return err
		}
		if out.Root, err = s.RootAt(to); err != nil {
			return err
		}
		out.Proof, err = s.ConsistencyProof(from, to)
		return err
	}); err != nil {
		return err
	}
	if out.Proof == nil {
		out.Proof = [][]byte{}
	}
	writeJSON(w, out)
	return nil
}

// serial answers the leaves about one certificate, with the tree's size at the
// time: prove each with the inclusion endpoint at a checkpoint's size.
func (a *api) serial(ctx context.Context, w http.ResponseWriter, serialS string) error {
	n, err := certserial.Parse(serialS)
	if err != nil {
		return badRequest(fmt.Sprintf("audit: serial %v", err))
	}
	serial := serialHex(n)
	out := LeavesJSON{Leaves: []LeafJSON{}}
	if err := a.snapshot(func(s Snapshot) error {
		var err error
		if out.Size, err = s.Size(ctx); err != nil {
			return err
		}
		idx, err := s.SerialLeaves(serial, maxSerialLeaves)
		if err != nil {
			return err
		}
		for _, i := range idx {
			leaf, err := s.Leaf(i)
			if err != nil {
				return err
			}
			enc, err := EncodeLeaf(leaf)
			if err != nil {
				return err
			}
			out.Leaves = append(out.Leaves, LeafJSON{Index: i, Hash: HashLeaf(enc), Leaf: enc})
		}
		return nil
	}); err != nil {
		return err
	}
	writeJSON(w, out)
	return nil
}
