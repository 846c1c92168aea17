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


// FollowURL is `inkan audit verify --follow URL`: it exports the live log at url
// (read through NewClient, with the key in keyFile pinned if not empty) into a
// fresh directory under tmp (os.TempDir if empty), verifies it as
// VerifyDirs does, and with a previous export (against) also checks that the live
// log does not fork from it. The export is kept and its directory printed, so it
// can serve as the next `against`.
func FollowURL(ctx context.Context, w io.Writer, url string, hc *http.Client, keyFile, tmp, against string) error {
	dir, err := os.MkdirTemp(tmp, "inkan-audit-")
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	key, err := readKeyFile(keyFile)
	if err != nil {
		return err
	}
	c, err := NewClient(ctx, url, hc, key)
	if err != nil {
		return err
	}
	exp, err := Export(ctx, dir, c, 0)
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
