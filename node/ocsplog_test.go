package node_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/node"
)

// TestOCSPListenerLogsThroughSlog: a request the OCSP listener's HTTP server
// cannot parse is the client's problem. It is logged as the API listener's are,
// through the node's logger at debug level with listener=ocsp, and never as a
// line of its own on stderr that ignores the configured level and format and
// carries the client's bytes at every level.
func TestOCSPListenerLogsThroughSlog(t *testing.T) {
	tok := softhsm.NewToken(t)
	cfg := testConfig(t, tok, "  bootstrap: true\n  node_id: solo")
	cfg.Log.Level = "debug"

	// The node's logger writes to os.Stderr as it is when the node starts.
	logFile, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = logFile
	n, err := func() (*node.Node, error) {
		defer func() { os.Stderr = stderr }()
		return node.Start(testenv.Context(t, 60*time.Second), cfg)
	}()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	waitReady(t, n)

	const marker = "GARBAGE-9f3e1c"
	conn, err := net.DialTimeout("tcp", n.Addrs().OCSP, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = conn.Write([]byte(marker + "\r\n\r\n"))
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, _ = conn.Read(make([]byte, 512)) // the server's 400
	conn.Close()

	deadline := time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(logFile.Name())
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if strings.Contains(line, marker) {
				if !strings.Contains(line, "level=DEBUG") || !strings.Contains(line, "listener=ocsp") {
					t.Fatalf("logged, but not as a debug record of the ocsp listener: %s", line)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the malformed request was not logged through the node's logger (listener=ocsp)")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
