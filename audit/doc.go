// Package audit is the audit log's formats and the auditor's tools, with nothing of
// the node in its imports (of inkan only certserial), so an auditor vendors it alone.
// A leaf is one committed change in deterministic CBOR, personal data only as keyed
// hashes and certificates only as their SHA-256; a Checkpoint signs
// the RFC 6962 tree's head (origin, size, root, time) with the ECDSA P-256 audit key.
// Export writes a Source (a node's log, or the audit API read through Client) as a
// directory; Verify rebuilds the tree from it and reports every changed, dropped,
// reordered or truncated leaf and every bad or inconsistent checkpoint by its index;
// VerifyDirs given two exports also finds where they fork; Prove gives a certificate's
// or a time-stamp token's inclusion proofs. NewAPI serves the audit API from a node's
// Snapshot and Client reads it, so both ends of the API live here. These are `inkan
// audit verify|prove|compare|export`; docs/audit.md describes the formats. The node
// keeps the log in audit/log.
package audit
