package node

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

const lockFileName = "node.lock"

// prepareDataDir makes the data dir (0700) or checks that an existing one is
// closed to group and others: it holds the node's state and its admin socket,
// whose only protection is that nobody else can reach it.
func prepareDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("node: data_dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("node: data_dir: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("node: data_dir: %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("node: data_dir: %s is mode %04o; make it 0700 (it holds the node's state and admin socket)", dir, fi.Mode().Perm())
	}
	return nil
}

// lockDataDir takes an exclusive lock on the data dir for the life of the
// process (the kernel drops it when the process dies, however it dies), so two
// nodes never run on one data dir. The file names the holder's PID.
func lockDataDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("node: data_dir: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := os.ReadFile(path)
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("node: data_dir: %s is in use by another running node (pid %s)", dir, strings.TrimSpace(string(holder)))
		}
		return nil, fmt.Errorf("node: data_dir: lock %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}
