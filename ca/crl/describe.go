package crl

import (
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/inkan-pki/inkan/cluster"
)

// Audit leaf type and actor of a published CRL.
const (
	typePublished = "crl.published"
	actorSystem   = "system" // the appliance's own publisher
)

// errForeignCommand: Describe was given another package's command.
var errForeignCommand = errors.New("not a CRL command")

// describedHandler is a handler of the CRL commands that also tells the audit
// log what they changed: node finds Describe on the handlers Handlers returns,
// as on ca's, and hands it to the audit hook.
type describedHandler struct{ cluster.Handler }

// Describe is what the audit log records of a published CRL (a crl.publish
// command): one leaf with its identity, its hash and its times. A crl.part has
// none: it is staged bytes, and the crl.publish that commits the CRL carries
// the SHA-256 of all its parts.
func (describedHandler) Describe(e cluster.Entry, _ []byte, leaf func(typ, actor string, serial *big.Int, data map[string]any)) error {
	switch e.Command.Type {
	case commandPart:
		return nil
	case commandPublish:
	default:
		return fmt.Errorf("crl: describe: %q is %w", e.Command.Type, errForeignCommand)
	}
	var meta Meta
	if err := e.Command.Decode(&meta); err != nil {
		return fmt.Errorf("crl: describe %s: %w", e.Command.Type, err)
	}
	leaf(typePublished, actorSystem, nil, map[string]any{
		"ca": meta.CA, "shard": meta.Shard, "number": meta.Number,
		"sha256": meta.SHA256, "entries": meta.Entries,
		"this_update": meta.ThisUpdate.UTC().Format(time.RFC3339),
		"next_update": meta.NextUpdate.UTC().Format(time.RFC3339),
	})
	return nil
}
