package tsa

import (
	"bytes"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/internal/testenv"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/hsm"
)

// stampWithOpenSSL asks url for a token over data.txt the way the brief says a
// client does, `openssl ts -query … | curl --data-binary @- …`, with the
// query options given, and writes the reply to out.
func (tc *testCluster) stampWithOpenSSL(url, out string, query ...string) reply {
	tc.t.Helper()
	script := `openssl ts -query -data data.txt ` + strings.Join(query, " ") +
		` | curl -sS --data-binary @- -H 'Content-Type: application/timestamp-query' -o ` + out + ` "$1"`
	tc.run(true, "sh", "-c", script, "sh", url)
	der, err := os.ReadFile(filepath.Join(tc.dir, out))
	if err != nil {
		tc.t.Fatal(err)
	}
	return parseReply(tc.t, der)
}

// TestOpenSSLVerifiesTokens: tokens from the leader and from a follower, for
// every key type a TSA key may have, with and without the certificate and a
// nonce, are accepted by `openssl ts -verify` against the data and the CA,
// and `openssl ts -reply -text` shows the policy, the accuracy and the TSA's
// name; a token does not verify against other data.
func TestOpenSSLVerifiesTokens(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster, keys in SoftHSM and openssl")
	}
	ctx := testenv.Context(t, 3*time.Minute)
	tc := newTSACluster(t, 2, time.Second)
	if err := os.WriteFile(filepath.Join(tc.dir, "data.txt"), []byte("a contract to keep for 35 years\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tc.dir, "other.txt"), []byte("another document\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tc.setup(ctx, hsm.ECP256)
	for i, kt := range []hsm.KeyType{hsm.ECP256, hsm.ECP384, hsm.RSA3072} {
		if i > 0 {
			tc.newKey(ctx, kt)
		}
		for _, n := range []*tsaNode{tc.leader(), tc.follower()} {
			role := "leader"
			if n != tc.leader() {
				role = "follower"
			}
			t.Run(string(kt)+"/"+role, func(t *testing.T) {
				r := tc.stampWithOpenSSL(n.url, "reply.tsr", "-sha256", "-cert")
				if r.status != statusGranted || r.token == nil {
					t.Fatalf("reply: %+v", r)
				}
				text, _ := tc.run(true, "openssl", "ts", "-reply", "-in", "reply.tsr", "-text")
				for _, want := range []string{"Status: Granted.", "Policy OID: " + testPolicy.String(), "Accuracy: 0x01 seconds", "TSA: DirName:", "Nonce: 0x"} {
					if !strings.Contains(text, want) {
						t.Errorf("openssl ts -reply -text lacks %q:\n%s", want, text)
					}
				}
				out, _ := tc.run(true, "openssl", "ts", "-verify", "-data", "data.txt", "-in", "reply.tsr", "-CAfile", "ca.pem", "-untrusted", "tsa.pem")
				if !strings.Contains(out, "Verification: OK") {
					t.Fatalf("openssl ts -verify: %s", out)
				}
				// The token carries the TSA certificate (-cert): the CA alone verifies it.
				if out, _ := tc.run(true, "openssl", "ts", "-verify", "-data", "data.txt", "-in", "reply.tsr", "-CAfile", "ca.pem"); !strings.Contains(out, "Verification: OK") {
					t.Fatalf("openssl ts -verify without -untrusted: %s", out)
				}
				if out, err := tc.run(false, "openssl", "ts", "-verify", "-data", "other.txt", "-in", "reply.tsr", "-CAfile", "ca.pem", "-untrusted", "tsa.pem"); err == nil {
					t.Fatalf("a token verified against other data: %s", out)
				}

				// A query kept in a file, SHA-512, no certificate in the token:
				// openssl checks the imprint and the nonce against the query.
				tc.run(true, "openssl", "ts", "-query", "-data", "data.txt", "-sha512", "-out", "query.tsq")
				tc.run(true, "curl", "-sS", "--data-binary", "@query.tsq", "-H", "Content-Type: application/timestamp-query", "-o", "reply2.tsr", n.url)
				if out, _ := tc.run(true, "openssl", "ts", "-verify", "-queryfile", "query.tsq", "-in", "reply2.tsr", "-CAfile", "ca.pem", "-untrusted", "tsa.pem"); !strings.Contains(out, "Verification: OK") {
					t.Fatalf("openssl ts -verify -queryfile: %s", out)
				}
				if out, err := tc.run(false, "openssl", "ts", "-verify", "-queryfile", "query.tsq", "-in", "reply2.tsr", "-CAfile", "ca.pem"); err == nil {
					t.Fatalf("a token without its certificate verified with no TSA certificate given: %s", out)
				}
			})
		}
	}
}

// TestRefusals: each kind of bad request gets its RFC 3161 failure info, in a
// reply openssl reads, from a follower as from the leader.
func TestRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster, keys in SoftHSM and openssl")
	}
	ctx := testenv.Context(t, 2*time.Minute)
	tc := newTSACluster(t, 2, time.Second)
	if err := os.WriteFile(filepath.Join(tc.dir, "data.txt"), []byte("data\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Before there is a TSA certificate: systemFailure.
	r := tc.stampWithOpenSSL(tc.follower().url, "none.tsr", "-sha256")
	if r.failInfo != int(systemFailure) {
		t.Fatalf("before tsa cert: %+v", r)
	}
	tc.setup(ctx, hsm.ECP256)
	if err := os.WriteFile(filepath.Join(tc.dir, "garbage.bin"), []byte("this is not DER"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(tc.dir, "big.bin"), bytes.Repeat([]byte{0x30}, maxRequestSize+1), 0o600); err != nil {
		t.Fatal(err)
	}
	ext := goodRequest()
	ext.ext = oneExtension
	if err := os.WriteFile(filepath.Join(tc.dir, "ext.tsq"), ext.der(), 0o600); err != nil {
		t.Fatal(err)
	}
	n := tc.follower()
	for _, c := range []struct {
		name  string
		query []string // openssl ts -query options; or, with file, curl options
		file  string
		code  string // the HTTP status curl reports
		want  failureInfo
		text  string // openssl ts -reply -text shows it
	}{
		{name: "SHA-1", query: []string{"-sha1"}, want: badAlg, text: "Failure info: unrecognized or unsupported algorithm identifier"},
		{name: "MD5", query: []string{"-md5"}, want: badAlg, text: "unrecognized or unsupported algorithm identifier"},
		{name: "unknown policy", query: []string{"-sha256", "-tspolicy", "1.2.3.4.5"}, want: unacceptedPolicy, text: "Failure info: the requested TSA policy is not supported by the TSA"},
		{name: "malformed", file: "garbage.bin", code: "200", want: badDataFormat, text: "Failure info: the data submitted has the wrong format"},
		{name: "extension", file: "ext.tsq", code: "200", want: unacceptedExtension, text: "requested extension is not supported"},
		{name: "oversized", file: "big.bin", code: "413", want: badDataFormat, text: "wrong format"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var r reply
			if c.file == "" {
				r = tc.stampWithOpenSSL(n.url, "refused.tsr", c.query...)
			} else {
				code, _ := tc.run(true, "curl", "-sS", "--data-binary", "@"+c.file, "-H", "Content-Type: application/timestamp-query",
					"-o", "refused.tsr", "-w", "%{http_code}", n.url)
				if code != c.code {
					t.Fatalf("HTTP %s, want %s", code, c.code)
				}
				der, err := os.ReadFile(filepath.Join(tc.dir, "refused.tsr"))
				if err != nil {
					t.Fatal(err)
				}
				r = parseReply(t, der)
			}
			if r.status != statusRejection || r.failInfo != int(c.want) || r.token != nil || r.text == "" {
				t.Fatalf("reply %+v, want rejection %s", r, c.want)
			}
			text, _ := tc.run(true, "openssl", "ts", "-reply", "-in", "refused.tsr", "-text")
			if !strings.Contains(text, "Status: Rejected.") || !strings.Contains(text, c.text) {
				t.Fatalf("openssl ts -reply -text:\n%s", text)
			}
		})
	}
	// Not the protocol: another method, another media type.
	for _, c := range []struct {
		name string
		args []string
		code string
	}{
		{"GET", []string{"-X", "GET"}, "405"},
		{"form", []string{"--data-binary", "@garbage.bin"}, "415"},
	} {
		code, _ := tc.run(true, "curl", append(c.args, "-sS", "-o", "http.tsr", "-w", "%{http_code}", n.url)...)
		der, err := os.ReadFile(filepath.Join(tc.dir, "http.tsr"))
		if err != nil {
			t.Fatal(err)
		}
		if r := parseReply(t, der); code != c.code || r.failInfo != int(badRequest) {
			t.Errorf("%s: HTTP %s, reply %+v", c.name, code, r)
		}
	}
}

// TestClockOffRefused: a node whose clock is off the leader's by more than
// the accuracy answers timeNotAvailable, and signs again once it is back;
// the leader signs throughout. The comparison is the node's own, over the
// cluster RPC: nothing tells it the skew.
func TestClockOffRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster, keys in SoftHSM")
	}
	ctx := testenv.Context(t, 2*time.Minute)
	tc := newTSACluster(t, 2, 500*time.Millisecond)
	tc.setup(ctx, hsm.ECP256)
	l, f := tc.leader(), tc.follower()
	req := goodRequest().der()
	f.skew.Store(int64(3 * time.Second))
	// Within a comparison or two the follower knows.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		_, fail := f.svc.respond(ctx, req)
		if fail != nil && fail.Info == timeNotAvailable {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a follower 3s ahead still answers %v", fail)
		}
	}
	resp, fail := f.svc.respond(ctx, req)
	if r := parseReply(t, resp); fail == nil || r.failInfo != int(timeNotAvailable) || !strings.Contains(r.text, "off the leader's") {
		t.Fatalf("skewed follower: %+v", r)
	}
	if _, fail := l.svc.respond(ctx, req); fail != nil {
		t.Fatalf("the leader refused: %v", fail)
	}
	// Behind by as much: the same.
	f.skew.Store(int64(-2 * time.Second))
	time.Sleep(2 * clockInterval)
	if _, fail := f.svc.respond(ctx, req); fail == nil || fail.Info != timeNotAvailable {
		t.Fatalf("a follower 2s behind: %v", fail)
	}
	f.skew.Store(0)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if _, fail := f.svc.respond(ctx, req); fail == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("the follower's clock is back, but it answers %v", fail)
		}
	}
}

// TestTokensLogged: every token two nodes issue concurrently is in a
// tsa.tokens batch — its hash, once — the batches are fewer than the tokens,
// the state counts them per node, and serials are distinct, each with its
// node's prefix.
func TestTokensLogged(t *testing.T) {
	if testing.Short() {
		t.Skip("a cluster, keys in SoftHSM")
	}
	ctx := testenv.Context(t, 2*time.Minute)
	tc := newTSACluster(t, 2, time.Second)
	tc.setup(ctx, hsm.ECP256)
	sub := tc.nodes[0].c.Subscribe(4096, commandTokens)
	defer sub.Close()

	const perNode, workers = 200, 16
	type issued struct {
		node  int
		token []byte
	}
	out := make(chan issued, 2*perNode)
	errs := make(chan error, 2*workers)
	for i, n := range tc.nodes {
		for w := range workers {
			go func() {
				for k := w; k < perNode; k += workers {
					r := goodRequest()
					r.nonce = []byte{byte(k + 1)}
					resp, fail := n.svc.respond(ctx, r.der())
					if fail != nil {
						errs <- fail
						return
					}
					out <- issued{i, parseReply(t, resp).token}
				}
				errs <- nil
			}()
		}
	}
	for range 2 * workers {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(out)
	want := map[[32]byte]bool{}
	serials := map[string]bool{}
	prefix := map[int][]byte{}
	for is := range out {
		want[sha256.Sum256(is.token)] = true
		s := parseToken(t, is.token).serial
		if len(s) != serialLen || serials[string(s)] {
			t.Fatalf("serial %x: duplicate or not %d bytes", s, serialLen)
		}
		serials[string(s)] = true
		if p, ok := prefix[is.node]; ok && !bytes.Equal(p, s[:4]) {
			t.Fatalf("node %d: serials with prefixes %x and %x", is.node, p, s[:4])
		}
		prefix[is.node] = s[:4]
	}
	if len(want) != 2*perNode || bytes.Equal(prefix[0], prefix[1]) {
		t.Fatalf("%d tokens; prefixes %x %x", len(want), prefix[0], prefix[1])
	}
	logged, batches := 0, 0
	for logged < 2*perNode {
		select {
		case ev := <-sub.C:
			if ev.Resync {
				t.Fatal("missed tsa.tokens events")
			}
			var b tokensBody
			if err := ev.Entry.Command.Decode(&b); err != nil {
				t.Fatal(err)
			}
			batches++
			for _, h := range b.Tokens {
				if !want[[32]byte(h)] {
					t.Fatalf("a logged hash %x of no token issued, or logged twice", h)
				}
				delete(want, [32]byte(h))
				logged++
			}
		case <-ctx.Done():
			t.Fatalf("%d of %d tokens logged", logged, 2*perNode)
		}
	}
	if batches >= 2*perNode {
		t.Errorf("%d batches for %d tokens: one Raft write per token", batches, 2*perNode)
	}
	t.Logf("%d tokens in %d batches", logged, batches)
	if err := tc.nodes[0].c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	var counts map[string]uint64
	if err := tc.nodes[0].c.View(func(tx *bbolt.Tx) error { var err error; counts, err = countTokens(tx); return err }); err != nil {
		t.Fatal(err)
	}
	for _, n := range tc.nodes {
		if counts[n.c.ID()] != perNode {
			t.Errorf("node %s: %d tokens counted, want %d", n.c.ID(), counts[n.c.ID()], perNode)
		}
	}
}
