package log

import (
	"errors"
	"net/http"

	"github.com/inkan-pki/inkan/audit"
	"go.etcd.io/bbolt"
)

// API is the audit API over this node's state (an http.Handler node mounts on its
// HTTPS API under audit.APIPrefix, behind the auditor role). The API itself is
// package audit's, beside the Client that reads it; this node answers each
// request from one short read transaction (a snapshot), so every answer is
// self-consistent (proofs and roots come from one transaction). It serves this
// node's state, which may lag the leader's by the commit delay.
func (s *Service) API(v viewer) http.Handler {
	return audit.NewAPI(func(fn func(audit.Snapshot) error) error {
		return v.View(func(tx *bbolt.Tx) error {
			l, err := s.logIn(tx)
			if errors.Is(err, errNoKey) {
				return fn(snapshot{txSource{&tree{}, tx}}) // no key: the API says so
			}
			if err != nil {
				return err
			}
			return fn(snapshot{txSource{l, tx}})
		})
	}, s.log)
}

// snapshot is the log as it stands in one read transaction, for the audit API.
type snapshot struct{ txSource }

func (s snapshot) Checkpoint(size uint64) (audit.Checkpoint, bool, error) {
	return s.l.checkpoint(s.tx, size)
}

func (s snapshot) CheckpointsFrom(from uint64, max int) ([]audit.Checkpoint, error) {
	return checkpointsFrom(s.tx, from, max)
}

func (s snapshot) Leaf(index uint64) (audit.Leaf, error) { return s.l.leaf(s.tx, index) }

func (s snapshot) RootAt(size uint64) ([]byte, error) { return s.l.rootAt(s.tx, size) }

func (s snapshot) InclusionProof(index, size uint64) ([][]byte, error) {
	return s.l.inclusionProof(s.tx, index, size)
}

func (s snapshot) ConsistencyProof(from, to uint64) ([][]byte, error) {
	return s.l.consistencyProof(s.tx, from, to)
}

func (s snapshot) SerialLeaves(serial string, max int) ([]uint64, error) {
	return serialLeaves(s.tx, serial, max)
}
