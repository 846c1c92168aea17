package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
	"github.com/inkan-pki/inkan/internal/testenv"
	"github.com/inkan-pki/inkan/policies"
)

var key = bytes.Repeat([]byte{0x42}, 32)

const operator = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// node is a real one-node cluster (its key vault a SoftHSM token) with the store's
// handler, and a hook that describes every applied command for the audit log.
type node struct {
	c     *cluster.Cluster
	mu    sync.Mutex
	descs []leaf
}

// leaf is one audit leaf the handler's Describe gave.
type leaf struct {
	Type, Actor string
	Serial      *big.Int
	Data        map[string]any
}

func newNode(t *testing.T) *node {
	t.Helper()
	tok := softhsm.NewToken(t)
	cfg := tok.Config()
	cfg.Logger = testenv.Logger()
	h, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	n := &node{}
	n.c, err = cluster.Open(context.Background(), cluster.Config{
		DataDir:  filepath.Join(t.TempDir(), "node0"),
		BindAddr: "127.0.0.1:0",
		KeyVault: cluster.NewHSMVault(h),
		Handlers: []cluster.Handler{Handler()}, Bootstrap: true,
		Hooks: []cluster.Hook{func(_ *bbolt.Tx, e cluster.Entry, result []byte) error {
			if e.Command.Type != commandApply {
				return nil
			}
			n.mu.Lock()
			defer n.mu.Unlock()
			return Handler().(describedHandler).Describe(e, result, func(typ, actor string, serial *big.Int, data map[string]any) {
				n.descs = append(n.descs, leaf{typ, actor, serial, data})
			})
		}},
		Logger:           testenv.Logger(),
		HeartbeatTimeout: 300 * time.Millisecond, ElectionTimeout: 300 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.c.Shutdown(context.Background()) })
	return n
}

func (n *node) apply(t *testing.T, file string, data []byte) error {
	t.Helper()
	cmd, err := ApplyCommand(file, data, operator)
	if err != nil {
		return err
	}
	_, err = n.c.Submit(context.Background(), cmd)
	return err
}

func (n *node) active(t *testing.T) (*policies.Set, error) {
	t.Helper()
	var set *policies.Set
	err := n.c.View(func(tx *bbolt.Tx) (err error) {
		set, err = active(tx, key, "authentication")
		return err
	})
	return set, err
}

func shipped(t *testing.T, name string) []byte {
	t.Helper()
	b, err := fs.ReadFile(policies.Shipped(), name+".yaml")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bump returns the file with its version and certificate policy OID changed.
func bump(t *testing.T, data []byte, from, to string) []byte {
	t.Helper()
	s := string(data)
	if !strings.Contains(s, "version: "+from+"\n") {
		t.Fatalf("no version %s in the file", from)
	}
	return []byte(strings.Replace(s, "version: "+from+"\n", "version: "+to+"\n", 1))
}

// TestStore: versions only go up, each kept; the active set is what was applied last
// per profile; bad files and actors are refused by the replicas too, writing nothing;
// every applied version is described for the audit log.
func TestStore(t *testing.T) {
	n := newNode(t)
	if _, err := n.active(t); !errors.Is(err, ErrNoProfiles) {
		t.Fatalf("empty state: %v", err)
	}
	auth, sign := shipped(t, "authentication"), shipped(t, "signing")
	for _, f := range []struct {
		name string
		data []byte
	}{{"authentication.yaml", auth}, {"signing.yaml", sign}} {
		if err := n.apply(t, f.name, f.data); err != nil {
			t.Fatalf("apply %s: %v", f.name, err)
		}
	}
	set, err := n.active(t)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(set.Names(), ","); got != "authentication,signing" {
		t.Errorf("active profiles %s", got)
	}

	// The same version again, or a lower one, is refused; a higher one replaces it.
	if err := n.apply(t, "signing.yaml", sign); !errors.Is(err, ErrVersion) || !errors.Is(err, cluster.ErrRefused) {
		t.Errorf("same version again: %v", err)
	}
	v4 := bump(t, sign, "2", "4")
	if err := n.apply(t, "signing.yaml", v4); err != nil {
		t.Fatal(err)
	}
	if err := n.apply(t, "signing.yaml", bump(t, sign, "2", "3")); !errors.Is(err, ErrVersion) {
		t.Errorf("a lower version: %v", err)
	}
	set, err = n.active(t)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := set.Profile("signing"); p.Version != 4 {
		t.Errorf("active signing v%d, want 4", p.Version)
	}
	err = n.c.View(func(tx *bbolt.Tx) error {
		for _, w := range []struct {
			v    uint64
			data []byte
		}{{2, sign}, {4, v4}} {
			got, err := lookupVersion(tx, "signing", w.v)
			if err != nil {
				return err
			}
			if got.Profile.Version != w.v || !bytes.Equal(got.Data, w.data) || got.Actor != operator {
				t.Errorf("history v%d: got v%d by %s", w.v, got.Profile.Version, got.Actor)
			}
		}
		if _, err := lookupVersion(tx, "signing", 3); !errors.Is(err, ErrNotFound) {
			t.Errorf("a refused version is in the history: %v", err)
		}
		if a, err := Read(tx).Lookup("signing"); err != nil || a.Profile.Version != 4 {
			t.Errorf("Lookup: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}

	// A file that does not parse is refused before it is sent, and by the replicas
	// if sent anyway; so is an actor the audit log could not name.
	bad := []byte(strings.Replace(string(bump(t, sign, "2", "9")), "keyUsage: [digitalSignature, nonRepudiation]", "keyUsage: [keyCertSign]", 1))
	if _, err := ApplyCommand("signing.yaml", bad, operator); !errors.Is(err, policies.ErrInvalid) {
		t.Errorf("ApplyCommand of a bad file: %v", err)
	}
	for _, body := range []applyBody{
		{File: "signing.yaml", Data: bad, Actor: operator},
		{File: "signing.yaml", Data: bump(t, sign, "2", "9"), Actor: "mallory"},
	} {
		cmd, err := cluster.NewCommand(commandApply, 1, body)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := n.c.Submit(context.Background(), cmd); !errors.Is(err, cluster.ErrRefused) {
			t.Errorf("a bad command was applied: %v", err)
		}
	}
	if set, err := n.active(t); err != nil || mustProfile(t, set, "signing").Version != 4 {
		t.Errorf("a refusal changed the active set: %v", err)
	}

	// The audit log got one leaf per applied version, with hashes and versions.
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.descs) != 3 {
		t.Fatalf("%d descriptions, want 3", len(n.descs))
	}
	d := n.descs[2]
	sum := sha256.Sum256(v4)
	if d.Type != typeApplied || d.Actor != operator || d.Data["profile"] != "signing" || d.Data["version"] != uint64(4) ||
		d.Data["previous_version"] != uint64(2) || !bytes.Equal(d.Data["file_sha256"].([]byte), sum[:]) {
		t.Errorf("description %+v", d)
	}
}

func mustProfile(t *testing.T, set *policies.Set, name string) *policies.Profile {
	t.Helper()
	p, ok := set.Profile(name)
	if !ok {
		t.Fatalf("no profile %s", name)
	}
	return p
}

// TestActiveNeedsTheDefault: a state without the default profile builds no set.
func TestActiveNeedsTheDefault(t *testing.T) {
	n := newNode(t)
	if err := n.apply(t, "signing.yaml", shipped(t, "signing")); err != nil {
		t.Fatal(err)
	}
	if _, err := n.active(t); !errors.Is(err, policies.ErrInvalid) || !strings.Contains(err.Error(), "default profile") {
		t.Fatalf("Active without the default profile: %v", err)
	}
}

// TestFollow: a node's follower gets the set at once and each new version as it is
// applied.
func TestFollow(t *testing.T) {
	n := newNode(t)
	if err := n.apply(t, "authentication.yaml", shipped(t, "authentication")); err != nil {
		t.Fatal(err)
	}
	got := make(chan uint64, 8)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		Follow(ctx, n.c, key, "authentication", func(s *policies.Set) {
			got <- mustProfile(t, s, "authentication").Version
		}, func(err error) { t.Errorf("follow: %v", err) })
	}()
	expect := func(v uint64) {
		t.Helper()
		select {
		case g := <-got:
			if g != v {
				t.Errorf("follower got v%d, want v%d", g, v)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("follower did not get v%d", v)
		}
	}
	expect(1)
	if err := n.apply(t, "authentication.yaml", bump(t, shipped(t, "authentication"), "1", "2")); err != nil {
		t.Fatal(err)
	}
	expect(2)
	cancel()
	<-done
}

// TestDiff: a new profile is shown whole, a new version as a diff, and a version that
// does not go up is refused with the diff still shown.
func TestDiff(t *testing.T) {
	n := newNode(t)
	auth := shipped(t, "authentication")
	err := n.c.View(func(tx *bbolt.Tx) error {
		d, err := Read(tx).Diff("authentication.yaml", auth)
		if err != nil || !strings.HasPrefix(d, "+++ authentication v1 (new profile)") || !strings.Contains(d, "+ name: authentication") {
			t.Errorf("new profile: %v\n%s", err, d)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.apply(t, "authentication.yaml", auth); err != nil {
		t.Fatal(err)
	}
	v2 := []byte(strings.Replace(string(bump(t, auth, "1", "2")), "validity: 8760h", "validity: 4380h", 1))
	err = n.c.View(func(tx *bbolt.Tx) error {
		d, err := Read(tx).Diff("authentication.yaml", v2)
		if err != nil || !strings.Contains(d, "- validity: 8760h0m0s") || !strings.Contains(d, "+ validity: 4380h0m0s") {
			t.Errorf("new version: %v\n%s", err, d)
		}
		if _, err := Read(tx).Diff("authentication.yaml", auth); !errors.Is(err, ErrVersion) {
			t.Errorf("same version: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSeed: the shipped profiles fill an empty store; seeding again applies nothing
// and leaves an operator's newer version active.
// TestSeedUpgradesAnUntouchedShippedProfile: a cluster made by the previous
// release holds the signing profile v1 exactly as shipped (no extended key
// usage); a seed replaces it with the shipped v2 (documentSigning). One an
// operator changed, even only in a comment, is theirs and stays.
func TestSeedUpgradesAnUntouchedShippedProfile(t *testing.T) {
	v1, err := os.ReadFile("../../policies/testdata/signing-v1.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name    string
		data    []byte
		want    uint64
		applied string
	}{
		{"as shipped", v1, 2, "authentication,signing"},
		{"changed by an operator", append([]byte("# ours\n"), v1...), 1, "authentication"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := newNode(t)
			if err := n.apply(t, "signing.yaml", tc.data); err != nil {
				t.Fatal(err)
			}
			got, err := Seed(ctx, n.c, policies.Shipped(), "system")
			if err != nil || strings.Join(got, ",") != tc.applied {
				t.Fatalf("seed: %v, %v; want %s", got, err, tc.applied)
			}
			set, err := n.active(t)
			if err != nil {
				t.Fatal(err)
			}
			p := mustProfile(t, set, "signing")
			if p.Version != tc.want || (tc.want == 2) != slices.Contains(p.ExtKeyUsage, "documentSigning") {
				t.Errorf("signing v%d with EKU %v; want v%d", p.Version, p.ExtKeyUsage, tc.want)
			}
			if got, err := Seed(ctx, n.c, policies.Shipped(), "system"); err != nil || len(got) != 0 {
				t.Errorf("a second seed applied %v, %v", got, err)
			}
		})
	}
}

func TestSeed(t *testing.T) {
	n := newNode(t)
	ctx := context.Background()
	got, err := Seed(ctx, n.c, policies.Shipped(), "system")
	if err != nil || strings.Join(got, ",") != "authentication,signing" {
		t.Fatalf("first seed: %v, %v", got, err)
	}
	if err := n.apply(t, "signing.yaml", bump(t, shipped(t, "signing"), "2", "3")); err != nil {
		t.Fatal(err)
	}
	if got, err := Seed(ctx, n.c, policies.Shipped(), "system"); err != nil || len(got) != 0 {
		t.Fatalf("second seed: %v, %v", got, err)
	}
	set, err := n.active(t)
	if err != nil {
		t.Fatal(err)
	}
	if v := mustProfile(t, set, "signing").Version; v != 3 {
		t.Errorf("signing v%d after a second seed, want the operator's 3", v)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.descs) != 3 || n.descs[0].Actor != "system" {
		t.Errorf("%d applies audited", len(n.descs))
	}
}
