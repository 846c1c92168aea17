package node

import (
	"math/big"
	"slices"

	auditlog "github.com/inkan-pki/inkan/audit/log"
	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/crl"
	"github.com/inkan-pki/inkan/ca/policy"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/operator"
	"github.com/inkan-pki/inkan/tsa"
)

// A describer is a command handler that tells the audit log what the commands
// it applied changed: it calls leaf once per change, with the leaf type, who
// asked, the certificate it is about (nil if none) and data made only of
// identifiers, codes and hashes. The authority's, the CRL publisher's, the
// profiles', the operators' and the TSA's handlers are describers.
type describer interface {
	Describe(e cluster.Entry, result []byte, leaf func(typ, actor string, serial *big.Int, data map[string]any)) error
}

// describedHandlers are the handlers whose commands the audit log records
// through their Describe.
func describedHandlers() []cluster.Handler {
	return slices.Concat(ca.Handlers(), crl.Handlers(), []cluster.Handler{policy.Handler()}, operator.Handlers(), tsa.Handlers())
}

// describers tell the audit log what the authority's, the CRL publisher's, the
// profiles', the operators' and the TSA's commands changed: every handler of
// theirs describes itself, so a command they add is audited without a change
// here.
func describers() map[string]auditlog.Describer {
	m := map[string]auditlog.Describer{}
	for _, h := range describedHandlers() {
		if d, ok := h.(describer); ok {
			m[h.Type()] = describeWith(d)
		}
	}
	return m
}

// describeWith adapts a handler's Describe to the audit log's Describer.
func describeWith(d describer) auditlog.Describer {
	return func(e cluster.Entry, result []byte) ([]auditlog.Record, error) {
		out := []auditlog.Record{}
		err := d.Describe(e, result, func(typ, actor string, serial *big.Int, data map[string]any) {
			out = append(out, auditlog.Record{Type: typ, Actor: actor, Serial: serial, Data: data})
		})
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}
