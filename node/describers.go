package node

import (
	"fmt"
	"time"

	"github.com/inkan-pki/inkan/audit"
	auditlog "github.com/inkan-pki/inkan/audit/log"
	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/ca/policy"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/operator"
)

// describers tell the audit log what the authority's and the CRL publisher's
// commands changed. Every command type of ca's handlers is described by
// ca.DescribeCommand, so a command ca adds is audited without a change here.
func describers() map[string]auditlog.Describer {
	m := map[string]auditlog.Describer{}
	describeCA := fromDescriptions(ca.DescribeCommand)
	for _, h := range ca.Handlers() {
		m[h.Type()] = describeCA
	}
	m[policy.CommandApply] = fromDescriptions(policy.DescribeCommand)
	describeOperator := func(e cluster.Entry, result []byte) ([]auditlog.Record, error) {
		ds, err := operator.DescribeCommand(e, result)
		if err != nil {
			return nil, err
		}
		out := make([]auditlog.Record, len(ds))
		for i, d := range ds {
			out[i] = auditlog.Record{Type: d.Type, Actor: d.Actor, Data: d.Data}
		}
		return out, nil
	}
	for _, t := range operator.Commands() {
		m[t] = describeOperator
	}
	m[crl.TypePublish] = describeCRLPublish
	return m
}

// fromDescriptions adapts a describer of ca's shape (ca.Description has
// auditlog.Record's fields) to the audit log's.
func fromDescriptions(describe func(cluster.Entry, []byte) ([]ca.Description, error)) auditlog.Describer {
	return func(e cluster.Entry, result []byte) ([]auditlog.Record, error) {
		ds, err := describe(e, result)
		if err != nil {
			return nil, err
		}
		out := make([]auditlog.Record, len(ds))
		for i, d := range ds {
			out[i] = auditlog.Record{Type: d.Type, Actor: d.Actor, Serial: d.Serial, Data: d.Data}
		}
		return out, nil
	}
}

// describeCRLPublish records a published CRL by its identity and hash.
func describeCRLPublish(e cluster.Entry, _ []byte) ([]auditlog.Record, error) {
	var meta crl.Meta
	if err := e.Command.Decode(&meta); err != nil {
		return nil, fmt.Errorf("node: describe %s: %w", e.Command.Type, err)
	}
	return []auditlog.Record{{
		Type:  "crl.published",
		Actor: audit.ActorSystem,
		Data: map[string]any{
			"ca": meta.CA, "shard": meta.Shard, "number": meta.Number,
			"sha256": meta.SHA256, "entries": meta.Entries,
			"this_update": meta.ThisUpdate.UTC().Format(time.RFC3339),
			"next_update": meta.NextUpdate.UTC().Format(time.RFC3339),
		},
	}}, nil
}
