package audit

import (
	"context"
	"crypto"
	"fmt"
	"io"
	"net/http"
	"os"
)

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
