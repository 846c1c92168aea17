package cluster

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// A Command is one typed, versioned change to the replicated state. Body is
// the command's own payload, encoded as a single CBOR item in core
// deterministic form (NewCommand does that for you); the encoded Command is
// what the audit log records, so the same command always has the same bytes.
type Command struct {
	Type    string
	Version uint
	Body    []byte
}

// NewCommand encodes body in CBOR core deterministic form and returns the
// command that carries it.
func NewCommand(typ string, version uint, body any) (Command, error) {
	b, err := encMode.Marshal(body)
	if err != nil {
		return Command{}, fmt.Errorf("cluster: encode %s v%d body: %w", typ, version, err)
	}
	return Command{Type: typ, Version: version, Body: b}, nil
}

// Decode decodes the command's body into v.
func (c Command) Decode(v any) error {
	if err := decMode.Unmarshal(c.Body, v); err != nil {
		return fmt.Errorf("cluster: decode %s v%d body: %w", c.Type, c.Version, err)
	}
	return nil
}

// An Entry is one command as the state machine applies it.
type Entry struct {
	// Index is the Raft log index of the entry that carried the command, and
	// Seq the command's position among the commands of that entry.
	Index uint64
	Seq   int
	// Time is the time the leader stamped on the entry. Every replica sees the
	// same value: use it, never the local clock, for anything written.
	Time    time.Time
	Command Command
	// Raw is the command's exact encoded bytes (what the audit log records).
	Raw []byte
}

// wireCommand is the encoded form of a Command: a CBOR array
// [type, version, body] with the body embedded as a CBOR item.
type wireCommand struct {
	_       struct{} `cbor:",toarray"`
	Type    string
	Version uint
	Body    cbor.RawMessage
}

// The codecs are immutable once built.
var (
	encMode = must(cbor.CoreDetEncOptions().EncMode())
	decMode = must(cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  32,
		MaxArrayElements: 1 << 20,
		MaxMapPairs:      1 << 20,
	}.DecMode())
)

// The codecs of the values services keep in the replicated state: core
// deterministic encoding (every voter writes the same bytes), and decoding that
// refuses duplicate keys, indefinite lengths and values nested or sized beyond
// what a record holds.
var (
	valueEncMode = must(cbor.CoreDetEncOptions().EncMode())
	valueDecMode = must(cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		MaxNestedLevels:  16,
		MaxArrayElements: 1 << 16,
		MaxMapPairs:      1 << 10,
	}.DecMode())
)

// ValueCodec returns the codecs for values kept in the replicated state, so
// that every service encodes and checks its records alike.
func ValueCodec() (cbor.EncMode, cbor.DecMode) { return valueEncMode, valueDecMode }

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

var errNotCanonical = errors.New("body is not CBOR in core deterministic encoding")

// encodeCommand returns the command's canonical bytes, refusing a body that
// is not a single CBOR item in core deterministic form.
func encodeCommand(c Command) ([]byte, error) {
	if c.Type == "" {
		return nil, errors.New("cluster: command has no type")
	}
	if err := checkCanonical(c.Body); err != nil {
		return nil, fmt.Errorf("cluster: %s v%d: %w", c.Type, c.Version, err)
	}
	return encMode.Marshal(wireCommand{Type: c.Type, Version: c.Version, Body: c.Body})
}

// decodeCommand parses bytes made by encodeCommand and checks that they are
// canonical, so that a command has exactly one encoding.
func decodeCommand(raw []byte) (Command, error) {
	var w wireCommand
	if err := decMode.Unmarshal(raw, &w); err != nil {
		return Command{}, fmt.Errorf("cluster: decode command: %w", err)
	}
	c := Command{Type: w.Type, Version: w.Version, Body: []byte(w.Body)}
	again, err := encodeCommand(c)
	if err != nil {
		return Command{}, err
	}
	if !bytes.Equal(again, raw) {
		return Command{}, fmt.Errorf("cluster: %s v%d: %w", c.Type, c.Version, errNotCanonical)
	}
	return c, nil
}

func checkCanonical(body []byte) error {
	if len(body) == 0 {
		return errNotCanonical
	}
	var v any
	if err := decMode.Unmarshal(body, &v); err != nil {
		return fmt.Errorf("%w: %v", errNotCanonical, err)
	}
	again, err := encMode.Marshal(v)
	if err != nil || !bytes.Equal(again, body) {
		return errNotCanonical
	}
	return nil
}

// envelope is the data of one Raft log entry: the leader's time and the
// commands batched into the entry, each with the request ID its submitter
// chose (for deduplication of retried submissions).
type envelope struct {
	_     struct{} `cbor:",toarray"`
	Time  int64    // Unix nanoseconds, stamped by the leader
	Items []envelopeItem
}

type envelopeItem struct {
	_   struct{} `cbor:",toarray"`
	ID  []byte
	Cmd []byte
}
