// Package node is one running inkan appliance node: it reads a node's configuration
// file, validates it, opens the node's HSM token, starts or joins the Raft cluster and
// runs the services above it as components (each gives the cluster its command
// handlers, hooks and replicated keys before it opens, and starts and stops with the
// node) in one lifecycle that starts together and drains together. The node owns the
// listeners: the HTTPS API, the plain-HTTP OCSP/CRL listener, the operations listener
// (/healthz, /readyz, /metrics) and the admin API on a unix socket in the data dir;
// components mount their handlers on them. Invariants: a Config that has not passed
// Validate is never used; one node runs on a data dir at a time; a node whose cluster
// stopped on its own stops too, and says why.
package node
