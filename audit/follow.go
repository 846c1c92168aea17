package audit

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

// HTTPClient is the auditor's client for a node's HTTPS API: it trusts the CA in
// caFile (PEM; the system roots if empty) and presents the certificate in certFile
// with its key in keyFile when both are given (the auditor role).
func HTTPClient(caFile, certFile, keyFile string) (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		b, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("audit: %s: no PEM certificate", caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, errors.New("audit: give both the client certificate and its key, or neither")
	}
	if certFile != "" {
		c, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}, nil
}

func readKeyFile(keyFile string) (crypto.PublicKey, error) {
	if keyFile == "" {
		return nil, nil
	}
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	k, err := ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w", keyFile, err)
	}
	return k, nil
}

// ExportURL is `inkan audit export --url`: it writes an export of the log served
// at url into dir, from leaf from on, up to the node's newest checkpoint. keyFile,
// if not empty, is the audit key the auditor trusts; the export's audit.pub.pem is
// then that key, and the node's checkpoints are checked against it by Verify. It
// says what it wrote.
func ExportURL(ctx context.Context, url string, hc *http.Client, keyFile, dir string, from uint64) (*Exported, error) {
	key, err := readKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	c, err := NewClient(ctx, url, hc, key)
	if err != nil {
		return nil, err
	}
	return Export(ctx, dir, c, from)
}

// FollowURL is `inkan audit verify --follow URL`: it exports the live log at url
// into a fresh directory under tmp (os.TempDir if empty), verifies it as
// VerifyDirs does, and with a previous export (against) also checks that the live
// log does not fork from it. The export is kept and its directory printed, so it
// can serve as the next `against`.
func FollowURL(ctx context.Context, w io.Writer, url string, hc *http.Client, keyFile, tmp, against string) error {
	dir, err := os.MkdirTemp(tmp, "inkan-audit-")
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	exp, err := ExportURL(ctx, url, hc, keyFile, dir, 0)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "exported %s from %s\n", exp, url)
	dirs := []string{dir}
	if against != "" {
		dirs = append(dirs, against)
	}
	return VerifyDirs(w, keyFile, dirs...)
}
