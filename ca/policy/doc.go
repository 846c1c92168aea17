// Package policy is the store of the issuance profiles: the profile files in the
// cluster's replicated state, with versions, so every node decides with the same
// files and an operator changes them once, through Raft, for all. It decides
// nothing: the decisions are package policies'. A change is one profile file applied with the
// command policy.apply (ApplyCommand builds it, Handler applies it): the file must
// parse as policies.Parse checks it, and its version must be above the active
// version of the profile of that name. Active builds the policies.Set of the active
// profiles for the enrolment API and the linkage job; Follow hands a node each new
// set as it is applied; Seed fills an empty store (the shipped profiles, as version
// 1, never replacing one); Diff shows an operator what a file would change;
// the handler describes each apply for the audit log, in hashes and versions only.
//
// Invariants: the state holds only files that parsed, and a profile's version only
// goes up, so the version a certificate records (ca.Record.PolicyVersion) names one
// file for ever (every version stays in the history, Version); Apply is a pure
// function of the state and the command; the state is the only source of the
// active profiles once any is applied — the shipped files are a starting point an
// operator applies, never a fallback that a software upgrade could change under a
// running cluster. The pseudonym key is a node secret and never enters the state.
package policy
