package ca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/policies"
)

var testURLs = URLs{OCSP: "http://ocsp.inkan.test/", CRL: "http://crl.inkan.test/crl/", CAIssuers: "http://crl.inkan.test/ca/"}

// caNode is one node of a test cluster with its authority, restartable from its
// data directory.
type caNode struct {
	t     testing.TB
	tok   *softhsm.Token
	keys  *hsm.Token // the token the authority uses (a second view of tok, or a shared one)
	vault cluster.KeyVault
	cfg   cluster.Config
	mode  keyMode
	c     *cluster.Cluster
	a     *Authority
	down  atomic.Bool      // crashed: c and a are stopped but kept for inspection
	clock func() time.Time // the authority's Config.Now (nil: time.Now)
}

// newTok opens a fresh SoftHSM token with a pool big enough for parallel signing.
func newTok(t testing.TB) (*softhsm.Token, *hsm.Token) {
	tk := softhsm.NewToken(t)
	cfg := tk.Config()
	cfg.Logger = testenv.Logger()
	cfg.Sessions = 8
	tok, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tok.Close() })
	return tk, tok
}

func fastConfig(t testing.TB, vault cluster.KeyVault) cluster.Config {
	return cluster.Config{
		DataDir:            t.TempDir(),
		BindAddr:           "127.0.0.1:0",
		KeyVault:           vault,
		Handlers:           Handlers(),
		Logger:             testenv.Logger(),
		HeartbeatTimeout:   300 * time.Millisecond,
		ElectionTimeout:    300 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond,
		CommitTimeout:      5 * time.Millisecond,
		RequestTimeout:     10 * time.Second,
	}
}

func (n *caNode) open(ctx context.Context) {
	n.t.Helper()
	c, err := cluster.Open(ctx, n.cfg)
	if err != nil {
		n.t.Fatalf("open %s: %v", n.cfg.DataDir, err)
	}
	n.c = c
	n.cfg.BindAddr, n.cfg.AdvertiseAddr = c.Addr(), c.Addr()
	n.cfg.Bootstrap, n.cfg.Join = false, nil
	a, err := New(Config{Cluster: c, Keys: n.keys, SharedHSM: n.mode == sharedHSM, URLs: testURLs, CRLShards: 4, Now: n.clock, Logger: testenv.Logger()})
	if err != nil {
		n.t.Fatal(err)
	}
	n.a = a
}

// kill stops the node without leaving the cluster (as a crash would, but with its
// files closed).
func (n *caNode) kill() {
	if n.c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.c.Shutdown(ctx)
	n.a.Close()
	n.c, n.a = nil, nil
}

type testCluster struct {
	t     testing.TB
	nodes []*caNode
}

// newCACluster starts voters nodes in mode. For sharedHSM, shared says which nodes
// (by index) see the shared token; the others get a token of their own.
func newCACluster(t testing.TB, voters int, mode keyMode, shared ...int) *testCluster {
	return newCAClusterWith(t, voters, mode, nil, shared...)
}

func newCAClusterWith(t testing.TB, voters int, mode keyMode, tweak func(*cluster.Config), shared ...int) *testCluster {
	t.Helper()
	ctx := testenv.Context(t, 90*time.Second)
	tc := &testCluster{t: t}
	t.Cleanup(func() {
		for _, n := range tc.nodes {
			n.kill()
		}
	})
	var sharedTok *hsm.Token
	if mode == sharedHSM {
		_, sharedTok = newTok(t)
	}
	for i := range voters {
		tk, tok := newTok(t)
		n := &caNode{t: t, tok: tk, keys: tok, vault: cluster.NewHSMVault(tok), mode: mode}
		for _, s := range shared {
			if s == i {
				n.keys = sharedTok
			}
		}
		n.cfg = fastConfig(t, n.vault)
		if tweak != nil {
			tweak(&n.cfg)
		}
		if i == 0 {
			n.cfg.Bootstrap = true
		} else {
			jt := clustertest.JoinToken(t, tc.nodes[0].c, n.cfg, cluster.Voter)
			n.cfg.Join = &cluster.Join{Addr: tc.nodes[0].c.Addr(), Token: jt}
		}
		n.open(ctx)
		tc.nodes = append(tc.nodes, n)
		if i == 0 {
			tc.leader()
		}
	}
	return tc
}

// leader waits until the running nodes agree on a leader and returns it.
func (tc *testCluster) leader() *caNode {
	tc.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		var leader *caNode
		agree := true
		for _, n := range tc.running() {
			id, _ := n.c.Leader()
			if id == "" {
				agree = false
				break
			}
			for _, m := range tc.running() {
				if m.c.ID() == id && m.a.leading() {
					leader = m
				}
			}
		}
		if agree && leader != nil {
			return leader
		}
		time.Sleep(20 * time.Millisecond)
	}
	tc.t.Fatal("no leader elected")
	return nil
}

func (tc *testCluster) follower() *caNode {
	l := tc.leader()
	for _, n := range tc.running() {
		if n != l {
			return n
		}
	}
	tc.t.Fatal("no follower")
	return nil
}

func (tc *testCluster) running() []*caNode {
	var out []*caNode
	for _, n := range tc.nodes {
		if n.c != nil && !n.down.Load() {
			out = append(out, n)
		}
	}
	return out
}

var testSubject = pkix.Name{Country: []string{"JP"}, Organization: []string{"inkan test"}, CommonName: "inkan test issuing CA"}

// initCA makes a self-signed issuing CA on the leader.
func (tc *testCluster) initCA(ctx context.Context, key hsm.KeyType) *Initialized {
	tc.t.Helper()
	in, err := tc.leader().a.Init(ctx, InitOptions{Key: key, Subject: testSubject, SelfSign: true})
	if err != nil {
		tc.t.Fatal(err)
	}
	return in
}

// derivedRequest is the representative derived-certificate request: a pseudonymous
// CN and C=JP, digitalSignature and nonRepudiation.
func derivedRequest(t testing.TB) (Request, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pseud := make([]byte, 8)
	rand.Read(pseud)
	link, person := make([]byte, 32), make([]byte, 32)
	rand.Read(link)
	rand.Read(person)
	return Request{
		Decision: policies.Decision{
			Profile:       "derived-signing",
			PolicyVersion: 3,
			Template: &x509.Certificate{
				Subject:  pkix.Name{Country: []string{"JP"}, CommonName: fmt.Sprintf("%x", pseud)},
				KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
			},
			NotAfter: time.Now().Add(365 * 24 * time.Hour),
		},
		PublicKey: key.Public(),
		Link:      link,
		Person:    person,
	}, key
}

// lookupEverywhere returns the record of serial on every running node, once each
// has applied everything committed.
func (tc *testCluster) lookupEverywhere(ctx context.Context, serial []byte) []Record {
	tc.t.Helper()
	var out []Record
	for _, n := range tc.running() {
		if err := n.c.Barrier(ctx); err != nil {
			tc.t.Fatal(err)
		}
		var r Record
		err := n.c.View(func(tx *bbolt.Tx) error {
			var err error
			r, err = Read(tx).Lookup(new(big.Int).SetBytes(serial))
			return err
		})
		if err != nil {
			tc.t.Fatalf("node %s: %v", n.c.ID(), err)
		}
		out = append(out, r)
	}
	return out
}

// keyMode is how a test cluster's voters hold the CA key (Config.SharedHSM).
type keyMode int

const (
	perNodeHSM keyMode = iota // each voter its own HSM
	sharedHSM                 // one HSM, the key found by label
)
