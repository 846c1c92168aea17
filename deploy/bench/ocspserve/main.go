package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/inkan-pki/inkan/ocsp"
	xocsp "golang.org/x/crypto/ocsp"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:18080", "address to serve OCSP on")
	n := flag.Int("n", 100_000, "cached responses besides the benchmarked one")
	out := flag.String("out", "", "directory to write ca.pem, ca.key, leaf.pem, index.txt, req.der, resp.der into")
	proxyTo := flag.String("proxy-to", "", "instead of serving, forward to this address each connection that sends a byte")
	flag.Parse()

	if *proxyTo != "" {
		check(lazyProxy(*listen, *proxyTo))
		return
	}

	caKey, ca, leaf := pki()
	now := time.Now().UTC().Truncate(time.Second)
	tmpl := xocsp.Response{Status: xocsp.Good, SerialNumber: leaf.SerialNumber, ThisUpdate: now, NextUpdate: now.Add(96 * time.Hour), IssuerHash: crypto.SHA1}
	der, err := xocsp.CreateResponse(ca, ca, tmpl, caKey)
	check(err)
	serials := make([][]byte, 0, *n+1)
	for i := range *n {
		serials = append(serials, []byte{0x41, 0, 0, 0, 0, 0, byte(i >> 16), byte(i >> 8), byte(i)})
	}
	serials = append(serials, leaf.SerialNumber.Bytes())
	handler, err := ocsp.FixedResponder(ca, der, serials...)
	check(err)

	if *out != "" {
		req, err := xocsp.CreateRequest(leaf, ca, &xocsp.RequestOptions{Hash: crypto.SHA1})
		check(err)
		keyDER, err := x509.MarshalPKCS8PrivateKey(caKey)
		check(err)
		write(*out, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Raw}))
		write(*out, "ca.key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
		write(*out, "leaf.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw}))
		write(*out, "req.der", req)
		write(*out, "resp.der", der)
		// openssl ocsp's index: V, expiry, (no revocation), serial in hex, unknown, subject.
		write(*out, "index.txt", fmt.Appendf(nil, "V\t%s\t\t%X\tunknown\t/CN=bench leaf\n",
			leaf.NotAfter.UTC().Format("060102150405Z"), leaf.SerialNumber))
		write(*out, "index.txt.attr", []byte("unique_subject = no\n"))
	}

	srv := ocsp.NewServer(handler)
	log.Printf("ocspserve: %d responses cached, serving on %s", len(serials), *listen)
	check(srv.ListenAndServe(*listen))
}

func pki() (*ecdsa.PrivateKey, *x509.Certificate, *x509.Certificate) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	now := time.Now()
	caT := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "inkan bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caT, caT, key.Public(), key)
	check(err)
	ca, err := x509.ParseCertificate(caDER)
	check(err)
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	leafT := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes([]byte{0x41, 0x7e, 0x57, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06}),
		Subject:      pkix.Name{CommonName: "bench leaf"},
		NotBefore:    now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature,
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafT, ca, leafKey.Public(), key)
	check(err)
	leaf, err := x509.ParseCertificate(leafDER)
	check(err)
	return key, ca, leaf
}

// lazyProxy forwards each connection to target, but dials target only after the
// client has sent its first byte. openssl ocsp (3.0) spins on a connection that is
// closed before it sends anything, which is what wrk's address probe does; this keeps
// that probe away from it.
func lazyProxy(listen, target string) error {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			first := make([]byte, 4096)
			n, err := c.Read(first)
			if err != nil || n == 0 {
				return
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				return
			}
			defer up.Close()
			if _, err := up.Write(first[:n]); err != nil {
				return
			}
			go func() { _, _ = io.Copy(up, c) }()
			_, _ = io.Copy(c, up)
		}()
	}
}

func write(dir, name string, b []byte) {
	check(os.MkdirAll(dir, 0o700))
	check(os.WriteFile(filepath.Join(dir, name), b, 0o600))
}

func check(err error) {
	if err != nil {
		log.Fatal("ocspserve: ", err)
	}
}
