// Package audit keeps the cluster's audit log and checks it: an RFC 6962 Merkle tree
// (transparency-dev/merkle) with one leaf per change committed to the replicated
// state, signed checkpoints of its head, inclusion and consistency proofs, an export
// format and an offline verifier that needs nothing of inkan but the audit public key.
// Invariants: a leaf is appended in the same bbolt transaction as its change, so a
// change that cannot be audited does not happen (Log.Append); leaves are
// deterministic CBOR with their own index and Raft index, personal data only as keyed
// hashes (PersonalKey) and certificates only as their SHA-256 (NewIssuedLeaf); a
// checkpoint is only made from the tree's own state, stored once per size and only if
// its root is the tree's root at that size, so two checkpoints of one size cannot
// disagree; and Verify reports every changed, dropped, reordered or truncated leaf and
// every bad or inconsistent checkpoint by its index. docs/audit.md describes the
// formats for auditors.
//
// On a running node the log is a component of the cluster (Service): a cluster.Hook
// appends the leaves of every applied command, built by the describer registered
// for its type and stamped with the entry's Raft index and leader time; a command
// with no describer that is not listed as unaudited stops the node (fail closed).
// The leader signs checkpoints with the replicated audit key in its HSM and stores
// them through Raft (CmdCheckpoint); the key's public half is recorded once in the
// replicated state (CmdKey), so every replica checks every checkpoint against the
// same key across leader changes. Service.API serves the log to auditors, and
// Client reads that API as a Source for Export.
package audit
