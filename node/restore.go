package node

import (
	"context"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/cluster"
)

// The files `inkan admin restore` stages in a new node's data dir, which its
// first start bootstraps a new cluster from (then removes).
const (
	restoreStateFile    = "restore-state.db"
	restoreManifestFile = "restore-manifest.json"
	// restoreSharedDir holds the backup's shared files (the CRL archive)
	// while they are checked; they then move into cluster.SharedDir.
	restoreSharedDir = "restore-shared"
)

// StageRestore checks a backup (admin.VerifyBackup, with the pinned audit key if not
// nil) and stages it in cfg's data dir, so that the node's next start
// bootstraps a new cluster from it. The node must be a new one: configured to
// bootstrap, with no cluster state yet, in a cluster of the backup's name (the
// audit log's origin). Its HSM must hold the keys the state needs (the old
// cluster's, by the HSM's own means); the start refuses, naming the key, if
// one is missing.
func StageRestore(ctx context.Context, cfg *Config, file string, pinned crypto.PublicKey) (*admin.VerifiedBackup, error) {
	if !cfg.Cluster.Bootstrap {
		return nil, errors.New("restore: a restore starts a new cluster: set cluster.bootstrap: true in the new node's configuration")
	}
	for _, name := range []string{"raft.db", "state.db", "node.pem", restoreStateFile} {
		if _, err := os.Stat(filepath.Join(cfg.DataDir, name)); err == nil {
			return nil, fmt.Errorf("restore: %s holds %s already: restore onto a new node, with an empty data_dir", cfg.DataDir, name)
		}
	}
	if err := prepareDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	statePath := filepath.Join(cfg.DataDir, restoreStateFile)
	staged := filepath.Join(cfg.DataDir, restoreSharedDir)
	if err := os.RemoveAll(staged); err != nil { // left by a restore that failed
		return nil, err
	}
	defer os.RemoveAll(staged)
	vb, err := admin.VerifyBackup(ctx, file, pinned, statePath, staged)
	if err != nil {
		os.Remove(statePath)
		return nil, err
	}
	if vb.Manifest.Cluster != cfg.Cluster.Name {
		os.Remove(statePath)
		return nil, fmt.Errorf("restore: the backup is of cluster %q; set cluster.name: %s (the audit log's origin goes on)", vb.Manifest.Cluster, vb.Manifest.Cluster)
	}
	m, err := json.Marshal(vb.Manifest)
	if err == nil {
		err = moveShared(staged, filepath.Join(cfg.DataDir, cluster.SharedDir))
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(cfg.DataDir, restoreManifestFile), m, 0o600)
	}
	if err != nil {
		os.Remove(statePath)
		return nil, err
	}
	return vb, nil
}

// moveShared moves the backup's shared files, checked, from the staging
// directory into the data dir's shared directory (the CRL archive), beside
// any an operator copied there before. A file is named by its content's
// hash, so one already there with the same name is replaced by the same
// bytes.
func moveShared(staged, shared string) error {
	return filepath.WalkDir(staged, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(staged, p)
		if err != nil {
			return err
		}
		dst := filepath.Join(shared, rel)
		if err := os.MkdirAll(filepath.Dir(dst), 0o700); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		if err := os.Rename(p, dst); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		return nil
	})
}

// stagedRestore returns the restore staged in the data dir, if any.
func stagedRestore(dir string) (*cluster.Restore, error) {
	b, err := os.ReadFile(filepath.Join(dir, restoreManifestFile))
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var m admin.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("node: staged restore: %w", err)
	}
	sum, err := hex.DecodeString(m.State.SHA256)
	if err != nil {
		return nil, fmt.Errorf("node: staged restore: %w", err)
	}
	return &cluster.Restore{Path: filepath.Join(dir, restoreStateFile), SHA256: sum}, nil
}

// clearStagedRestore removes a restore once the cluster started from it.
func clearStagedRestore(dir string) {
	os.Remove(filepath.Join(dir, restoreStateFile))
	os.Remove(filepath.Join(dir, restoreManifestFile))
}
