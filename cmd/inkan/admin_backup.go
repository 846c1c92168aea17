package main

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/inkan-pki/inkan/admin"
	"github.com/inkan-pki/inkan/audit"
	"github.com/inkan-pki/inkan/node"
)

// newAdminBackupCmd is `inkan admin backup`.
func newAdminBackupCmd(f *adminFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "backup --out FILE",
		Short: "Take a signed backup of the cluster's state (a consistent snapshot and a manifest signed by the audit key)",
		Long: `backup asks a node for a copy of the replicated state as current as the leader's,
with a manifest (cluster, Raft index, time, the state's size and SHA-256, the audit log's
size and newest checkpoint, the listing of the shared files) signed by the audit key,
and writes it to --out as a tar: manifest.json, manifest.sig, audit-key.pem, state.db,
then the node's shared files (shared/crl/…: every CRL the state indexes but no longer
holds, which /status and /evidence answer from). It then checks the file as
'inkan admin restore' would. Anyone can check it without inkan:

  tar xf backup.tar
  openssl dgst -sha256 -verify audit-key.pem -signature manifest.sig manifest.json
  sha256sum state.db
  (cd shared && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum)

The state holds no key: the CA, audit and other keys stay in the HSMs.`,
		Example: `  inkan admin backup --out /srv/backups/inkan-$(date +%F).tar`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return errors.New("--out: required")
			}
			file, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return fmt.Errorf("--out: %w", err)
			}
			return withAdmin(cmd, f, func(ctx context.Context, ac *admin.Client) (any, func(io.Writer), error) {
				fmt.Fprintln(cmd.ErrOrStderr(), "taking the backup…")
				err := ac.Backup(ctx, file)
				if cerr := file.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					os.Remove(out)
					return nil, nil, err
				}
				dir, err := os.MkdirTemp("", "inkan-backup-check-")
				if err != nil {
					return nil, nil, err
				}
				defer os.RemoveAll(dir)
				vb, err := admin.VerifyBackup(ctx, out, nil, filepath.Join(dir, "state.db"), "")
				if err != nil {
					return nil, nil, fmt.Errorf("the backup written does not check: %w", err)
				}
				return vb.Manifest, func(w io.Writer) { printManifest(w, out, vb) }, nil
			})
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "the backup file to write (a new file, mode 0600)")
	return cmd
}

func printManifest(w io.Writer, file string, vb *admin.VerifiedBackup) {
	m := vb.Manifest
	fmt.Fprintf(w, "%s: cluster %s at Raft index %d, taken %s by %s\n", file, m.Cluster, m.RaftIndex, m.TakenAt.Local().Format("2006-01-02 15:04:05"), m.Node)
	fmt.Fprintf(w, "  state %d bytes, SHA-256 %s\n", m.State.Size, m.State.SHA256)
	if m.Shared != nil {
		fmt.Fprintf(w, "  shared files (the CRL archive) %d, %d bytes, listing SHA-256 %s\n", m.Shared.Files, m.Shared.Bytes, m.Shared.SHA256)
	}
	fmt.Fprintf(w, "  audit log %d leaves, newest checkpoint of size %d at %s\n", m.Audit.Leaves, m.Audit.CheckpointSize, m.Audit.CheckpointTime.Local().Format("2006-01-02 15:04:05"))
	fmt.Fprintf(w, "  signed by audit key %s\n", vb.KeyFingerprint)
}

// newAdminRestoreCmd is `inkan admin restore`.
func newAdminRestoreCmd(f *adminFlags) *cobra.Command {
	var auditKey string
	cmd := &cobra.Command{
		Use:   "restore FILE --config NEW-NODE.yaml [--audit-key PEM]",
		Short: "Stage a backup on a new node: its first start begins a new cluster from it",
		Long: `restore checks a backup — the audit key's signature over its manifest, the state's size
and SHA-256, that the state records that same audit key and holds the audit log the
manifest names, and, with --audit-key, that it is the key you trust — and stages it in
the data_dir of a new node (cluster.bootstrap: true, the backup's cluster.name, nothing
in data_dir yet but perhaps shared/), the shared files (the CRL archive) in
data_dir/shared/. It talks to no running node. Then start the node: it bootstraps a new
cluster from the backup, with itself as the only voter; the Raft log, the certificates,
the audit log and the profiles go on from where the backup was taken. Other nodes join
it with new join tokens.

The node's HSM must hold the keys the state needs (the CA keys, the audit key, the link
key): the old cluster's HSM, or a token the keys were moved to by the HSM's own means.
The start refuses, naming the key, if one is missing. Anything that does not check is
refused before a byte is staged.`,
		Example: `  inkan admin restore inkan-2026-11-25.tar --config /etc/inkan/node.yaml --audit-key audit-key.pem
  inkan server --config /etc/inkan/node.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if f.config == "" {
				return errors.New("--config: the new node's configuration")
			}
			cfg, err := node.LoadConfig(f.config)
			if err != nil {
				return err
			}
			var pinned crypto.PublicKey
			if auditKey != "" {
				b, err := os.ReadFile(auditKey)
				if err != nil {
					return fmt.Errorf("--audit-key: %w", err)
				}
				if pinned, err = audit.ParsePublicKey(b); err != nil {
					return fmt.Errorf("--audit-key %s: %w", auditKey, err)
				}
			}
			ctx, cancel := context.WithTimeout(cmdContext(cmd), f.timeout)
			defer cancel()
			vb, err := node.StageRestore(ctx, cfg, args[0], pinned)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			printManifest(w, args[0], vb)
			if pinned == nil {
				fmt.Fprintln(w, "  (no --audit-key: compare that fingerprint with the one your auditors hold)")
			}
			fmt.Fprintf(w, "staged in %s: start the node (inkan server --config %s) to begin the new cluster from it\n", cfg.DataDir, f.config)
			return nil
		},
	}
	cmd.Flags().StringVar(&auditKey, "audit-key", "", "the audit public key (PEM) the backup must be signed by")
	return cmd
}
