package cluster

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/inkan-pki/inkan/internal/testenv"
)

// TestSettleState: a state found open is kept when the process only died in
// this boot, and set aside when the machine restarted or the boot cannot be
// told; a state closed cleanly is kept.
func TestSettleState(t *testing.T) {
	for _, tc := range []struct {
		name      string
		marker    string // "" for none
		boot      string // what bootID says now
		wantAside bool
	}{
		{"closed cleanly", "", "boot-a", false},
		{"process died, same boot", "boot-a\n", "boot-a", false},
		{"machine restarted", "boot-a\n", "boot-b", true},
		{"boot unknown", "boot-a\n", "", true},
		{"marker of an unknown boot", "\n", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			saved := bootID
			t.Cleanup(func() { bootID = saved })
			bootID = func() string { return tc.boot }
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, []byte("state"), 0o600); err != nil {
				t.Fatal(err)
			}
			if tc.marker != "" {
				if err := os.WriteFile(path+markerSuffix, []byte(tc.marker), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			aside, err := settleState(path, testenv.Logger())
			if err != nil {
				t.Fatal(err)
			}
			_, statErr := os.Stat(path)
			kept, _ := os.ReadFile(path + asideSuffix)
			switch {
			case aside != tc.wantAside:
				t.Fatalf("set aside = %v, want %v", aside, tc.wantAside)
			case tc.wantAside && (!errors.Is(statErr, fs.ErrNotExist) || string(kept) != "state"):
				t.Fatalf("state not moved aside whole: stat %v, aside %q", statErr, kept)
			case !tc.wantAside && statErr != nil:
				t.Fatalf("state not kept: %v", statErr)
			}
		})
	}
}

// TestStateMarker: the marker is there while the state is open, with this
// boot's ID, and gone after a clean close.
func TestStateMarker(t *testing.T) {
	saved := bootID
	t.Cleanup(func() { bootID = saved })
	bootID = func() string { return "boot-now" }
	path := filepath.Join(t.TempDir(), "state.db")
	f, err := openStateMachine(path, testenv.Logger(), []Handler{putHandler{}}, nil, newMetrics(), &subscribers{})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := os.ReadFile(path + markerSuffix); err != nil || string(m) != "boot-now\n" {
		t.Fatalf("marker while open: %q, %v", m, err)
	}
	if err := f.close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path + markerSuffix); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("marker after a clean close: %v", err)
	}
}
