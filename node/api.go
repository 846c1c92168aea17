package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/inkan-pki/inkan/cluster"
)

// The certificates cluster keeps in the data dir: this node's, issued by the
// cluster CA to the key in its HSM, and the cluster CA's.
const (
	nodeCertFile  = "node.pem"
	clusterCAFile = "cluster-ca.pem"
)

// apiCertificate is the API listener's certificate and key, and the node's
// own certificate. The node's certificate (from the cluster CA, subject CN =
// node ID, its key in the HSM) names no host; so a voter, which holds the
// cluster CA key, certifies the same key again for the hosts clients reach the
// API at (api.public_url's, api.listen's), each start. A nonvoter serves the
// node certificate. Clients trust the cluster CA (cluster-ca.pem in the data dir).
func apiCertificate(ctx context.Context, cfg *Config, vault cluster.KeyVault) (cert tls.Certificate, nodeCert []byte, err error) {
	var certs []*x509.Certificate
	for _, name := range []string{nodeCertFile, clusterCAFile} {
		b, err := os.ReadFile(filepath.Join(cfg.DataDir, name))
		if err != nil {
			return cert, nil, fmt.Errorf("node: api certificate: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return cert, nil, fmt.Errorf("node: api certificate: %s holds no PEM certificate", name)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return cert, nil, fmt.Errorf("node: api certificate: %s: %w", name, err)
		}
		certs = append(certs, c)
		cert.Certificate = append(cert.Certificate, blk.Bytes)
	}
	key, err := vault.NodeKey(ctx)
	if err != nil {
		return cert, nil, fmt.Errorf("node: api certificate: node key: %w", err)
	}
	cert.PrivateKey = key
	nodeCert = cert.Certificate[0]

	caKey, err := vault.ReplicatedKey(ctx, cluster.CAKeyName, false)
	if err != nil {
		return cert, nodeCert, nil // a nonvoter
	}
	tmpl := &x509.Certificate{
		SerialNumber: new(big.Int).SetBytes(randomBytes(16)),
		Subject:      certs[0].Subject,
		NotBefore:    time.Now().Add(-time.Minute),
		NotAfter:     certs[0].NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	tmpl.SerialNumber.SetBit(tmpl.SerialNumber, 126, 1)
	for _, h := range apiHosts(cfg) {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, certs[1], key.Public(), caKey)
	if err != nil {
		return cert, nil, fmt.Errorf("node: api certificate: %w", err)
	}
	cert.Certificate[0] = der
	return cert, nodeCert, nil
}

// apiHosts are the host names and addresses the API certificate names.
func apiHosts(cfg *Config) []string {
	var hosts []string
	add := func(h string) {
		if h != "" && !isUnspecified(h) && !slices.Contains(hosts, h) {
			hosts = append(hosts, h)
		}
	}
	if u, err := url.Parse(cfg.API.PublicURL); err == nil {
		add(u.Hostname())
	}
	if h, _, err := net.SplitHostPort(cfg.API.Listen); err == nil {
		add(h)
	}
	return hosts
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return b
}

func newAPIServer(h http.Handler, cert tls.Certificate, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler: h,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
			// Asked, not required: enrollment needs none; the audit API
			// checks an auditor's once the cluster has operators.
			ClientAuth: tls.RequestClientCert,
		},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          httpLog(log, "api"),
	}
}

// httpLog routes net/http's own messages (TLS handshake errors and the like) to
// slog at debug level: they are the clients' problems, not the node's.
func httpLog(l *slog.Logger, listener string) *log.Logger {
	return slog.NewLogLogger(l.With("listener", listener).Handler(), slog.LevelDebug)
}
