// Package cluster keeps inkan's replicated state: a hashicorp/raft log (in
// raft-boltdb) feeding a state machine that keeps its own bbolt file, with
// nodes talking mutual TLS 1.3 on one port. The log is synced before an entry
// commits; the state file is not synced per apply, and after the machine (not
// only the process) stopped it is rebuilt from the last snapshot and the log
// (statesync.go). It knows nothing of
// certificates, OCSP or audit: the packages above register handlers for
// their typed, versioned commands (encoded in CBOR core deterministic form,
// the bytes the audit log records), in-transaction hooks, and
// subscriptions. Invariants: every replica applies the same commands to the
// same state with the same leader-stamped time and so writes the same
// bytes; an entry is applied once, in the transaction that records its
// index, and a submission retried across a leader change is applied once;
// a refused command writes nothing and leaves its batch-mates alone, while
// a command a replica cannot apply (unknown type or version, a handler or
// hook failure) stops that replica rather than let it diverge; a node that
// cannot reach the leader serves no ViewCurrent read and accepts no write;
// and no connection without a certificate from the cluster's own CA reaches
// Raft or the RPC (only the join protocol, authenticated by the token's CA
// fingerprint, is served without one). Keys stay in each node's HSM behind
// KeyVault; replicated keys move only wrapped for a voter's HSM (at its
// join, or by ShareKey), never to a nonvoter. The leader acts on the word of
// the node that submits or calls, so it takes from a nonvoter only the
// commands a handler opens to nonvoters (Handler's NonvotersMay) and the
// calls not kept for voters (HandleVoterCall); a call's handler can tell who
// made it (CallerOf).
//
// Backup writes a consistent copy of the state (one read transaction, after
// a read barrier, so any node may take it) and tells its applied index and
// digest; Config.Restore starts a new cluster from such a copy, on an empty
// data dir only. The new cluster's Raft log goes on after the copy's index
// (never re-applying or skipping an entry), the handlers' buckets come
// through byte for byte, and the old cluster's membership — members, join
// tokens, removed nodes, request records — is dropped; the restoring node's
// HSM must hold the replicated keys the state needs, and the cluster CA
// certificate is always new, so the old nodes' certificates are refused
// (see Restore).
//
// Besides the state, a node may keep files under DataDir/shared (SharedDir)
// that peers read over the RPC (FetchShared) and the reader checks against
// hashes the state holds: ca/crl keeps the bytes of old CRLs there, out of
// the state and its snapshots.
package cluster
