// Package log keeps the audit log on a node, as a component of the cluster
// (Service). Its Hook appends, in the same bbolt transaction as the change, the
// leaves the describer registered for each applied command type returns, stamped
// with the entry's Raft index and leader time; a command with no describer that is
// not listed as unaudited stops the node, so a change that cannot be audited does
// not happen. The log is the RFC 6962 tree in the state file, with its node hashes for
// proofs in O(log n) reads. The leader signs checkpoints with the replicated audit
// key in its HSM and stores them through Raft, only with the tree's own root and
// once per size; the key's public half is recorded once, so every replica checks
// every checkpoint against it across leader changes. API serves the log to
// auditors: package audit's API over a snapshot of this node's state.
package log
