package cluster

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The state file is written without fsync. Every entry it applies is in the
// Raft log first, and the log is synced before the entry commits; the state
// is a cache of the log, rebuilt from the last snapshot plus the log if it is
// lost. What must hold is that a state the node opens is one it wrote whole:
//
//   - When the process dies (SIGKILL, a panic, the OOM killer), the kernel still
//     holds every page bbolt wrote, in the order bbolt wrote them, so the file
//     is exactly what the last committed transaction left (bbolt writes the
//     meta page last; a commit the process did not finish is not seen).
//   - When the machine stops (power, a kernel panic, a VM reset), the pages the
//     kernel had not written back are lost in no particular order, and the
//     file may be torn: a meta page naming pages that were never written.
//
// So while the state is open a marker beside it names the boot it is open in
// (the kernel's boot ID). It is written and synced before the first unsynced
// write, and removed after a clean close has synced the file. A node that
// starts and finds the marker of another boot (or cannot tell the boot)
// sets the state aside and starts from an empty one: Raft restores its last
// snapshot and applies the log after it, as for a node that joins. Found
// from the same boot, the marker only says the process died: the state is kept.
//
// What it saves is one or two fdatasyncs of the state file per applied batch,
// on every node (measured with BenchmarkIssue: see docs/BENCHMARKS.md).

const (
	markerSuffix = ".open"     // beside the state: "<boot ID>\n" while it is open
	asideSuffix  = ".unsynced" // a state set aside after the machine stopped
)

// bootID returns the kernel's boot ID, or "" if it cannot be read (a state
// found open is then set aside). Tests replace it to play a restarted machine.
var bootID = func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// settleState runs before the state file at path is opened. If the file was
// open, unsynced, in another boot, it is renamed to path+asideSuffix (an
// earlier one there is replaced) so that the node starts empty. It returns
// whether it set the state aside.
func settleState(path string, log *slog.Logger) (bool, error) {
	m, err := os.ReadFile(path + markerSuffix)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // closed cleanly, or never opened
	}
	if err != nil {
		return false, fmt.Errorf("cluster: state marker: %w", err)
	}
	boot := bootID()
	if boot != "" && strings.TrimSpace(string(m)) == boot {
		return false, nil // the process stopped; the kernel kept every write
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	aside := path + asideSuffix
	if err := os.Rename(path, aside); err != nil {
		return false, fmt.Errorf("cluster: set aside the state written before the machine stopped: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return false, fmt.Errorf("cluster: set aside the state: %w", err)
	}
	log.Warn("cluster: the machine stopped while the state was open (written without fsync, so it may be torn); "+
		"it is set aside and rebuilt from the last snapshot and the Raft log", "aside", aside, "at", time.Now().UTC())
	return true, nil
}

// markOpen records, durably, that the state at path is open in this boot.
func markOpen(path string) error {
	tmp := path + markerSuffix + ".tmp"
	if err := writeSynced(tmp, strings.NewReader(bootID()+"\n")); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cluster: state marker: %w", err)
	}
	if err := os.Rename(tmp, path+markerSuffix); err != nil {
		return fmt.Errorf("cluster: state marker: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("cluster: state marker: %w", err)
	}
	return nil
}

// markClosed removes the marker once the state at path is synced and closed.
func markClosed(path string) error {
	if err := os.Remove(path + markerSuffix); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("cluster: state marker: %w", err)
	}
	return syncDir(filepath.Dir(path))
}
