// Package policies is inkan's policy engine: the issuance profiles, as data, and the
// decisions taken from them. A profile is one YAML file (the shipped ones,
// "signing" and "authentication", are embedded; Shipped) naming the key types a
// subscriber may use, the validity (never past the JPKI certificate's notAfter),
// the certificate's contents as a go.step.sm/crypto/x509util template over the
// verified JPKI identity, key usage, extended key usage, certificate policies, the
// lints it skips (each with a reason), the enrolment rules (accepted JPKI policies,
// revocation source and maximum age, a per-person cap, rate limits per person and
// per client) and the linkage rules (what a JPKI revocation does to the derived
// certificates linked to it).
//
// Parse checks a file and names the line and field of every problem; Load builds a
// Set; Profile.Diff shows an operator what a new version changes. This package is the one
// place that decides; the enrolment API, the CA and the linkage job carry its
// answers and do the I/O. Every decision is a pure function of its inputs, with the
// clock passed in: Set.Decide returns the one Decision (may this enrolment proceed,
// and with what contents), which the enrolment API hands to the CA as it is
// (ca.Request.Decision); Decision.CheckCap, Limiter.Allow; Set.DecideLinkage (revoke, hold then
// revoke, or nothing); and for a re-bind Derived.Rebindable (who may: good, or held by the
// linkage job; unexpired; bound to another card) and Set.DecideRebind (release a
// hold, or re-issue and revoke the old certificate as superseded).
//
// Invariants: basic-4 data (name, birth date, gender, address) never reaches an
// authentication certificate — a profile of that kind whose template reads it is
// refused at load, and its template is not even given the data; the
// authentication pseudonym (a keyed hash of the person record's random
// identifier, never of JPKI data) reaches no other certificate — only an
// authentication profile's template is given it, a signing profile's .Pseudonym is
// another keyed value; CRL distribution
// points, AIA, basic constraints, serial and validity belong to the CA, and a
// template that sets them is refused; errors and decision reasons carry no personal
// data. The package imports only jpki of inkan's packages.
package policies
