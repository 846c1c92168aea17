package linkage_test

import (
	"log"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/ca/enroll"
	"github.com/inkan-pki/inkan/ca/linkage"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/jpki"
)

// How a node wires the job: the CRL source its verifier asks, the profiles the
// enrolment API decides with, the same link key; the job runs while the node leads.
func ExampleNew() {
	var (
		node      *cluster.Cluster
		authority *ca.Authority
		crl       *jpki.CRLSource       // the node's J-LIS CRL source
		profiles  *enroll.ProfilePolicy // the enrolment API's policy
		linkKey   []byte                // the cluster's link secret
	)
	job, err := linkage.New(linkage.Config{
		State:     node,
		Authority: authority,
		Feed:      crl,
		Profiles:  profiles.Profiles,
		LinkKey:   linkKey,
	})
	if err != nil {
		log.Fatal(err)
	}
	node.OnLeader(job.Run)
}
