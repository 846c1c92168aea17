package operator

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"strings"
	"time"
)

// Change is the body of an "operator.manage" request: add an operator (from
// their CSR; their key stays with them) or remove one. Body gives its canonical
// bytes, the Request.Body approvers sign over.
type Change struct {
	Op       string        // OpAdd or OpRemove
	Name     string        // add: a label for people
	Role     Role          // add
	CSR      []byte        // add: PKCS #10, DER
	Validity time.Duration // add: 0 means DefaultValidity
	ID       string        // remove: the operator's ID
}

// The operations of a Change.
const (
	OpAdd    = "add"
	OpRemove = "remove"
)

type changeWire struct {
	_        struct{} `cbor:",toarray"`
	Op       string
	Name     string
	Role     string
	CSR      []byte
	Validity int64
	ID       string
}

func (c Change) check() error {
	switch c.Op {
	case OpAdd:
		if c.Name == "" || len(c.Name) > maxName {
			return fmt.Errorf("operator: name: want 1-%d bytes", maxName)
		}
		if !c.Role.valid() {
			return fmt.Errorf("operator: role %q: want admin, officer or auditor", c.Role)
		}
		if c.Validity != 0 && (c.Validity < minValidity || c.Validity > maxValidity) {
			return fmt.Errorf("operator: validity %s: want at most %s", c.Validity, maxValidity)
		}
		if _, err := parseCSR(c.CSR); err != nil {
			return err
		}
		if c.ID != "" {
			return fmt.Errorf("operator: add: the ID is chosen at issuance")
		}
	case OpRemove:
		if !validOperatorID(c.ID) {
			return fmt.Errorf("operator: operator ID %q: want op- and 16 hex digits", c.ID)
		}
		if c.Name != "" || c.Role != "" || c.CSR != nil || c.Validity != 0 {
			return fmt.Errorf("operator: remove: only the ID")
		}
	default:
		return fmt.Errorf("operator: change %q: want %q or %q", c.Op, OpAdd, OpRemove)
	}
	return nil
}

// Body checks the change and returns its canonical encoding (CBOR, core
// deterministic).
func (c Change) Body() ([]byte, error) {
	if err := c.check(); err != nil {
		return nil, err
	}
	return encMode.Marshal(changeWire{Op: c.Op, Name: c.Name, Role: string(c.Role), CSR: c.CSR,
		Validity: int64(c.Validity), ID: c.ID})
}

// ParseChange decodes a Change from its canonical body, refusing any other
// encoding of it.
func ParseChange(body []byte) (Change, error) {
	var w changeWire
	if err := decMode.Unmarshal(body, &w); err != nil {
		return Change{}, fmt.Errorf("operator: change: %w", err)
	}
	c := Change{Op: w.Op, Name: w.Name, Role: Role(w.Role), CSR: w.CSR, Validity: time.Duration(w.Validity), ID: w.ID}
	again, err := c.Body()
	if err != nil {
		return Change{}, err
	}
	if !bytes.Equal(again, body) {
		return Change{}, fmt.Errorf("operator: change: not in canonical form")
	}
	return c, nil
}

// fingerprintFrom makes a Fingerprint of 32 bytes (zero-padded if shorter).
func fingerprintFrom(b []byte) fingerprint {
	var f fingerprint
	copy(f[:], b)
	return f
}

// parseActor reads an actor string "sha256:<64 lower-case hex>".
func parseActor(a string) (fingerprint, bool) {
	h, ok := strings.CutPrefix(a, "sha256:")
	if !ok || len(h) != 64 || strings.ToLower(h) != h {
		return fingerprint{}, false
	}
	b, err := hex.DecodeString(h)
	if err != nil {
		return fingerprint{}, false
	}
	return fingerprintFrom(b), true
}
