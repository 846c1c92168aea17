package policy_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/ca/enroll"
	"github.com/inkan-pki/inkan/ca/policy"
	"github.com/inkan-pki/inkan/cluster"
)

// An operator's change: check and show it, then apply it through Raft. Every node
// following the store decides with the new version once it is applied.
func ExampleApplyCommand() {
	ctx := context.Background()
	var node *cluster.Cluster // opened with policy.Handler() among its Handlers
	data, err := os.ReadFile("signing.yaml")
	if err != nil {
		log.Fatal(err)
	}
	err = node.View(func(tx *bbolt.Tx) error {
		diff, err := policy.Read(tx).Diff("signing.yaml", data)
		fmt.Print(diff)
		return err
	})
	if err != nil {
		log.Fatal(err) // a problem with its line, or policy.ErrVersion
	}
	cmd, err := policy.ApplyCommand("signing.yaml", data, "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := node.Submit(ctx, cmd); err != nil {
		log.Fatal(err)
	}
}

// A node hands each new set of active profiles to its enrolment API.
func ExampleFollow() {
	var (
		node   *cluster.Cluster
		pseudo []byte // the node's pseudonym secret
	)
	pol := enroll.NewProfilePolicy(nil)
	go policy.Follow(context.Background(), node, pseudo, "authentication", pol.Use, func(err error) {
		log.Printf("policy: %v", err)
	})
}
