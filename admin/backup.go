package admin

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/audit"
	auditlog "github.com/inkan-pki/inkan/audit/log"
	"github.com/inkan-pki/inkan/cluster"
)

// A backup is a tar file of four members, in this order, then the shared files:
//
//	manifest.json  what the backup holds (Manifest)
//	manifest.sig   the audit key's signature over manifest.json: ECDSA with
//	               SHA-256, ASN.1 DER, as `openssl dgst -sha256 -sign` makes
//	audit-key.pem  the audit public key (PKIX PEM)
//	state.db       the replicated state, a bbolt file (cluster.Backup)
//	shared/…       the node's cluster.SharedDir: the files every node keeps
//	               beside the state, which the state names by their hash (the
//	               CRL archive, shared/crl/…), one member each
//
// so that anyone can check it without inkan:
//
//	openssl dgst -sha256 -verify audit-key.pem -signature manifest.sig manifest.json
//	sha256sum state.db    # = manifest.json's state.sha256
//	(cd shared && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum)   # = shared.sha256
//
// and `inkan admin restore` checks the same, plus that audit-key.pem is the
// key the state itself records and, with --key, the one the operator pins.
//
// The shared files are in the backup because the state alone does not make
// the cluster whole again: the CRLs the state indexes but no longer holds
// would be gone with the old nodes, and with them every answer about the
// past. The manifest signs their listing (each file's SHA-256 and path, and
// their count and bytes); each file is checked again against the state's
// index before it is served.
const (
	pathBackup     = "/v1/backup"
	backupFormat   = "inkan-backup/v1"
	memberManifest = "manifest.json"
	memberSig      = "manifest.sig"
	memberKey      = "audit-key.pem"
	memberState    = "state.db"
	memberShared   = cluster.SharedDir + "/"
	// maxSharedFile bounds one shared file read from a backup (a full CRL
	// of millions of entries is under this).
	maxSharedFile = 1 << 30
)

// Manifest describes a backup.
type Manifest struct {
	Format    string    `json:"format"`
	Cluster   string    `json:"cluster"` // cluster.name, the audit log's origin
	Node      string    `json:"node"`
	TakenAt   time.Time `json:"taken_at"`
	RaftIndex uint64    `json:"raft_index"`
	// ClusterCA is the SHA-256 of the cluster CA certificate: it names the
	// cluster the state is from.
	ClusterCA string        `json:"cluster_ca_sha256"`
	State     manifestState `json:"state"`
	Audit     manifestAudit `json:"audit"`
	// Shared lists the shared files that follow the state (absent in a
	// backup taken before they were carried).
	Shared *manifestShared `json:"shared,omitempty"`
}

// manifestShared is the shared files' count, total size and the SHA-256 of
// their listing: one line "<sha256 hex>  ./<path under shared/>\n" per file,
// in path order, as `find . -type f | LC_ALL=C sort | xargs sha256sum` prints
// it in the shared directory.
type manifestShared struct {
	Files  int    `json:"files"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// manifestState is the state file's size and hash.
type manifestState struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// manifestAudit is the audit log in the state: its size, and its newest
// checkpoint (size, root, time), so an auditor can hold a restored cluster's
// log to it.
type manifestAudit struct {
	Key            string    `json:"key"` // audit.KeyFingerprint
	Leaves         uint64    `json:"leaves"`
	CheckpointSize uint64    `json:"checkpoint_size"`
	CheckpointRoot []byte    `json:"checkpoint_root"`
	CheckpointTime time.Time `json:"checkpoint_time"`
}

// adminBackup writes a signed backup of the replicated state, as current as
// the leader's, and answers it as a tar stream.
func (api *API) adminBackup(w http.ResponseWriter, r *http.Request) {
	c := api.c
	tmp, err := os.CreateTemp(api.cfg.DataDir, "backup-*.db")
	if err != nil {
		writeError(w, err)
		return
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	info, err := c.Backup(r.Context(), tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if err != nil {
		writeError(w, err)
		return
	}
	m := Manifest{
		Format: backupFormat, Cluster: api.cfg.ClusterName, Node: info.Node, TakenAt: info.Time.UTC(), RaftIndex: info.Index,
		ClusterCA: hex.EncodeToString(info.ClusterCA), State: manifestState{Size: info.Size, SHA256: hex.EncodeToString(info.SHA256)},
	}
	pub, err := api.backupAudit(r.Context(), tmp.Name(), &m)
	if err != nil {
		writeError(w, err)
		return
	}
	sharedRoot := filepath.Join(api.cfg.DataDir, cluster.SharedDir)
	shared, err := listShared(sharedRoot)
	if err != nil {
		writeError(w, err)
		return
	}
	m.Shared = shared.manifest()
	key, err := api.cfg.Vault.ReplicatedKey(r.Context(), auditlog.DefaultKeyName, false)
	if err != nil {
		writeError(w, fmt.Errorf("admin: backup: the audit key signs the manifest and this node lacks it (ask a voter): %w", err))
		return
	}
	if !samePublicKey(key.Public(), pub) {
		writeError(w, errors.New("admin: backup: this node's audit key is not the one the log records"))
		return
	}
	manifest, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		writeError(w, err)
		return
	}
	manifest = append(manifest, '\n')
	digest := sha256.Sum256(manifest)
	sig, err := key.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		writeError(w, err)
		return
	}
	pubPEM, err := audit.MarshalPublicKey(pub)
	if err != nil {
		writeError(w, err)
		return
	}
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/x-tar")
	w.WriteHeader(http.StatusOK)
	tw := tar.NewWriter(w)
	for _, f := range []struct {
		name string
		r    io.Reader
		size int64
	}{
		{memberManifest, bytes.NewReader(manifest), int64(len(manifest))},
		{memberSig, bytes.NewReader(sig), int64(len(sig))},
		{memberKey, bytes.NewReader(pubPEM), int64(len(pubPEM))},
		{memberState, tmp, info.Size},
	} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o600, Size: f.size, ModTime: m.TakenAt, Format: tar.FormatPAX}); err != nil {
			api.log.Error("admin: backup: write", "err", err)
			return
		}
		if _, err := io.CopyN(tw, f.r, f.size); err != nil {
			api.log.Error("admin: backup: write", "err", err)
			return
		}
	}
	for _, sf := range shared {
		if err := writeSharedMember(tw, sharedRoot, sf, m.TakenAt); err != nil {
			api.log.Error("admin: backup: write", "file", sf.name, "err", err)
			return
		}
	}
	if err := tw.Close(); err != nil {
		api.log.Error("admin: backup: write", "err", err)
		return
	}
	api.log.Info("admin: backup taken", "raft_index", m.RaftIndex, "bytes", m.State.Size, "audit_leaves", m.Audit.Leaves,
		"shared_files", m.Shared.Files, "shared_bytes", m.Shared.Bytes)
}

// backupAudit reads the audit log in a state file into m, and returns the
// audit key the state records.
func (api *API) backupAudit(ctx context.Context, path string, m *Manifest) (crypto.PublicKey, error) {
	return readStateAudit(ctx, path, api.cfg.ClusterName, &m.Audit)
}

// readStateAudit opens a state file read-only and reads its audit log: the
// recorded key, the number of leaves, the newest checkpoint.
func readStateAudit(ctx context.Context, path, origin string, out *manifestAudit) (crypto.PublicKey, error) {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("admin: state file: %w", err)
	}
	defer db.Close()
	svc, err := auditlog.New(auditlog.Config{Origin: origin})
	if err != nil {
		return nil, err
	}
	src, err := svc.NewSource(db)
	if err != nil {
		return nil, fmt.Errorf("admin: the state's audit log: %w", err)
	}
	pub := src.PublicKey()
	out.Key = audit.KeyFingerprint(pub)
	cp, ok, err := src.Latest(ctx)
	if err != nil {
		return nil, err
	}
	if ok {
		out.CheckpointSize, out.CheckpointRoot, out.CheckpointTime = cp.Size, cp.Root, cp.Time.UTC()
	}
	// The leaves past the newest checkpoint are in the state too: count them
	// all (Source's size stops at the checkpoint).
	err = db.View(func(tx *bbolt.Tx) (err error) { out.Leaves, err = svc.Size(tx); return err })
	return pub, err
}

// VerifiedBackup is a backup whose signature, manifest and state checked.
type VerifiedBackup struct {
	Manifest Manifest
	// StatePath is where the state file was written (mode 0600).
	StatePath string
	// KeyFingerprint is the audit key's, which signed it.
	KeyFingerprint string
}

// VerifyBackup reads a backup file, checks that the audit key it carries
// signed its manifest, that the state it carries is the one the manifest
// describes (size, SHA-256, audit log) and records that same audit key, that
// its shared files are the ones the manifest lists, and, if pinned is not
// nil, that the key is pinned. It writes the state file to statePath and,
// if sharedDir is not empty, the shared files under sharedDir (which should
// not exist yet: the caller moves them into place once this returns). Anything
// that does not check is an error naming what.
func VerifyBackup(ctx context.Context, file string, pinned crypto.PublicKey, statePath, sharedDir string) (*VerifiedBackup, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var manifest, sig, keyPEM []byte
	stateDone := false
	for _, want := range []string{memberManifest, memberSig, memberKey, memberState} {
		h, err := tr.Next()
		if err != nil {
			return nil, fmt.Errorf("backup %s: member %s: %w", file, want, err)
		}
		if h.Name != want {
			return nil, fmt.Errorf("backup %s: member %q where %s belongs", file, h.Name, want)
		}
		if want == memberState {
			if err := writeState(tr, statePath); err != nil {
				return nil, err
			}
			stateDone = true
			continue
		}
		if h.Size > 1<<20 {
			return nil, fmt.Errorf("backup %s: %s is %d bytes", file, want, h.Size)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, fmt.Errorf("backup %s: %s: %w", file, want, err)
		}
		switch want {
		case memberManifest:
			manifest = b
		case memberSig:
			sig = b
		case memberKey:
			keyPEM = b
		}
	}
	if !stateDone {
		return nil, fmt.Errorf("backup %s: no %s", file, memberState)
	}
	var shared sharedFiles
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("backup %s: %w", file, err)
		}
		sf, err := readShared(h, tr, sharedDir)
		if err != nil {
			return nil, fmt.Errorf("backup %s: %w", file, err)
		}
		shared = append(shared, sf)
	}
	pub, err := audit.ParsePublicKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %s: %w", file, memberKey, err)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	digest := sha256.Sum256(manifest)
	if !ok || !ecdsa.VerifyASN1(ec, digest[:], sig) {
		return nil, fmt.Errorf("backup %s: the manifest's signature does not verify with %s", file, memberKey)
	}
	if pinned != nil && !samePublicKey(pinned, pub) {
		return nil, fmt.Errorf("backup %s: signed by audit key %s, not the pinned %s", file, audit.KeyFingerprint(pub), audit.KeyFingerprint(pinned))
	}
	var m Manifest
	if err := json.Unmarshal(manifest, &m); err != nil || m.Format != backupFormat {
		return nil, fmt.Errorf("backup %s: manifest: not %s", file, backupFormat)
	}
	switch got := shared.manifest(); {
	case m.Shared == nil && len(shared) > 0:
		return nil, fmt.Errorf("backup %s: %d shared files the manifest does not list", file, len(shared))
	case m.Shared != nil && *got != *m.Shared:
		return nil, fmt.Errorf("backup %s: the shared files (%d, %d bytes, listing %s) are not the manifest's (%d, %d bytes, listing %s)",
			file, got.Files, got.Bytes, got.SHA256, m.Shared.Files, m.Shared.Bytes, m.Shared.SHA256)
	}
	st, err := os.Stat(statePath)
	if err != nil {
		return nil, err
	}
	sum, err := fileSHA256(statePath)
	if err != nil {
		return nil, err
	}
	if st.Size() != m.State.Size || sum != m.State.SHA256 {
		return nil, fmt.Errorf("backup %s: state.db is not the state the manifest describes (size %d, SHA-256 %s)", file, st.Size(), sum)
	}
	var got manifestAudit
	recorded, err := readStateAudit(ctx, statePath, m.Cluster, &got)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", file, err)
	}
	if !samePublicKey(recorded, pub) {
		return nil, fmt.Errorf("backup %s: the state records audit key %s, the backup was signed by %s", file, audit.KeyFingerprint(recorded), audit.KeyFingerprint(pub))
	}
	if got.Leaves != m.Audit.Leaves || got.CheckpointSize != m.Audit.CheckpointSize || !bytes.Equal(got.CheckpointRoot, m.Audit.CheckpointRoot) {
		return nil, fmt.Errorf("backup %s: the state's audit log (%d leaves, checkpoint %d) is not the manifest's (%d, %d)", file, got.Leaves, got.CheckpointSize, m.Audit.Leaves, m.Audit.CheckpointSize)
	}
	return &VerifiedBackup{Manifest: m, StatePath: statePath, KeyFingerprint: audit.KeyFingerprint(pub)}, nil
}

func writeState(r io.Reader, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if _, err := io.Copy(f, r); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// samePublicKey reports whether a and b are the same public key.
func samePublicKey(a, b crypto.PublicKey) bool {
	ka, err1 := x509.MarshalPKIXPublicKey(a)
	kb, err2 := x509.MarshalPKIXPublicKey(b)
	return err1 == nil && err2 == nil && bytes.Equal(ka, kb)
}

// sharedFile is one file of the shared directory as the backup lists it.
type sharedFile struct {
	name string // slash-separated, under the shared directory
	size int64
	sum  [sha256.Size]byte
}

type sharedFiles []sharedFile

// manifest is the files' entry in the manifest.
func (files sharedFiles) manifest() *manifestShared {
	m := &manifestShared{Files: len(files)}
	h := sha256.New()
	for _, f := range files {
		m.Bytes += f.size
		fmt.Fprintf(h, "%x  ./%s\n", f.sum, f.name)
	}
	m.SHA256 = hex.EncodeToString(h.Sum(nil))
	return m
}

// listShared lists and hashes the regular files under root, in path order.
// Names starting with a dot (a file being written: written whole, then
// renamed into place) are left out; a missing root is an empty list.
func listShared(root string) (sharedFiles, error) {
	var out sharedFiles
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && p == root {
			return fs.SkipDir
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.Name(), ".") && p != root {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		h := sha256.New()
		n, err := io.Copy(h, f)
		if err != nil {
			return err
		}
		sf := sharedFile{name: filepath.ToSlash(rel), size: n}
		h.Sum(sf.sum[:0])
		out = append(out, sf)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("admin: backup: %s: %w", root, err)
	}
	slices.SortFunc(out, func(a, b sharedFile) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// writeSharedMember writes the shared file sf, from root, as a member of tw.
// The file must still be the one listed (shared files never change once
// written; the restore checks it anyway).
func writeSharedMember(tw *tar.Writer, root string, sf sharedFile, at time.Time) error {
	f, err := os.Open(filepath.Join(root, filepath.FromSlash(sf.name)))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := tw.WriteHeader(&tar.Header{Name: memberShared + sf.name, Mode: 0o600, Size: sf.size, ModTime: at, Format: tar.FormatPAX}); err != nil {
		return err
	}
	_, err = io.CopyN(tw, f, sf.size)
	return err
}

// readShared reads a shared member of a backup: checks its name, hashes it
// and, if dir is not empty, writes it under dir.
func readShared(h *tar.Header, r io.Reader, dir string) (sharedFile, error) {
	name, ok := strings.CutPrefix(h.Name, memberShared)
	if !ok || !fs.ValidPath(name) || name == "." || strings.Contains(name, "\\") || h.Typeflag != tar.TypeReg {
		return sharedFile{}, fmt.Errorf("member %q is not a backup's", h.Name)
	}
	if h.Size > maxSharedFile {
		return sharedFile{}, fmt.Errorf("%s is %d bytes", h.Name, h.Size)
	}
	sf := sharedFile{name: name}
	hash := sha256.New()
	w := io.Writer(hash)
	var f *os.File
	if dir != "" {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return sf, err
		}
		var err error
		if f, err = os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
			return sf, err
		}
		defer f.Close()
		w = io.MultiWriter(hash, f)
	}
	n, err := io.Copy(w, r)
	if err != nil {
		return sf, fmt.Errorf("%s: %w", h.Name, err)
	}
	if f != nil {
		if err := f.Sync(); err != nil {
			return sf, err
		}
	}
	sf.size = n
	hash.Sum(sf.sum[:0])
	return sf, nil
}
