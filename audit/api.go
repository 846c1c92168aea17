package audit

// The audit API's format: its paths and what it answers, shared by the server
// (audit/log, on a node) and the auditor's Client (docs/audit.md describes both).

// Paths of the audit API, relative to where node mounts it (docs/audit.md).
const (
	APIPrefix          = "/v1/audit/"
	PathKey            = APIPrefix + "key"
	PathCheckpoint     = APIPrefix + "checkpoint"
	PathCheckpoints    = APIPrefix + "checkpoints"
	PathLeaves         = APIPrefix + "leaves"
	PathRange          = APIPrefix + "range"
	PathInclusion      = APIPrefix + "proof/inclusion"
	PathConsistency    = APIPrefix + "proof/consistency"
	PathSerials        = APIPrefix + "serials/"
	ProblemBase        = "urn:inkan:problem:audit:"
	MaxPageLeaves      = 1000 // leaves in one answer of the leaves endpoint
	MaxPageCheckpoints = 1000
	contentProblem     = "application/problem+json"
)

// ProblemNoCheckpoint names (after ProblemBase) the answer for a checkpoint that is
// not stored: the only problem the Client acts on (an empty log, for Latest).
const ProblemNoCheckpoint = "no-checkpoint"

// CheckpointJSON is a checkpoint as the API sends it: the signed body and the
// signature exactly as stored, plus its fields for convenience.
type CheckpointJSON struct {
	Origin    string `json:"origin"`
	Size      uint64 `json:"size"`
	Root      []byte `json:"root"` // base64
	Time      string `json:"time"`
	Body      string `json:"body"`      // the signed text, four lines
	Signature []byte `json:"signature"` // base64 of the DER signature
}

// LeafJSON is one leaf: its index, RFC 6962 leaf hash and encoded bytes (base64).
type LeafJSON struct {
	Index uint64 `json:"index"`
	Hash  []byte `json:"hash"`
	Leaf  []byte `json:"leaf"`
}

// LeavesJSON is a page of leaves; Size is the tree's size when it was read.
type LeavesJSON struct {
	Size   uint64     `json:"size"`
	Leaves []LeafJSON `json:"leaves"`
}

// ProofJSON is an inclusion or consistency proof: the RFC 6962 audit path, base64
// hashes, and the roots it goes between.
type ProofJSON struct {
	Index *uint64  `json:"index,omitempty"` // inclusion: the leaf's index
	From  uint64   `json:"from,omitempty"`  // consistency: the smaller size
	Size  uint64   `json:"size"`            // the tree size the proof is for
	Root  []byte   `json:"root"`            // the tree's root at Size
	Hash  []byte   `json:"hash,omitempty"`  // inclusion: the leaf hash
	Old   []byte   `json:"old_root,omitempty"`
	Proof [][]byte `json:"proof"`
}

// RangeJSON is the compact range [0, size): its perfect subtrees' roots, left to
// right, as start.txt holds them.
type RangeJSON struct {
	Size   uint64   `json:"size"`
	Hashes [][]byte `json:"hashes"`
}

// APIProblem is an audit API error (RFC 9457 problem details); Type is ProblemBase
// and a name.
type APIProblem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func (p *APIProblem) Error() string {
	s := "audit API: " + p.Title
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	return s + " (" + p.Type + ")"
}

// NewCheckpointJSON is c as the API sends it.
func NewCheckpointJSON(c Checkpoint) CheckpointJSON {
	return CheckpointJSON{Origin: c.Origin, Size: c.Size, Root: c.Root, Time: c.Time.UTC().Format(checkpointTimeLayout),
		Body: string(c.Body()), Signature: c.Signature}
}
