package main

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

	"github.com/inkan-pki/inkan/audit"
	"github.com/spf13/cobra"
)

// newAuditCmd is `inkan audit`: the auditor's tools, offline (verify, prove) and
// against a node's audit API (export --url, verify --follow).
func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Verify an exported audit log offline and prove what is in it",
	}
	cmd.AddCommand(newAuditVerifyCmd(), newAuditProveCmd(), newAuditExportCmd())
	return cmd
}

func newAuditVerifyCmd() *cobra.Command {
	var key, against, follow string
	var tc auditTLS
	cmd := &cobra.Command{
		Use: "verify DIR [DIR2] | verify --follow URL [--against DIR]",
		Example: `  inkan audit verify export/
  inkan audit verify export-a/ export-b/      # and that the two do not fork
  inkan audit verify --follow https://ca.example.jp:8443 --cacert cluster-ca.pem --cert auditor.pem --cert-key auditor.key`,
		Short: "Check every leaf, checkpoint signature and root of an export; with two exports, check they do not fork",
		Long: `verify recomputes every leaf hash and the Merkle tree of the export in DIR, checks
every checkpoint's signature and that its root is the tree's root at its size, and
prints one line per problem with the leaf index (a checkpoint's problems carry its
size). With a second export (DIR2 or --against) it also checks that the two are one
history. It exits non-zero if anything is wrong. Pin the audit key with --key: without
it the export's own audit.pub.pem is used, and its fingerprint is printed to compare.
With --follow URL it first exports the live log from a node's audit API into a new
temporary directory (printed, to keep as the next --against) and verifies that.`,
		Args: cobra.RangeArgs(0, 2),
		RunE: func(cmd *cobra.Command, args []string) error {
			if follow != "" {
				if len(args) > 0 {
					return errors.New("audit verify: with --follow, give no DIR (use --against for an earlier export)")
				}
				hc, err := tc.client()
				if err != nil {
					return err
				}
				return followURL(cmd.Context(), cmd.OutOrStdout(), follow, hc, key, "", against)
			}
			if len(args) == 0 {
				return errors.New("audit verify: give an export directory, or --follow URL")
			}
			dirs := args
			if against != "" {
				dirs = append(dirs, against)
			}
			if len(dirs) > 2 {
				return errors.New("audit verify: give DIR2 or --against, not both")
			}
			return audit.VerifyDirs(cmd.OutOrStdout(), key, dirs...)
		},
	}
	cmd.Flags().StringVar(&key, "key", "", "the audit public key (PEM) to trust, instead of the export's own")
	cmd.Flags().StringVar(&against, "against", "", "another export of the same log (e.g. an earlier one) to check for a fork")
	cmd.Flags().StringVar(&follow, "follow", "", "export the live log from this node's API (https://host:port) and verify it")
	tc.flags(cmd)
	return cmd
}

// auditTLS is how the auditor reaches a node's HTTPS API.
type auditTLS struct{ ca, cert, key string }

// client is the auditor's client for a node's HTTPS API: it trusts the CA in
// --cacert (PEM; the system roots if empty) and presents the certificate in
// --cert with its key in --cert-key when both are given (the auditor role).
func (t *auditTLS) client() (*http.Client, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.ca != "" {
		b, err := os.ReadFile(t.ca)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("audit: %s: no PEM certificate", t.ca)
		}
	}
	if (t.cert == "") != (t.key == "") {
		return nil, errors.New("audit: give both the client certificate and its key, or neither")
	}
	if t.cert != "" {
		c, err := tls.LoadX509KeyPair(t.cert, t.key)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	return &http.Client{Timeout: 2 * time.Minute, Transport: &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true}}, nil
}

func (t *auditTLS) flags(cmd *cobra.Command) {
	cmd.Flags().StringVar(&t.ca, "cacert", "", "PEM CA certificate the node's HTTPS certificate chains to (default: system roots)")
	cmd.Flags().StringVar(&t.cert, "cert", "", "the auditor's client certificate (PEM)")
	cmd.Flags().StringVar(&t.key, "cert-key", "", "the client certificate's private key (PEM)")
}

func newAuditExportCmd() *cobra.Command {
	var url, out, key string
	var from uint64
	var tc auditTLS
	cmd := &cobra.Command{
		Use:     "export --url URL --out DIR [--from N]",
		Example: `  inkan audit export --url https://ca.example.jp:8443 --cacert cluster-ca.pem --cert auditor.pem --cert-key auditor.key --out export/`,
		Short:   "Export the log from a node's audit API, up to its newest checkpoint, for verify",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			hc, err := tc.client()
			if err != nil {
				return err
			}
			exp, err := exportURL(cmd.Context(), url, hc, key, out, from)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "exported %s from %s\n", exp, url)
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "url", "", "the node's HTTPS API (https://host:port)")
	cmd.Flags().StringVar(&out, "out", "", "the export directory (new or empty)")
	cmd.Flags().Uint64Var(&from, "from", 0, "export leaves from N on (the size of the newest checkpoint you verified)")
	cmd.Flags().StringVar(&key, "key", "", "the audit public key (PEM) to trust, written into the export instead of the node's")
	tc.flags(cmd)
	_ = cmd.MarkFlagRequired("url")
	_ = cmd.MarkFlagRequired("out")
	return cmd
}

func newAuditProveCmd() *cobra.Command {
	var key, serial, token string
	cmd := &cobra.Command{
		Use: "prove (--serial S | --token FILE) DIR",
		Example: `  inkan audit prove --serial 0cfa635b2942ab980ce6eb8382fe0503 export/
  openssl ts -reply -in reply.tsr -token_out -out token.der && inkan audit prove --token token.der export/`,
		Short: "Show a certificate's issuance and revocation leaves, or the leaf that logs a time-stamp token, and prove them under the newest checkpoint",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			switch {
			case (serial == "") == (token == ""):
				return fmt.Errorf("give either --serial or --token")
			case token != "":
				return audit.ProveTokenDir(cmd.OutOrStdout(), key, args[0], token)
			}
			return audit.ProveDir(cmd.OutOrStdout(), key, args[0], serial)
		},
	}
	cmd.Flags().StringVar(&serial, "serial", "", "the certificate's serial, as enroll or openssl prints it (colons and 0x allowed)")
	cmd.Flags().StringVar(&token, "token", "", "a time-stamp token (DER, as openssl ts -reply -token_out writes it) or the TimeStampResp holding it")
	cmd.Flags().StringVar(&key, "key", "", "the audit public key (PEM) to trust, instead of the export's own")
	return cmd
}

// readAuditKey reads the audit public key (PEM) given with --key; nil if none.
func readAuditKey(path string) (crypto.PublicKey, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	k, err := audit.ParsePublicKey(b)
	if err != nil {
		return nil, fmt.Errorf("--key %s: %w", path, err)
	}
	return k, nil
}

// exportURL is `inkan audit export --url`: it writes an export of the log
// served at url into dir, from leaf from on, up to the node's newest
// checkpoint. keyFile, if not empty, is the audit key the auditor trusts: the
// export's audit.pub.pem is then that key, so verify checks the node's
// checkpoints against it.
func exportURL(ctx context.Context, url string, hc *http.Client, keyFile, dir string, from uint64) (*audit.Exported, error) {
	key, err := readAuditKey(keyFile)
	if err != nil {
		return nil, err
	}
	c, err := audit.NewClient(ctx, url, hc, key)
	if err != nil {
		return nil, err
	}
	return audit.Export(ctx, dir, c, from)
}

// followURL is `inkan audit verify --follow URL`: it exports the live log at
// url into a fresh directory under tmp (os.TempDir if empty), verifies it as
// audit.VerifyDirs does, and with a previous export (against) also checks
// that the live log does not fork from it. The export is kept and its
// directory printed, so it can serve as the next --against.
func followURL(ctx context.Context, w io.Writer, url string, hc *http.Client, keyFile, tmp, against string) error {
	dir, err := os.MkdirTemp(tmp, "inkan-audit-")
	if err != nil {
		return err
	}
	exp, err := exportURL(ctx, url, hc, keyFile, dir, 0)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "exported %s from %s\n", exp, url)
	dirs := []string{dir}
	if against != "" {
		dirs = append(dirs, against)
	}
	return audit.VerifyDirs(w, keyFile, dirs...)
}
