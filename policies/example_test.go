package policies_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
	"github.com/inkan-pki/inkan/jpki"
	"github.com/inkan-pki/inkan/jpki/jpkisim"
	"github.com/inkan-pki/inkan/policies"
)

// Load the shipped profiles, as a node does at start. An enrolment then calls
// Set.Decide with the verified JPKI certificate and the CSR's key.
func ExampleLoad() {
	key := bytes.Repeat([]byte{0x42}, 32) // the cluster's pseudonym key: a secret
	set, err := policies.Load(policies.Shipped(), key, "authentication")
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, name := range set.Names() {
		p, _ := set.Profile(name)
		fmt.Println(p.Name, p.Kind, "v", p.Version, p.KeyUsage)
	}
	// Output:
	// authentication authentication v 1 [digitalSignature]
	// signing signing v 2 [digitalSignature nonRepudiation]
}

// Check a profile file before activating it: every problem names its line and field.
func ExampleParse() {
	src, _ := fs.ReadFile(policies.Shipped(), "authentication.yaml")
	bad := strings.Replace(string(src), "toJson .Pseudonym", "toJson .JPKI.Name", 1)
	_, err := policies.Parse("authentication.yaml", []byte(bad))
	fmt.Println(err)
	// Output:
	// policies: invalid profile: authentication.yaml:11: template: .JPKI.Name is basic-4 data, refused in an authentication profile
}

// Show an operator what a new version of a profile changes.
func ExampleProfile_Diff() {
	src, _ := fs.ReadFile(policies.Shipped(), "signing.yaml")
	active, _ := policies.Parse("signing.yaml", src)
	next := strings.NewReplacer("version: 2", "version: 3", "validity: 8760h", "validity: 4380h").Replace(string(src))
	candidate, err := policies.Parse("signing.yaml", []byte(next))
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, line := range strings.Split(active.Diff(candidate), "\n") {
		if strings.HasPrefix(line, "-") || strings.HasPrefix(line, "+") {
			fmt.Println(line)
		}
	}
	// Output:
	// --- signing v2 (active)
	// +++ signing v3 (candidate)
	// - version: 2
	// + version: 3
	// - validity: 8760h0m0s
	// + validity: 4380h0m0s
}

// What the leader's linkage job does when a J-LIS CRL reports a move: hold the
// derived certificate, and revoke it if it is not re-bound within the grace period.
func ExampleSet_DecideLinkage() {
	set, _ := policies.Load(policies.Shipped(), bytes.Repeat([]byte{0x42}, 32), "signing")
	moved := jpki.RevokedEntry{Reason: crlreason.AffiliationChanged, RevokedAt: time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)}
	cert := policies.Derived{NotAfter: time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)}

	d := set.DecideLinkage("signing", moved, cert, moved.RevokedAt.Add(time.Hour))
	fmt.Println(d.Act, d.Until.Format(time.DateOnly))
	cert.Held = true
	d = set.DecideLinkage("signing", moved, cert, d.Until)
	fmt.Println(d.Act, d.Reason)
	// Output:
	// hold 2026-05-01
	// revoke affiliationChanged
}

// Rate limits are token buckets by key; the caller passes the clock.
func ExampleLimiter() {
	l := policies.Rate{Every: time.Minute, Burst: 2}.Limiter()
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for i := range 3 {
		ok, wait := l.Allow("203.0.113.7", t0)
		fmt.Println(i, ok, wait)
	}
	// Output:
	// 0 true 0s
	// 1 true 0s
	// 2 false 1m0s
}

// Decide on a verified enrolment: the profile's certificate contents and bounds.
// (The JPKI certificate here comes from the stand-in J-LIS; in a node it is the one
// jpki.Verifier checked, with the revocation answer it used.)
func ExampleSet_Decide() {
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)
	rootKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	cardKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	sim, err := jpkisim.Init(jpkisim.Config{Dir: dir, Key: rootKey})
	if err != nil {
		fmt.Println(err)
		return
	}
	issued, _ := sim.IssueCertificate(&cardKey.PublicKey, jpkisim.CardSpec{Person: jpkisim.DemoPerson(), Policy: jpki.PolicyProduction})
	sc, _ := jpki.ParseSignatureCertificate(issued.DER)

	set, _ := policies.Load(policies.Shipped(), bytes.Repeat([]byte{0x42}, 32), "authentication")
	subscriber, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	d, err := set.Decide(policies.Request{
		Profile:          "authentication",
		JPKI:             sc,
		Person:           []byte("the-record-id-16"), // the CA's person record (random)
		PublicKey:        &subscriber.PublicKey,
		Revocation:       jpki.Status{State: jpki.StateGood, ThisUpdate: now.Add(-time.Hour)},
		RevocationSource: jpki.RevocationCRL,
		At:               now,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(d.Profile, d.PolicyVersion, len(d.Template.Subject.CommonName), d.Template.ExtKeyUsage, d.MaxPerPerson)
	// Output:
	// authentication 1 64 [clientAuth] 5
}
