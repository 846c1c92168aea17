// Package operator is inkan's access model for the people who run it: operator
// identities, their roles, and dual control. Operators authenticate to the admin
// API with client certificates issued by the operator CA, whose key is a
// replicated key ("operator-ca") in every voter's HSM and whose certificate, with the
// operator records, lives in the cluster's replicated state; an operator's key
// stays with them (a file, a PKCS#11 token) and the package sees only their CSR.
// The first admin is made by Bootstrap, others are added and removed by admins,
// and each operator renews their own certificate. The role (Admin, Officer,
// Auditor) is carried in the certificate as a URI name; Verify accepts a
// certificate only if the operator CA issued it, it is valid now, and it belongs
// to an active operator record of that role, and Authorize checks an action
// against the one role matrix, naming the role needed when it refuses. Actions
// named by a Rule need M approvals by other active operators of the rule's role —
// signatures over the request's digest (approvalMessage), verified in the state
// machine against the approvers' certificates — before they run; the proposer's
// own approval never counts, a rejection ends a request, and a request expires
// at a time the state machine decides by entry time, not by a node's clock.
// Invariants: certificates are signed on the leader only and count for nothing
// until their operator record is committed, and only for a voter's asking; a
// nonvoter (an OCSP edge) may submit only decisions, which approvers sign (the
// cluster refuses it the rest); a proposal is held to the rules the state
// records; the last admin cannot be removed; an
// approved request is executed at most once, by the leader that committed its
// start, and a request carried out by the package itself (adding or removing an
// operator) is marked executed in the transaction of the change, so it is never
// lost nor run twice across a leader change. Each handler tells the audit log
// about its commands (Describe), in identifiers and hashes only.
package operator
