// Package admin is the admin API of a node, and its client. One routes table
// names, for every route, the action it performs in the role matrix; a guard
// admits the caller by that action (the node's user on the unix socket until the
// cluster has operators, an operator's certificate over mutual TLS), decodes the
// request body once, strictly, and, where a rule of dual control covers the
// action, records the request instead of running it; RunApproved replays it on
// the leader once enough operators have approved. The handlers act through the
// cluster and the services the node gives in Config (the authority, operators,
// the TSA); the wire types and the problem types (Problem, named by Name) are
// shared with Client, which `inkan admin` uses over either listener. Backups are signed with
// the audit key and checked offline with VerifyBackup. The package opens no
// listener and keeps no state of its own: the node serves Socket and TLS.
package admin
