// Package node is one running inkan appliance node: it reads a node's configuration
// file, validates it, opens the node's HSM token, joins or starts the Raft cluster and
// wires the services above it (issuance, enrollment, OCSP, CRLs, audit, admin API)
// into one lifecycle that starts together and drains together. It holds no logic of
// its own beyond that wiring; a Config that has not passed Validate is never used.
package node
