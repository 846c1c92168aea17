package main

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/internal/testenv"
	xocsp "golang.org/x/crypto/ocsp"
)

// relyingParty is Debian's nginx as a relying party's TLS front: a client
// certificate is required and verified against the inkan CA, its status is
// asked of inkan's OCSP responder at every handshake (ssl_ocsp, no cache),
// and the pseudonym the certificate carries (its subject's commonName) is
// handed on in a header, which is what the relying party keys its accounts on.
// It is the configuration docs/relying-parties.md shows.
type relyingParty struct {
	addr, dir, serverCA string
	cmd                 *exec.Cmd
}

// relyingPartyConf is the nginx configuration (the http part is what a
// relying party writes; the rest keeps the test's nginx in its directory).
const relyingPartyConf = `daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events { worker_connections 64; }
http {
	access_log {dir}/access.log;
	client_body_temp_path {dir}/tmp;
	proxy_temp_path {dir}/tmp;
	fastcgi_temp_path {dir}/tmp;
	uwsgi_temp_path {dir}/tmp;
	scgi_temp_path {dir}/tmp;

	# The pseudonym is the authentication certificate's subject commonName.
	map $ssl_client_s_dn $inkan_pseudonym {
		default "";
		"~(^|,)CN=(?<cn>[^,]+)" $cn;
	}
	server {
		listen {addr} ssl;
		ssl_certificate {dir}/server.pem;
		ssl_certificate_key {dir}/server.key;

		ssl_client_certificate {ca};   # the inkan CA certificate
		ssl_verify_client on;          # no certificate, no login
		ssl_verify_depth 2;
		ssl_ocsp on;                   # ask OCSP at every handshake
		ssl_ocsp_responder {ocsp};     # inkan's responder (else the certificate's AIA)

		location / {
			# An application behind would get: proxy_set_header X-Inkan-Pseudonym $inkan_pseudonym;
			add_header X-Inkan-Pseudonym $inkan_pseudonym always;
			return 200 "welcome, $inkan_pseudonym\n";
		}
	}
}
`

// startRelyingParty starts nginx trusting caFile and asking ocspURL; it skips
// the test if nginx is not installed.
func startRelyingParty(t *testing.T, caFile, ocspURL string) *relyingParty {
	t.Helper()
	bin := testenv.Tool(t, "nginx", "nginx-light", "/usr/sbin")
	rp := &relyingParty{addr: freeAddrs(t, 1)[0], dir: t.TempDir()}
	if err := os.Mkdir(filepath.Join(rp.dir, "tmp"), 0o700); err != nil {
		t.Fatal(err)
	}
	rp.serverCA = rp.serverCert(t)
	conf := strings.NewReplacer("{dir}", rp.dir, "{addr}", rp.addr, "{ca}", caFile, "{ocsp}", ocspURL).Replace(relyingPartyConf)
	write(t, filepath.Join(rp.dir, "nginx.conf"), conf)
	rp.cmd = exec.Command(bin, "-p", rp.dir, "-c", filepath.Join(rp.dir, "nginx.conf"), "-e", filepath.Join(rp.dir, "error.log"))
	out, err := os.Create(filepath.Join(rp.dir, "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	rp.cmd.Stdout, rp.cmd.Stderr = out, out
	if err := rp.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = rp.cmd.Process.Kill()
		_ = rp.cmd.Wait()
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", rp.addr); err == nil {
			c.Close()
			return rp
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(rp.dir, "error.log"))
			se, _ := os.ReadFile(filepath.Join(rp.dir, "stderr"))
			t.Fatalf("nginx does not listen on %s:\n%s\n%s", rp.addr, se, log)
		}
	}
}

// serverCert makes the relying party's own TLS certificate (self-signed, for
// 127.0.0.1) and returns the file curl trusts it from.
func (rp *relyingParty) serverCert(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relying party"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	cert := filepath.Join(rp.dir, "server.pem")
	write(t, cert, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	write(t, filepath.Join(rp.dir, "server.key"), string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb})))
	return cert
}

// login is a subscriber's client logging in with curl --cert: it returns the
// HTTP status, the pseudonym header nginx set and the body.
func (rp *relyingParty) login(t *testing.T, certFile, keyFile string) (int, string, string) {
	t.Helper()
	headers, body := filepath.Join(t.TempDir(), "headers"), filepath.Join(t.TempDir(), "body")
	out, err := exec.Command("curl", "-sS", "--max-time", "20", "--cacert", rp.serverCA, "--cert", certFile, "--key", keyFile,
		"-D", headers, "-o", body, "-w", "%{http_code}", "https://"+rp.addr+"/").CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(rp.dir, "error.log"))
		t.Fatalf("curl: %v: %s\nnginx:\n%s", err, out, log)
	}
	code, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("curl printed %q", out)
	}
	h, _ := os.ReadFile(headers)
	b, _ := os.ReadFile(body)
	pseudonym := ""
	for _, line := range strings.Split(string(h), "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && strings.EqualFold(k, "X-Inkan-Pseudonym") {
			pseudonym = strings.TrimSpace(v)
		}
	}
	return code, pseudonym, string(b)
}

// errorLog is the end of nginx's error log, which says why it refused a client
// certificate (for a failing test's message).
func (rp *relyingParty) errorLog() string {
	b, _ := os.ReadFile(filepath.Join(rp.dir, "error.log"))
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-8):], "\n")
}

// errNotGood is what verifyOCSP returns for a certificate OCSP does not say
// good for.
var errNotGood = errors.New("relying party: the client certificate's status is not good")

// verifyOCSP is a Go relying party's tls.Config.VerifyConnection: once
// crypto/tls has verified the client's chain to the inkan CA (issuer), it asks
// inkan's responder about the client certificate, checks that the response is
// signed by the CA or by a responder certificate the CA issued (x/crypto/ocsp
// does), is current, and says good. It is what docs/relying-parties.md shows.
func verifyOCSP(issuer *x509.Certificate, responder string, client *http.Client) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
			return errors.New("relying party: no verified client certificate")
		}
		leaf := cs.VerifiedChains[0][0]
		req, err := xocsp.CreateRequest(leaf, issuer, &xocsp.RequestOptions{Hash: crypto.SHA256})
		if err != nil {
			return err
		}
		resp, err := client.Post(responder, "application/ocsp-request", bytes.NewReader(req))
		if err != nil {
			return fmt.Errorf("relying party: OCSP: %w", err)
		}
		defer resp.Body.Close()
		der, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if err != nil {
			return fmt.Errorf("relying party: OCSP: %w", err)
		}
		r, err := xocsp.ParseResponseForCert(der, leaf, issuer) // checks the signature and the responder's certificate
		if err != nil {
			return fmt.Errorf("relying party: OCSP: %w", err)
		}
		if now := time.Now(); now.Before(r.ThisUpdate.Add(-5*time.Minute)) || !now.Before(r.NextUpdate) {
			return fmt.Errorf("relying party: OCSP response not current (%s to %s)", r.ThisUpdate, r.NextUpdate)
		}
		if r.Status != xocsp.Good {
			return fmt.Errorf("%w: serial %x, OCSP status %d", errNotGood, leaf.SerialNumber, r.Status)
		}
		return nil
	}
}

// goRelyingParty is the same login as nginx's, in Go: an HTTPS server that
// requires a client certificate from the inkan CA, checks it with verifyOCSP
// and answers with the pseudonym. refusals receives what VerifyConnection
// returned for a refused handshake.
type goRelyingParty struct {
	url      string
	serverCA *x509.CertPool
	refusals chan error
}

func startGoRelyingParty(t *testing.T, caFile, responder string) *goRelyingParty {
	t.Helper()
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(caPEM)
	if block == nil {
		t.Fatalf("%s holds no certificate", caFile)
	}
	issuer, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(issuer)
	rp := &goRelyingParty{refusals: make(chan error, 16)}
	verify := verifyOCSP(issuer, responder, &http.Client{Timeout: 5 * time.Second})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Accounts are keyed on the pseudonym, never on the serial (a new
		// certificate of the same person keeps it).
		pseudonym := r.TLS.PeerCertificates[0].Subject.CommonName
		w.Header().Set("X-Inkan-Pseudonym", pseudonym)
		fmt.Fprintf(w, "welcome, %s\n", pseudonym)
	}))
	srv.TLS = &tls.Config{
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  clientCAs,
		VerifyConnection: func(cs tls.ConnectionState) error {
			err := verify(cs)
			if err != nil {
				select {
				case rp.refusals <- err:
				default:
				}
			}
			return err
		},
	}
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are the test's
	srv.StartTLS()
	t.Cleanup(srv.Close)
	rp.url = srv.URL
	rp.serverCA = x509.NewCertPool()
	rp.serverCA.AddCert(srv.Certificate())
	return rp
}

// login logs in with the subscriber's certificate and key files: the status
// and the pseudonym header, or the client's error when the handshake fails.
func (rp *goRelyingParty) login(t *testing.T, certFile, keyFile string) (int, string, error) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: rp.serverCA, Certificates: []tls.Certificate{pair}},
	}}
	resp, err := c.Get(rp.url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, resp.Header.Get("X-Inkan-Pseudonym"), nil
}

// needGnuTLS skips the test if GnuTLS's tools are not installed (outside CI,
// where deploy/install-deps.sh installs them).
func needGnuTLS(t *testing.T) {
	t.Helper()
	for _, tool := range []string{"certtool", "ocsptool", "gnutls-cli"} {
		testenv.Tool(t, tool, "gnutls-bin")
	}
}

// gnutlsVerify verifies e's certificate against its CA with GnuTLS's certtool
// under the medium profile (the one GnuTLS names as its next default).
func gnutlsVerify(t *testing.T, e *enrolled) {
	t.Helper()
	out, err := exec.Command("certtool", "--verify", "--verify-profile=medium", "--load-ca-certificate", e.ca, "--infile", e.leaf).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("Chain verification output: Verified.")) {
		t.Fatalf("certtool --verify %s: %v\n%s", e.serial, err, out)
	}
}

// gnutlsStatus asks url (if empty, the responder the certificate names) about
// e's certificate with GnuTLS's ocsptool, which
// verifies the response against the CA (the responder is a delegated one
// whose certificate the response carries), and returns the status it read.
// A response that does not verify fails the test.
func gnutlsStatus(t *testing.T, e *enrolled, url string) string {
	t.Helper()
	ask := "--ask" // the address in the certificate
	if url != "" {
		ask += "=" + url
	}
	out, err := exec.Command("ocsptool", ask, "--load-issuer", e.ca, "--load-cert", e.leaf, "--load-trust", e.ca).CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("Verifying OCSP Response: Success.")) {
		t.Fatalf("ocsptool --ask %s about %s: %v\n%s", url, e.serial, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "Certificate Status: "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("ocsptool --ask %s about %s: no status\n%s", url, e.serial, out)
	return ""
}

// loginGnuTLS is login with gnutls-cli as the subscriber's client: the HTTP
// status (0 if the handshake failed) and the pseudonym header nginx set.
func (rp *relyingParty) loginGnuTLS(t *testing.T, certFile, keyFile string) (int, string) {
	t.Helper()
	host, port, _ := net.SplitHostPort(rp.addr)
	cmd := exec.Command("gnutls-cli", "--x509cafile="+rp.serverCA, "--x509certfile="+certFile, "--x509keyfile="+keyFile,
		"--port="+port, host)
	cmd.Stdin = strings.NewReader("GET / HTTP/1.0\r\nHost: " + host + "\r\n\r\n")
	out, _ := cmd.CombinedOutput() // a refused handshake exits non-zero; the output says which
	code, pseudonym := 0, ""
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "HTTP/1.1 "); ok && code == 0 {
			code, _ = strconv.Atoi(strings.Fields(rest + " ")[0])
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "X-Inkan-Pseudonym") {
			pseudonym = strings.TrimSpace(v)
		}
	}
	return code, pseudonym
}

// gnutlsVerifyWithCRL verifies e's certificate with certtool against its CA
// and the CRL its distribution point names, fetched from p; it returns
// whether certtool trusts it, and fails the test if certtool's answer is
// neither trusted nor revoked.
func gnutlsVerifyWithCRL(t *testing.T, p *proc, e *enrolled) bool {
	t.Helper()
	der := shardCRL(t, p, e)
	crl := filepath.Join(t.TempDir(), "crl.pem")
	write(t, crl, string(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der})))
	out, _ := exec.Command("certtool", "--verify", "--verify-profile=medium", "--load-ca-certificate", e.ca,
		"--load-crl", crl, "--infile", e.leaf).CombinedOutput()
	switch {
	case bytes.Contains(out, []byte("Chain verification output: Verified.")):
		return true
	case bytes.Contains(out, []byte("The certificate chain is revoked.")):
		return false
	}
	t.Fatalf("certtool --verify --load-crl (the shard of %s):\n%s", e.serial, out)
	return false
}
