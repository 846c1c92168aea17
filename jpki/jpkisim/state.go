package jpkisim

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/inkan-pki/inkan/crlreason"
)

const stateVersion = 1

// state is state.json: every certificate issued and what became of it, and the CRL
// number. It is small (a demo issues a handful of cards), so each change rewrites it.
type state struct {
	Version      int      `json:"version"`
	Certificates []record `json:"certificates"`
	// Revision counts changes; PublishedRevision is the revision the last CRL saw.
	Revision          int64     `json:"revision"`
	CRLNumber         int64     `json:"crl_number"` // of the last CRL published
	PublishedRevision int64     `json:"published_revision"`
	PublishedAt       time.Time `json:"published_at"` // thisUpdate of the last CRL
}

type record struct {
	Serial   string      `json:"serial"` // hex
	DER      []byte      `json:"der"`
	Token    string      `json:"token,omitempty"`
	IssuedAt time.Time   `json:"issued_at"`
	Revoked  *revocation `json:"revoked,omitempty"`
}

type revocation struct {
	Reason crlreason.Reason `json:"reason"`
	At     time.Time        `json:"at"`
}

func (st *state) find(serial *big.Int) *record {
	if serial == nil {
		return nil
	}
	want := hex.EncodeToString(serial.Bytes())
	for i := range st.Certificates {
		if st.Certificates[i].Serial == want {
			return &st.Certificates[i]
		}
	}
	return nil
}

func (st *state) newSerial() (*big.Int, error) {
	for range 8 {
		s, err := randomSerial()
		if err != nil {
			return nil, err
		}
		if st.find(s) == nil {
			return s, nil
		}
	}
	return nil, errors.New("jpkisim: no unused serial found")
}

func (s *Sim) load() (*state, error) {
	data, err := os.ReadFile(filepath.Join(s.dir, stateFile))
	if err != nil {
		return nil, fmt.Errorf("jpkisim: %w", err)
	}
	st := &state{}
	if err := json.Unmarshal(data, st); err != nil {
		return nil, fmt.Errorf("jpkisim: %s: %w", stateFile, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("jpkisim: %s: version %d, want %d", stateFile, st.Version, stateVersion)
	}
	return st, nil
}

func (s *Sim) save(st *state) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("jpkisim: %w", err)
	}
	return writeFile(filepath.Join(s.dir, stateFile), append(data, '\n'), 0o600)
}

// lock takes the state directory's lock file, so that two processes (a revoke while
// serve-crl publishes) never interleave a read-modify-write of the state.
func (s *Sim) lock() (unlock func(), err error) {
	f, err := os.OpenFile(filepath.Join(s.dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("jpkisim: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("jpkisim: lock %s: %w", s.dir, err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// writeFile replaces path atomically (a temporary file renamed over it), so a reader
// such as a CRLSource never sees half a file.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("jpkisim: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("jpkisim: write %s: %w", path, err)
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return fmt.Errorf("jpkisim: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("jpkisim: write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("jpkisim: write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("jpkisim: %w", err)
	}
	return nil
}
