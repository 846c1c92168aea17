package log

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/inkan-pki/inkan/audit"
	"github.com/inkan-pki/inkan/certserial"
	"go.etcd.io/bbolt"
)

// The server side of the audit API (audit.APIPrefix); its paths and answers are
// audit's, so that the auditor's audit.Client reads them without this package.
const (
	maxSerialLeaves = 100
	contentProblem  = "application/problem+json"
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
	probNoCheckpoint  = problemType{audit.ProblemNoCheckpoint, http.StatusNotFound, "No checkpoint of that size"}
	probBeyondTree    = problemType{"beyond-tree", http.StatusNotFound, "The tree does not hold that many leaves"}
	probNoKey         = problemType{"no-key", http.StatusServiceUnavailable, "The audit key is not recorded yet"}
	probMethod        = problemType{"method-not-allowed", http.StatusMethodNotAllowed, "Only GET is served"}
	probUnavailable   = problemType{"unavailable", http.StatusServiceUnavailable, "The node cannot read its state"}
	errBeyondTree     = errors.New("beyond the tree")
	errNoCheckpointSz = errors.New("no checkpoint of that size")
)

func writeProblem(w http.ResponseWriter, t problemType, detail string) {
	w.Header().Set("Content-Type", contentProblem)
	w.WriteHeader(t.status)
	_ = json.NewEncoder(w).Encode(audit.APIProblem{Type: audit.ProblemBase + t.name, Title: t.title, Status: t.status, Detail: detail})
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", contentJSON)
	w.Header().Set("Cache-Control", "no-store")
	_ = json.NewEncoder(w).Encode(v)
}

// API is the audit API over this node's state (an http.Handler node mounts on its
// HTTPS API under APIPrefix, behind the auditor role). Every request is one short
// read transaction; pages are bounded. It serves this node's state, which may lag
// the leader's by the commit delay: every answer is self-consistent (proofs and
// roots come from one transaction).
func (s *Service) API(v viewer) http.Handler {
	return &api{s: s, v: v}
}

type api struct {
	s *Service
	v viewer
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
	case p == audit.PathKey:
		err = a.key(w)
	case p == audit.PathCheckpoint:
		err = a.latest(w)
	case p == audit.PathCheckpoints:
		err = a.checkpoints(w, q.Get("from"))
	case strings.HasPrefix(p, audit.PathCheckpoints+"/"):
		err = a.checkpoint(w, strings.TrimPrefix(p, audit.PathCheckpoints+"/"))
	case p == audit.PathLeaves:
		err = a.leaves(r.Context(), w, q.Get("from"), q.Get("to"))
	case p == audit.PathRange:
		err = a.rangeAt(r.Context(), w, q.Get("size"))
	case p == audit.PathInclusion:
		err = a.inclusion(w, q.Get("index"), q.Get("size"))
	case p == audit.PathConsistency:
		err = a.consistency(w, q.Get("from"), q.Get("to"))
	case strings.HasPrefix(p, audit.PathSerials):
		err = a.serial(w, strings.TrimPrefix(p, audit.PathSerials))
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
		a.s.log.Error("audit API", "err", err)
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

func (a *api) view(fn func(l *Log, tx *bbolt.Tx) error) error {
	return a.v.View(func(tx *bbolt.Tx) error {
		l, err := a.s.logIn(tx)
		if err != nil {
			return err
		}
		return fn(l, tx)
	})
}

func (a *api) key(w http.ResponseWriter) error {
	var pemBytes []byte
	err := a.view(func(l *Log, _ *bbolt.Tx) (err error) { pemBytes, err = audit.MarshalPublicKey(l.pub); return err })
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/x-pem-file")
	_, _ = w.Write(pemBytes)
	return nil
}

func (a *api) latest(w http.ResponseWriter) error {
	var c audit.Checkpoint
	var ok bool
	err := a.view(func(l *Log, tx *bbolt.Tx) (err error) { c, ok, err = l.latestCheckpoint(tx); return err })
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("none yet: %w", errNoCheckpointSz)
	}
	writeJSON(w, audit.NewCheckpointJSON(c))
	return nil
}

func (a *api) checkpoint(w http.ResponseWriter, sz string) error {
	size, err := parseU64("size", sz)
	if err != nil {
		return err
	}
	var c audit.Checkpoint
	var ok bool
	if err := a.view(func(l *Log, tx *bbolt.Tx) (err error) { c, ok, err = l.checkpoint(tx, size); return err }); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("size %d: %w", size, errNoCheckpointSz)
	}
	writeJSON(w, audit.NewCheckpointJSON(c))
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
	var page []audit.Checkpoint
	if err := a.view(func(_ *Log, tx *bbolt.Tx) (err error) {
		page, err = checkpointsFrom(tx, from, audit.MaxPageCheckpoints)
		return err
	}); err != nil {
		return err
	}
	out := struct {
		Checkpoints []audit.CheckpointJSON `json:"checkpoints"`
	}{Checkpoints: []audit.CheckpointJSON{}}
	for _, c := range page {
		out.Checkpoints = append(out.Checkpoints, audit.NewCheckpointJSON(c))
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
	to = min(to, from+audit.MaxPageLeaves)
	out := audit.LeavesJSON{Leaves: []audit.LeafJSON{}}
	if err := a.view(func(l *Log, tx *bbolt.Tx) error {
		size, err := l.Size(tx)
		if err != nil {
			return err
		}
		out.Size = size
		if from >= size {
			return fmt.Errorf("from %d, size %d: %w", from, size, errBeyondTree)
		}
		return l.source(tx).Leaves(ctx, from, min(to, size), func(i uint64, leaf []byte) error {
			b := []byte(string(leaf))
			out.Leaves = append(out.Leaves, audit.LeafJSON{Index: i, Hash: audit.HashLeaf(b), Leaf: b})
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
	out := audit.RangeJSON{Size: size, Hashes: [][]byte{}}
	if err := a.view(func(l *Log, tx *bbolt.Tx) error {
		if n, err := l.Size(tx); err != nil || size > n {
			return errors.Join(err, fmt.Errorf("size %d, tree %d: %w", size, n, errBeyondTree))
		}
		h, err := l.source(tx).Range(ctx, size)
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

func (a *api) inclusion(w http.ResponseWriter, idxS, sizeS string) error {
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
	out := audit.ProofJSON{Index: &idx, Size: size}
	if err := a.view(func(l *Log, tx *bbolt.Tx) error {
		if n, err := l.Size(tx); err != nil || size > n {
			return errors.Join(err, fmt.Errorf("size %d, tree %d: %w", size, n, errBeyondTree))
		}
		leaf, err := l.leaf(tx, idx)
		if err != nil {
			return err
		}
		enc, err := audit.EncodeLeaf(leaf)
		if err != nil {
			return err
		}
		out.Hash = audit.HashLeaf(enc)
		if out.Root, err = l.rootAt(tx, size); err != nil {
			return err
		}
		out.Proof, err = l.inclusionProof(tx, idx, size)
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

func (a *api) consistency(w http.ResponseWriter, fromS, toS string) error {
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
	out := audit.ProofJSON{From: from, Size: to}
	if err := a.view(func(l *Log, tx *bbolt.Tx) error {
		if n, err := l.Size(tx); err != nil || to > n {
			return errors.Join(err, fmt.Errorf("size %d, tree %d: %w", to, n, errBeyondTree))
		}
		var err error
		if out.Old, err = l.rootAt(tx, from); err != nil {
			return err
		}
		if out.Root, err = l.rootAt(tx, to); err != nil {
			return err
		}
		out.Proof, err = l.consistencyProof(tx, from, to)
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
func (a *api) serial(w http.ResponseWriter, s string) error {
	n, err := certserial.Parse(s)
	if err != nil {
		return badRequest(fmt.Sprintf("audit: serial %v", err))
	}
	serial := audit.SerialHex(n)
	out := audit.LeavesJSON{Leaves: []audit.LeafJSON{}}
	if err := a.view(func(l *Log, tx *bbolt.Tx) error {
		var err error
		if out.Size, err = l.Size(tx); err != nil {
			return err
		}
		idx, err := serialLeaves(tx, serial, maxSerialLeaves)
		if err != nil {
			return err
		}
		for _, i := range idx {
			leaf, err := l.leaf(tx, i)
			if err != nil {
				return err
			}
			enc, err := audit.EncodeLeaf(leaf)
			if err != nil {
				return err
			}
			out.Leaves = append(out.Leaves, audit.LeafJSON{Index: i, Hash: audit.HashLeaf(enc), Leaf: enc})
		}
		return nil
	}); err != nil {
		return err
	}
	writeJSON(w, out)
	return nil
}
