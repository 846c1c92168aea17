package cluster

import (
	"errors"

	"go.etcd.io/bbolt"
)

// A Handler owns one command type: the packages above cluster register one
// per type they submit (Config.Handlers). Apply must be a pure function of
// the state in tx and the entry: every replica runs it on the same state with
// the same entry and must write the same bytes and return the same result.
// It must not read the clock, the network or anything outside tx, and must
// have no effect outside tx: a batch may be applied more than once before
// one pass commits (a batch-mate's refusal rolls the transaction back and
// the batch is applied again without it). One exception: it may write a
// file under the node's SharedDir whose name is its content's hash, which
// the state names (ca/crl archives a CRL so before the state drops its
// bytes): such a write is the same on every pass and every replica, a file
// left by a pass rolled back is one the state does not name, and the apply
// reads nothing back from it.
//
// Apply reports two kinds of failure, and they mean different things:
//
//   - Refuse(err): the command is not allowed (a serial already used, a nonce
//     already spent). This is a result: it is returned to the submitter, every
//     replica refuses alike, and whatever Apply wrote while handling the
//     command is undone (the command's own savepoint is rolled back) without
//     touching the other commands of its batch.
//   - any other error: this replica cannot apply a committed command (bad
//     state, a bug, a full disk). The node stops loudly rather than diverge
//     from its peers; see Cluster.Done.
//
// Only a voter may submit a handler's commands unless the handler also has a
// method NonvotersMay() bool that returns true: the leader refuses every other
// command from a nonvoter with a refusal of code "cluster.nonvoter". The state
// machine takes a command on the submitting node's word (that an operator
// asked, that it leads); a voter holds the replicated keys already, while a
// nonvoter (an OCSP edge) holds none and must not gain by a command what it
// could not sign itself. A handler opts in only for commands whose weight
// does not rest on that word (a request or decision an operator signed).
type Handler interface {
	// Type is the command type name, e.g. "ca.issue". Names beginning with
	// "cluster." are reserved.
	Type() string
	// Versions lists the body versions this handler can apply. A committed
	// command of a version not listed stops the node.
	Versions() []uint
	// Buckets are the top-level bbolt buckets the handler owns; they exist
	// before the first Apply.
	Buckets() [][]byte
	// Apply applies one committed command and returns its result.
	Apply(tx *bbolt.Tx, e Entry) (result []byte, err error)
}

// A Hook runs after every command a handler applied (not after refused
// ones), in the same bbolt transaction, with the handler's result. The audit
// log appends its leaf through one. A hook's error stops the node: a change
// that cannot be hooked (audited) must not be committed on this replica.
// Like Handler.Apply it must be deterministic and write only through tx.
type Hook func(tx *bbolt.Tx, e Entry, result []byte) error

// ErrRefused matches every refusal: errors.Is(err, ErrRefused).
var ErrRefused = errors.New("cluster: command refused")

// RefusedError is a handler's deterministic refusal of a command.
type RefusedError struct{ Err error }

// Refuse marks err as a refusal of the command being applied (see Handler).
func Refuse(err error) error {
	if err == nil {
		err = ErrRefused
	}
	return &RefusedError{Err: err}
}

func (e *RefusedError) Error() string { return "refused: " + e.Err.Error() }

// Unwrap lets errors.Is find both ErrRefused and the handler's own error.
func (e *RefusedError) Unwrap() []error { return []error{ErrRefused, e.Err} }

// A Refusal is an error callers act on, known by a stable code: a handler's
// reason for refusing a command, or a leader call's (Call) reason for failing.
// The code travels with the error through the state machine's records, the
// batch result and the RPC, so errors.Is(err, sentinel) holds on the node that
// submitted the command or made the call, wherever it was applied or served:
// an error rebuilt from its code matches the sentinel of that code. Declare
// sentinels with NewRefusal and wrap them freely (fmt.Errorf("%w: …",
// sentinel)); never compare messages.
type Refusal struct{ code, msg string }

// NewRefusal returns the sentinel of a refusal: code is stable and unique (a
// package prefix, e.g. "operator.self-approval"), msg says it in words.
func NewRefusal(code, msg string) *Refusal { return &Refusal{code: code, msg: msg} }

func (r *Refusal) Error() string { return r.msg }

// Code is the refusal's stable code.
func (r *Refusal) Code() string { return r.code }

// Is matches any refusal of the same code.
func (r *Refusal) Is(target error) bool {
	t, ok := target.(*Refusal)
	return ok && r.code != "" && t.code == r.code
}

// RefusalCode is the code of the first Refusal in err's chain, or "": what a
// package that carries a refusal in its own records (a batch's result) keeps,
// and what one that answers for another package's refusals (the admin API's
// problem types) maps from, leaving the sentinels to the package that
// declares them.
func RefusalCode(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		return r.code
	}
	return ""
}

// RefusedWith is a refusal as another node or an earlier apply reported it, by
// its code (RefusalCode) and message: it matches ErrRefused, and the sentinel of
// code if code is not empty.
func RefusedWith(code, msg string) error { return rebuildRefusal(code, msg) }

// rebuildRefusal is RefusedWith, typed.
func rebuildRefusal(code, msg string) *RefusedError {
	if code == "" {
		return &RefusedError{Err: errors.New(msg)}
	}
	return &RefusedError{Err: &Refusal{code: code, msg: msg}}
}

// NewHandler returns the Handler of one command type: typ, the body versions
// it applies, the buckets it owns and its Apply (see Handler).
func NewHandler(typ string, versions []uint, buckets [][]byte, apply func(tx *bbolt.Tx, e Entry) ([]byte, error)) Handler {
	return funcHandler{typ: typ, versions: versions, buckets: buckets, apply: apply}
}

type funcHandler struct {
	typ      string
	versions []uint
	buckets  [][]byte
	apply    func(tx *bbolt.Tx, e Entry) ([]byte, error)
}

func (h funcHandler) Type() string                                { return h.typ }
func (h funcHandler) Versions() []uint                            { return h.versions }
func (h funcHandler) Buckets() [][]byte                           { return h.buckets }
func (h funcHandler) Apply(tx *bbolt.Tx, e Entry) ([]byte, error) { return h.apply(tx, e) }
