package node

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/inkan-pki/inkan/cluster"
)

// The certificates cluster keeps in the data dir: this node's, issued by the
// cluster CA to the key in its HSM, and the cluster CA's.
const (
	nodeCertFile  = "node.pem"
	clusterCAFile = "cluster-ca.pem"
)

// apiCertificate is the API listener's certificate: the node's certificate from
// the cluster CA (subject CN = node ID) and its key in the HSM. Clients trust the
// cluster CA (cluster-ca.pem in the data dir).
func apiCertificate(ctx context.Context, dir string, vault cluster.KeyVault) (tls.Certificate, error) {
	var cert tls.Certificate
	for _, name := range []string{nodeCertFile, clusterCAFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return cert, fmt.Errorf("node: api certificate: %w", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "CERTIFICATE" {
			return cert, fmt.Errorf("node: api certificate: %s holds no PEM certificate", name)
		}
		cert.Certificate = append(cert.Certificate, blk.Bytes)
	}
	key, err := vault.NodeKey(ctx)
	if err != nil {
		return cert, fmt.Errorf("node: api certificate: node key: %w", err)
	}
	cert.PrivateKey = key
	return cert, nil
}

func newAPIServer(h http.Handler, cert tls.Certificate, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler: h,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
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
