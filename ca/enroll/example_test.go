package enroll_test

import (
	"log"
	"net/http"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/enroll"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/enrollapi"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/policies"
)

// How a node wires the API: the nonce handler goes into every node's cluster
// configuration, the Handler onto the HTTPS API listener.
func ExampleNewHandler() {
	var (
		verifier *jpki.Verifier   // from the node's jpki configuration (Config.NewVerifier)
		node     *cluster.Cluster // opened with enroll.NonceHandler() among its Handlers
		issuer   *ca.Authority    // the node's issuing authority

		linkKey []byte // the cluster's link secret (32 bytes or more)
		pseudo  []byte // the profiles' pseudonym secret
	)
	_ = cluster.Config{Handlers: append(ca.Handlers(), enroll.NonceHandler())}

	// The shipped authentication profile alone: pseudonymous log-in certificates.
	set, err := policies.Load(policies.Shipped(), pseudo, "authentication")
	if err != nil {
		log.Fatal(err)
	}
	h, err := enroll.NewHandler(enroll.Config{
		Audience: "https://ca.example.jp/v1/enroll",
		Verifier: verifier,
		Cluster:  node,
		Policy:   enroll.NewProfilePolicy(set),
		Issuer:   issuer,
		LinkKey:  linkKey,
	})
	if err != nil {
		log.Fatal(err)
	}
	api := http.NewServeMux()
	api.Handle(enrollapi.PathChallenge, h)
	api.Handle(enrollapi.PathEnroll, h)
}

// With the policy engine: the profiles decide (contents, per-person cap, rate
// limits), and the authority re-binds certificates after a move at PathRebind.
func ExampleNewProfilePolicy() {
	var (
		verifier *jpki.Verifier
		node     *cluster.Cluster
		issuer   *ca.Authority
		linkKey  []byte
		pseudo   []byte // the pseudonym secret the profiles' subjects are keyed with
	)
	set, err := policies.Load(policies.Shipped(), pseudo, "authentication")
	if err != nil {
		log.Fatal(err)
	}
	pol := enroll.NewProfilePolicy(set) // pol.Use(newSet) when a new version is active
	h, err := enroll.NewHandler(enroll.Config{
		Audience: "https://ca.example.jp/v1/enroll",
		Verifier: verifier,
		Cluster:  node,
		Policy:   pol,
		Issuer:   issuer,
		Rebinder: issuer,
		LinkKey:  linkKey,
	})
	if err != nil {
		log.Fatal(err)
	}
	api := http.NewServeMux()
	for _, p := range []string{enrollapi.PathChallenge, enrollapi.PathEnroll, enrollapi.PathRebind} {
		api.Handle(p, h)
	}
}
