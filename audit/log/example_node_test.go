package log_test

import (
	"context"
	"log"
	"net/http"

	"github.com/inkan-pki/inkan/audit"
	auditlog "github.com/inkan-pki/inkan/audit/log"
	"github.com/inkan-pki/inkan/cluster"
)

// How a node wires the audit log: its hook and handlers go into the cluster's
// configuration with the audit key among the replicated keys, the checkpointer
// starts once the cluster is open, and the API is mounted on the HTTPS API.
func ExampleService() {
	var vault cluster.KeyVault // the node's HSM: cluster.NewHSMVault(token)
	// A describer per command type: ca's and the other packages' commands
	// through an adapter of their handlers' Describe.
	describeIssue := func(e cluster.Entry, result []byte) ([]auditlog.Record, error) {
		return []auditlog.Record{{Type: "cert.issued", Actor: "enrollment" /* … */}}, nil
	}
	a, err := auditlog.New(auditlog.Config{
		Origin:     "inkan.example/prod",
		Describers: map[string]auditlog.Describer{"ca.issue": describeIssue},
	})
	if err != nil {
		log.Fatal(err)
	}
	cfg := cluster.Config{
		KeyVault:       vault,
		Handlers:       a.Handlers(), // and the other packages' handlers
		Hooks:          []cluster.Hook{a.Hook()},
		ReplicatedKeys: []string{auditlog.DefaultKeyName},
		// DataDir, BindAddr, Bootstrap or Join …
	}
	c, err := cluster.Open(context.Background(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	a.Start(c, vault)
	mux := http.NewServeMux()
	mux.Handle(audit.APIPrefix, a.API(c)) // behind the auditor role
}
