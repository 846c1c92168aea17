package audit

// The audit API's format: its paths and what it answers, shared by the server
// (NewAPI, which a node serves from audit/log) and the auditor's Client
// (docs/audit.md describes both).

// APIPrefix is where the audit API's paths start; a node mounts NewAPI there.
const APIPrefix = "/v1/audit/"

// Paths of the audit API (docs/audit.md).
const (
	pathKey            = APIPrefix + "key"
	pathCheckpoint     = APIPrefix + "checkpoint"
	pathCheckpoints    = APIPrefix + "checkpoints"
	pathLeaves         = APIPrefix + "leaves"
	pathRange          = APIPrefix + "range"
	pathInclusion      = APIPrefix + "proof/inclusion"
	pathConsistency    = APIPrefix + "proof/consistency"
	pathSerials        = APIPrefix + "serials/"
	problemBase        = "urn:inkan:problem:audit:"
	maxPageLeaves      = 1000 // leaves in one answer of the leaves endpoint
	maxPageCheckpoints = 1000
	contentProblem     = "application/problem+json"
)

// problemNoCheckpoint names (after problemBase) the answer for a checkpoint that is
// not stored: the only problem the Client acts on (an empty log, for Latest).
const problemNoCheckpoint = "no-checkpoint"

// checkpointJSON is a checkpoint as the API sends it: the signed body and the
// signature exactly as stored, plus its fields for convenience.
type checkpointJSON struct {
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

// rangeJSON is the compact range [0, size): its perfect subtrees' roots, left to
// right, as start.txt holds them.
type rangeJSON struct {
	Size   uint64   `json:"size"`
	Hashes [][]byte `json:"hashes"`
}

// apiProblem is an audit API error (RFC 9457 problem details); Type is problemBase
// and a name. The Client returns it as its error.
type apiProblem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail,omitempty"`
}

func (p *apiProblem) Error() string {
	s := "audit API: " + p.Title
	if p.Detail != "" {
		s += ": " + p.Detail
	}
	return s + " (" + p.Type + ")"
}

// newCheckpointJSON is c as the API sends it.
func newCheckpointJSON(c Checkpoint) checkpointJSON {
	return checkpointJSON{Origin: c.Origin, Size: c.Size, Root: c.Root, Time: c.Time.UTC().Format(checkpointTimeLayout),
		Body: string(c.Body()), Signature: c.Signature}
}
