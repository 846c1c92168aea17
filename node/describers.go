package node

import (
	"github.com/inkan-pki/inkan/audit"
	auditlog "github.com/inkan-pki/inkan/audit/log"
	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/ca/policy"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/operator"
	"github.com/inkan-pki/inkan/tsa"
)

// describers tell the audit log what the authority's, the profiles', the
// operators', the TSA's and the CRL publisher's commands changed. Every
// command type of their handlers is described by their DescribeCommand, so a
// command they add is audited without a change here.
func describers() map[string]auditlog.Describer {
	m := map[string]auditlog.Describer{}
	fromCA := describeWith(ca.DescribeCommand, func(d ca.Description) auditlog.Record {
		return auditlog.Record{Type: d.Type, Actor: d.Actor, Serial: d.Serial, Data: d.Data}
	})
	for _, h := range ca.Handlers() {
		m[h.Type()] = fromCA
	}
	m[policy.Handler().Type()] = describeWith(policy.DescribeCommand, func(d ca.Description) auditlog.Record {
		return auditlog.Record{Type: d.Type, Actor: d.Actor, Serial: d.Serial, Data: d.Data}
	})
	fromOperator := describeWith(operator.DescribeCommand, func(d operator.Description) auditlog.Record {
		return auditlog.Record{Type: d.Type, Actor: d.Actor, Data: d.Data}
	})
	for _, h := range operator.Handlers() {
		m[h.Type()] = fromOperator
	}
	fromTSA := describeWith(tsa.DescribeCommand, func(d ca.Description) auditlog.Record {
		return auditlog.Record{Type: d.Type, Actor: d.Actor, Serial: d.Serial, Data: d.Data}
	})
	for _, h := range tsa.Handlers() {
		m[h.Type()] = fromTSA
	}
	m[crl.TypePublish] = func(e cluster.Entry, _ []byte) ([]auditlog.Record, error) {
		data, err := crl.DescribePublish(e)
		if err != nil {
			return nil, err
		}
		return []auditlog.Record{{Type: "crl.published", Actor: audit.ActorSystem, Data: data}}, nil
	}
	return m
}

// describeWith adapts a package's describer, whose descriptions have the
// audit record's fields, to the audit log's.
func describeWith[D any](describe func(cluster.Entry, []byte) ([]D, error), record func(D) auditlog.Record) auditlog.Describer {
	return func(e cluster.Entry, result []byte) ([]auditlog.Record, error) {
		ds, err := describe(e, result)
		if err != nil {
			return nil, err
		}
		out := make([]auditlog.Record, len(ds))
		for i, d := range ds {
			out[i] = record(d)
		}
		return out, nil
	}
}
