package cluster

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"io"
	"testing"
	"time"
)

// strangerCert is a node certificate from another cluster's CA.
func strangerCert(t *testing.T) tls.Certificate {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca, err := newClusterCA(caKey, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := issueNodeCert(ca, caKey, key.Public(), "stranger", Voter, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	node, _ := x509.ParseCertificate(der)
	return tlsCertificate(node, ca, key)
}

func TestStrangersNeverReachRaft(t *testing.T) {
	nodes := newTestCluster(t, 1, nil)
	c := nodes[0].c
	before := c.net.raftConns.Load()
	stranger := strangerCert(t)
	cases := []struct {
		name  string
		alpn  string
		certs []tls.Certificate
	}{
		{"raft without client cert", alpnRaft, nil},
		{"raft with another CA's cert", alpnRaft, []tls.Certificate{stranger}},
		{"rpc without client cert", alpnRPC, nil},
		{"rpc with another CA's cert", alpnRPC, []tls.Certificate{stranger}},
		{"no protocol", "", nil},
		{"tls 1.2", alpnRaft, []tls.Certificate{stranger}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := &tls.Config{InsecureSkipVerify: true, Certificates: tc.certs, MinVersion: tls.VersionTLS13}
			if tc.alpn != "" {
				cfg.NextProtos = []string{tc.alpn}
			}
			if tc.name == "tls 1.2" {
				cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, tls.VersionTLS12
			}
			conn, err := tls.Dial("tcp", c.Addr(), cfg)
			if err != nil {
				return // refused in the handshake
			}
			defer conn.Close()
			// In TLS 1.3 the client finishes its handshake before the server
			// checks the client's certificate: the refusal shows on read.
			_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, _ = conn.Write([]byte{0, 1, 2, 3}) // would be an AppendEntries frame
			if _, err := conn.Read(make([]byte, 1)); err == nil {
				t.Fatal("server answered a connection it should have refused")
			}
		})
	}
	if got := c.net.raftConns.Load(); got != before {
		t.Fatalf("%d refused connections reached Raft", got-before)
	}
	// Control: a node of the cluster does get through.
	conn, err := tls.Dial("tcp", c.Addr(), c.net.clientConfig(alpnRaft))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for deadline := time.Now().Add(5 * time.Second); c.net.raftConns.Load() == before; {
		if time.Now().After(deadline) {
			t.Fatal("a genuine node connection did not reach Raft")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestJoinProtocolServesOnlyJoin(t *testing.T) {
	nodes := newTestCluster(t, 1, nil)
	c := nodes[0].c
	conn, err := tls.Dial("tcp", c.Addr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpnJoin}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	w, r := bufio.NewWriter(conn), bufio.NewReader(conn)
	if err := writeFrame(w, rpcRequest{Op: opSubmit, ID: []byte("x"), Cmd: []byte{0x80}}); err != nil {
		t.Fatal(err)
	}
	var resp rpcResponse
	if err := readFrame(r, &resp); err != nil {
		t.Fatal(err)
	}
	if resp.err() == nil {
		t.Fatal("join protocol ran a submit")
	}
	// One request per connection: the server hangs up after answering.
	if _, err := r.ReadByte(); err != io.EOF {
		t.Fatalf("connection still open after the answer: %v", err)
	}
	if got := counts(t, c); len(got) != 0 {
		t.Fatalf("state changed: %v", got)
	}

	// A joiner may not make the node buffer a large frame.
	conn2, err := tls.Dial("tcp", c.Addr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{alpnJoin}, MinVersion: tls.VersionTLS13})
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	_ = conn2.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn2.Write(binary.BigEndian.AppendUint32(nil, maxJoinFrame+1)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn2.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("oversized join frame: read err = %v, want the server to hang up", err)
	}
}
