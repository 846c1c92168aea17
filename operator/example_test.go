package operator_test

import (
	"context"
	"crypto"
	"fmt"
	"log"
	"net/http"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/operator"
)

// How a node wires the operator service: its handlers go into the cluster's
// configuration (the operator CA key is not among the replicated keys every
// join sends: the service shares it with the voters itself); the service
// starts once the cluster is open, with the runner of the actions
// under dual control that the node executes; the admin API verifies the TLS
// client, authorizes the action, and proposes what needs approval.
func ExampleService() {
	var vault cluster.KeyVault // the node's HSM: cluster.NewHSMVault(token)
	c, err := cluster.Open(context.Background(), cluster.Config{
		KeyVault: vault,
		Handlers: operator.Handlers(), // and the other packages' handlers
		// DataDir, BindAddr, Bootstrap or Join, the audit hook …
	})
	if err != nil {
		log.Fatal(err)
	}
	applyPolicy := func(ctx context.Context, r operator.Request) ([]byte, error) {
		// r.Body is the policy the approvers signed for; apply it and return
		// what to record (e.g. the new policy version).
		return []byte("version 7"), nil
	}
	ops, err := operator.New(operator.Config{
		Cluster: c,
		Vault:   vault,
		Rules:   nil, // from the node's configuration; nil for the default rules
		Run:     applyPolicy,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer ops.Close()

	http.HandleFunc("PUT /admin/v1/policies", func(w http.ResponseWriter, r *http.Request) {
		var op operator.Operator
		var need bool
		body := []byte("the policy, canonical") // read and canonicalise the request
		err := c.View(func(tx *bbolt.Tx) error {
			var err error
			op, err = operator.Verify(tx, r.TLS.PeerCertificates, time.Now())
			return err
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		if err := operator.Authorize(op, "policy.apply"); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden) // problem+json naming the role
			return
		}
		err = c.View(func(tx *bbolt.Tx) error {
			var err error
			_, need, err = ops.Required(tx, op, "policy.apply", 1)
			return err
		})
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		if !need {
			// apply it now, with op.Actor() as the audit actor
			return
		}
		q, err := ops.Propose(r.Context(), op, "policy.apply", body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusConflict)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, "request %s, digest %x\n", q.ID, q.Digest)
	})
}

// An approver's side (the CLI): show the request, sign the approval with the
// operator's key — a file, or a PKCS#11 token's crypto.Signer — and send it.
func ExampleSignApproval() {
	var key crypto.Signer // the operator's key
	var q operator.Request
	sig, err := operator.SignApproval(key, q.ID, q.Digest, operator.Approve)
	if err != nil {
		log.Fatal(err)
	}
	_ = sig // POST /admin/v1/approvals/{id} {"decision":"approve","signature":…}
}
