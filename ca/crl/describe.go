package crl

import (
	"fmt"
	"time"

	"github.com/inkan-pki/inkan/cluster"
)

// DescribePublish is what the audit log records of a published CRL (a
// TypePublish command): its identity, its hash and its times.
func DescribePublish(e cluster.Entry) (map[string]any, error) {
	var meta Meta
	if err := e.Command.Decode(&meta); err != nil {
		return nil, fmt.Errorf("crl: describe %s: %w", e.Command.Type, err)
	}
	return map[string]any{
		"ca": meta.CA, "shard": meta.Shard, "number": meta.Number,
		"sha256": meta.SHA256, "entries": meta.Entries,
		"this_update": meta.ThisUpdate.UTC().Format(time.RFC3339),
		"next_update": meta.NextUpdate.UTC().Format(time.RFC3339),
	}, nil
}
