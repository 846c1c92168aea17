// Package clustertest starts real inkan cluster nodes for the tests of the packages
// above cluster: a node on a loopback port with real bbolt files and its own SoftHSM
// token, so their tests exercise Raft and PKCS#11 as they run in production rather
// than stand-ins for them.
package clustertest
