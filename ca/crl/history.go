package crl

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/fxamacker/cbor/v2"
	"go.etcd.io/bbolt"
)

// Around returns the two published CRLs of the CA's shard that bracket t: the one
// current at t (the newest whose thisUpdate is not after t) and the first one
// published after t (the oldest whose thisUpdate is after t). Either may be
// missing: no CRL of the shard had been published by t, or none has been since.
// They are what proves a certificate's status at t: the first says what was
// revoked by its thisUpdate, the second that nothing was revoked between t and
// its thisUpdate that it does not list.
func Around(tx *bbolt.Tx, ca string, shard int, t time.Time) (current, next Meta, hasCurrent, hasNext bool, err error) {
	sb := readShard(tx, ca, shard)
	if sb == nil || sb.Bucket(keyMeta) == nil {
		return Meta{}, Meta{}, false, false, nil
	}
	// Numbers grow with thisUpdate, so the metas are in time order: the scan
	// stops at the first CRL after t.
	c := sb.Bucket(keyMeta).Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		var m Meta
		if err := cbor.Unmarshal(v, &m); err != nil {
			return Meta{}, Meta{}, false, false, fmt.Errorf("crl: meta of %s/%d/%d: %w", ca, shard, binary.BigEndian.Uint64(k), err)
		}
		if m.ThisUpdate.After(t) {
			return current, m, hasCurrent, true, nil
		}
		current, hasCurrent = m, true
	}
	return current, Meta{}, hasCurrent, false, nil
}
