// Package node is one running inkan appliance node: it reads a node's configuration
// file (its YAML shape checked by internal/yamlshape), validates it, opens the node's HSM token, starts or joins the Raft cluster
// (or starts a new one from a staged backup) and runs the services above it as
// components: the audit log, the issuing authority with its CRL publisher, the
// profiles and enrollment with the linkage job, the node's own OCSP responder and
// pre-signer, and operator access. Each component gives the cluster its command
// handlers, hooks and replicated keys before it opens, and starts and stops with the
// node, in one lifecycle that starts together and drains together. The node owns the
// listeners: the HTTPS API (enrollment, audit), the plain-HTTP OCSP/CRL listener, the
// operations listener (/healthz, /readyz, /metrics), and the admin API (package
// admin) on a unix socket in the data dir and, for operators, over mutual TLS.
// Invariants: a Config that has not passed Validate is never used; one node runs on a
// data dir at a time; a node whose cluster stopped on its own stops too, and says
// why; every command the node applies is audited or named unaudited with its reason;
// once the cluster has operators, nothing but the node's own status and leave is done
// without one.
package node
