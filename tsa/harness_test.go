package tsa

import (
	"bytes"
	"context"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/internal/testenv"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/inkan-pki/inkan/ca"
	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// testPolicy is the TSA policy of the test nodes.
var testPolicy = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 99999, 3161, 1}

// tsaNode is one voter of a test cluster: its own SoftHSM token, the issuing
// authority and the TSA, and an HTTP server of /tsa. Its clock runs skew
// ahead of the machine's.
type tsaNode struct {
	tok  *softhsm.Token
	keys *hsm.Token
	c    *cluster.Cluster
	auth *ca.Authority
	svc  *Service
	url  string
	skew atomic.Int64
}

type testCluster struct {
	t     testing.TB
	g     *clustertest.Group
	nodes []*tsaNode
	dir   string // for files the openssl commands use
}

// newTSACluster starts voters nodes (real Raft over mTLS, real SoftHSM, the
// one multi-node harness clustertest.Voters), each with the issuing authority
// and a TSA of accuracy acc behind an HTTP server of /tsa.
func newTSACluster(t testing.TB, voters int, acc time.Duration) *testCluster {
	t.Helper()
	tc := &testCluster{t: t, dir: t.TempDir()}
	tc.nodes = make([]*tsaNode, voters)
	tc.g = clustertest.Voters(t, voters, clustertest.Options{
		Config: cluster.Config{Handlers: append(ca.Handlers(), Handlers()...), Logger: testenv.Logger(), LeaderLeaseTimeout: 100 * time.Millisecond},
		Open: func(m *clustertest.Member) {
			n := &tsaNode{tok: m.Token, keys: m.Keys, c: m.Cluster}
			var err error
			n.auth, err = ca.New(ca.Config{Cluster: m.Cluster, Keys: m.Keys, CRLShards: 2, Logger: testenv.Logger(),
				URLs: ca.URLs{OCSP: "http://ocsp.inkan.test/", CRL: "http://ocsp.inkan.test/crl/", CAIssuers: "http://ocsp.inkan.test/ca/"}})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(n.auth.Close)
			n.svc, err = New(Config{Cluster: m.Cluster, Keys: m.Keys, Authority: n.auth, Policy: testPolicy,
				Accuracy: acc, Logger: testenv.Logger(), Clock: func() time.Time { return time.Now().Add(time.Duration(n.skew.Load())) }})
			if err != nil {
				t.Fatal(err)
			}
			n.svc.Start()
			t.Cleanup(n.svc.Close)
			srv := httptest.NewServer(n.svc)
			t.Cleanup(srv.Close)
			n.url = srv.URL + Path
			tc.nodes[m.Index] = n
		},
	})
	return tc
}

// leader waits until the nodes agree on a leader and returns it.
func (tc *testCluster) leader() *tsaNode { return tc.nodes[tc.g.Leader().Index] }

func (tc *testCluster) follower() *tsaNode { return tc.nodes[tc.g.Follower().Index] }

// setup makes a self-signed CA and a TSA key of type kt with its certificate,
// writes ca.pem and tsa.pem into tc.dir, and waits until every node signs.
func (tc *testCluster) setup(ctx context.Context, kt hsm.KeyType) (caCert *x509.Certificate, tsaCert Cert) {
	tc.t.Helper()
	in, err := tc.leader().auth.Init(ctx, ca.InitOptions{Key: hsm.ECP256, SelfSign: true,
		Subject: pkix.Name{Country: []string{"JP"}, Organization: []string{"inkan test"}, CommonName: "inkan test CA"}})
	if err != nil {
		tc.t.Fatal(err)
	}
	writePEM(tc.t, filepath.Join(tc.dir, "ca.pem"), in.Cert.Raw)
	return in.Cert, tc.newKey(ctx, kt)
}

// newKey makes a TSA key of type kt and its certificate, writes tsa.pem and
// waits until every node signs with it.
func (tc *testCluster) newKey(ctx context.Context, kt hsm.KeyType) Cert {
	tc.t.Helper()
	l := tc.leader()
	if _, err := l.svc.Init(ctx, InitOptions{Key: kt}); err != nil {
		tc.t.Fatal(err)
	}
	cert, err := l.svc.Certify(ctx, CertifyOptions{Lifetime: 365 * 24 * time.Hour})
	if err != nil {
		tc.t.Fatal(err)
	}
	writePEM(tc.t, filepath.Join(tc.dir, "tsa.pem"), cert.Cert.Raw)
	for _, n := range tc.nodes {
		tc.waitSigning(ctx, n, cert.Cert.SerialNumber.Bytes())
	}
	return cert
}

// waitSigning waits until n signs under the certificate of serial and has
// compared its clock.
func (tc *testCluster) waitSigning(ctx context.Context, n *tsaNode, serial []byte) {
	tc.t.Helper()
	for {
		ts, f := n.svc.signer(ctx)
		if f == nil && !bytes.Equal(ts.cert.SerialNumber.Bytes(), serial) {
			f = failf(systemFailure, "an older certificate")
		}
		if f == nil {
			f = n.svc.clock.check()
		}
		if f == nil {
			return
		}
		select {
		case <-ctx.Done():
			tc.t.Fatalf("node %s never ready to sign: %v", n.c.ID(), f)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func writePEM(t testing.TB, path string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// run runs a command in tc.dir and returns its output; it fails the test if
// the command fails and ok is set.
func (tc *testCluster) run(ok bool, name string, args ...string) (string, error) {
	tc.t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = tc.dir
	out, err := cmd.CombinedOutput()
	if err != nil && ok {
		tc.t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
	return string(out), err
}

// reply is a TimeStampResp as a test reads it.
type reply struct {
	status   int64
	failInfo int // the failure info bit set, -1 if none
	text     string
	token    []byte
}

// parseReply reads a TimeStampResp strictly enough for a test.
func parseReply(t testing.TB, der []byte) reply {
	t.Helper()
	r := reply{failInfo: -1}
	in := cryptobyte.String(der)
	var resp, info cryptobyte.String
	if !in.ReadASN1(&resp, cbasn1.SEQUENCE) || !in.Empty() || !resp.ReadASN1(&info, cbasn1.SEQUENCE) ||
		!info.ReadASN1Int64WithTag(&r.status, cbasn1.INTEGER) {
		t.Fatalf("not a TimeStampResp: %x", der)
	}
	if info.PeekASN1Tag(cbasn1.SEQUENCE) {
		var texts, s cryptobyte.String
		if !info.ReadASN1(&texts, cbasn1.SEQUENCE) || !texts.ReadASN1(&s, cbasn1.UTF8String) {
			t.Fatalf("statusString: %x", der)
		}
		r.text = string(s)
	}
	if info.PeekASN1Tag(cbasn1.BIT_STRING) {
		var bits asn1.BitString
		if !info.ReadASN1BitString(&bits) {
			t.Fatalf("failInfo: %x", der)
		}
		for i := range bits.BitLength {
			if bits.At(i) == 1 {
				if r.failInfo != -1 {
					t.Fatalf("two failure infos: %x", der)
				}
				r.failInfo = i
			}
		}
	}
	if !info.Empty() {
		t.Fatalf("PKIStatusInfo: trailing data")
	}
	if !resp.Empty() {
		var tok cryptobyte.String
		if !resp.ReadASN1Element(&tok, cbasn1.SEQUENCE) || !resp.Empty() {
			t.Fatalf("timeStampToken: %x", der)
		}
		r.token = tok
	}
	return r
}

// tstInfo is what a test reads of a token's TSTInfo.
type tstInfo struct {
	serial  []byte
	genTime string
	nonce   []byte
}

// parseToken reads the TSTInfo of a token (without checking its signature:
// openssl does that).
func parseToken(t testing.TB, token []byte) tstInfo {
	t.Helper()
	in := cryptobyte.String(token)
	var ci, sd, body, eci, econtent, octets, info cryptobyte.String
	var oid asn1.ObjectIdentifier
	ok := in.ReadASN1(&ci, cbasn1.SEQUENCE) && ci.ReadASN1ObjectIdentifier(&oid) &&
		ci.ReadASN1(&sd, cbasn1.Tag(0).Constructed().ContextSpecific()) && sd.ReadASN1(&body, cbasn1.SEQUENCE) &&
		body.SkipASN1(cbasn1.INTEGER) && body.SkipASN1(cbasn1.SET) && body.ReadASN1(&eci, cbasn1.SEQUENCE) &&
		eci.SkipASN1(cbasn1.OBJECT_IDENTIFIER) && eci.ReadASN1(&econtent, cbasn1.Tag(0).Constructed().ContextSpecific()) &&
		econtent.ReadASN1(&octets, cbasn1.OCTET_STRING) && octets.ReadASN1(&info, cbasn1.SEQUENCE)
	var out tstInfo
	var serial, gt cryptobyte.String
	ok = ok && info.SkipASN1(cbasn1.INTEGER) && info.SkipASN1(cbasn1.OBJECT_IDENTIFIER) && info.SkipASN1(cbasn1.SEQUENCE) &&
		info.ReadASN1(&serial, cbasn1.INTEGER) && info.ReadASN1(&gt, cbasn1.GeneralizedTime) &&
		info.SkipOptionalASN1(cbasn1.SEQUENCE)
	if !ok {
		t.Fatalf("not a token: %x", token)
	}
	if info.PeekASN1Tag(cbasn1.INTEGER) {
		var nonce cryptobyte.String
		info.ReadASN1(&nonce, cbasn1.INTEGER)
		out.nonce = nonce
	}
	out.serial, out.genTime = serial, string(gt)
	return out
}

// request builds a TimeStampReq: hash OID content, digest, and optional parts
// (each added only when set).
type request struct {
	version  int64
	hashOID  asn1.ObjectIdentifier
	params   []byte // raw parameters after the OID (nil: none)
	digest   []byte
	policy   asn1.ObjectIdentifier
	nonce    []byte // INTEGER content
	certReq  *bool
	ext      []byte // the [0] extensions' content
	trailing []byte // after the SEQUENCE
}

var (
	sha256OID = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	sha384OID = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	sha512OID = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	sha1OID   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	md5OID    = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}
)

func (r request) der() []byte {
	b := cryptobyte.NewBuilder(nil)
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(r.version)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(r.hashOID)
				b.AddBytes(r.params)
			})
			b.AddASN1OctetString(r.digest)
		})
		if r.policy != nil {
			b.AddASN1ObjectIdentifier(r.policy)
		}
		if r.nonce != nil {
			b.AddASN1(cbasn1.INTEGER, func(b *cryptobyte.Builder) { b.AddBytes(r.nonce) })
		}
		if r.certReq != nil {
			b.AddASN1Boolean(*r.certReq)
		}
		if r.ext != nil {
			b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(r.ext) })
		}
	})
	out := b.BytesOrPanic()
	return append(out, r.trailing...)
}

func goodRequest() request {
	return request{version: 1, hashOID: sha256OID, digest: bytes.Repeat([]byte{0xab}, 32)}
}

func ptr[T any](v T) *T { return &v }

func (tc *testCluster) String() string { return fmt.Sprintf("cluster of %d", len(tc.nodes)) }
