package crl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
)

var archiveT0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// fakeCRL is the bytes of CRL number n of a test shard: not a CRL (the store
// does not parse), but of the size a test asks and unlike any other.
func fakeCRL(shard int, n uint64, size int) []byte {
	b := bytes.Repeat([]byte{byte(n), byte(shard)}, size/2+1)[:size]
	return binary.BigEndian.AppendUint64(b[:size-8], n)
}

// publishCommands are the crl.part and crl.publish commands of der as number
// n of shard, at version.
func publishCommands(t testing.TB, shard int, n uint64, der []byte, version uint) []cluster.Command {
	t.Helper()
	sum := sha256.Sum256(der)
	var cmds []cluster.Command
	parts := (len(der) + partSize - 1) / partSize
	for i := range parts {
		cmd, err := cluster.NewCommand(commandPart, commandVersion(shard), partBody{CA: "ca1", Shard: shard, Number: n, Part: i,
			Data: der[i*partSize : min(len(der), (i+1)*partSize)]})
		if err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	this := archiveT0.Add(time.Duration(n) * time.Hour)
	cmd, err := cluster.NewCommand(commandPublish, version, Meta{CA: "ca1", Shard: shard, Number: n, ThisUpdate: this,
		NextUpdate: this.Add(24 * time.Hour), SHA256: sum[:], Parts: parts, Entries: int(n)})
	if err != nil {
		t.Fatal(err)
	}
	return append(cmds, cmd)
}

// bareState is a state file with the CRL buckets, applied to directly (the
// handlers are pure functions of the state and the entry), in its own
// directory so that its archive is the test's.
func bareState(t testing.TB) *bbolt.DB {
	t.Helper()
	db, err := bbolt.Open(filepath.Join(t.TempDir(), "state.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketCRL, bucketStaging} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return db
}

func applyAll(t testing.TB, db *bbolt.DB, cmds []cluster.Command, at time.Time) {
	t.Helper()
	if err := db.Update(func(tx *bbolt.Tx) error {
		for _, cmd := range cmds {
			apply := applyPart
			if cmd.Type == commandPublish {
				apply = applyPublish
			}
			if _, err := apply(tx, cluster.Entry{Time: at, Command: cmd}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// stateNumbers lists the numbers whose bytes the state holds for the shard.
func stateNumbers(t testing.TB, db *bbolt.DB, shard int) []uint64 {
	t.Helper()
	var out []uint64
	if err := db.View(func(tx *bbolt.Tx) error {
		sb := readShard(tx, "ca1", shard)
		if sb == nil || sb.Bucket(keyParts) == nil {
			return nil
		}
		return sb.Bucket(keyParts).ForEach(func(k, _ []byte) error {
			if n := binary.BigEndian.Uint64(k); len(out) == 0 || out[len(out)-1] != n {
				out = append(out, n)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func derOf(t testing.TB, db *bbolt.DB, shard int, n uint64) ([]byte, error) {
	t.Helper()
	var der []byte
	err := db.View(func(tx *bbolt.Tx) error {
		m, ok, err := Read(tx).Get("ca1", shard, n)
		if err != nil || !ok {
			return fmt.Errorf("no meta %d: %v", n, err)
		}
		der, err = Read(tx).DER(m)
		return err
	})
	return der, err
}

// TestStateKeepsNewestOnly: from version 3 the state holds the bytes of a
// shard's newest CRL only; every older one is served, whole and unchanged,
// from the archive, and the index chains every entry.
func TestStateKeepsNewestOnly(t *testing.T) {
	db := bareState(t)
	want := map[uint64][]byte{}
	for n := uint64(1); n <= 6; n++ {
		want[n] = fakeCRL(0, n, partSize+1000) // two parts each
		applyAll(t, db, publishCommands(t, 0, n, want[n], publishVersion), archiveT0.Add(time.Duration(n)*time.Hour))
		if got := stateNumbers(t, db, 0); len(got) != 1 || got[0] != n {
			t.Fatalf("after publishing %d the state holds the bytes of %v", n, got)
		}
	}
	for n, w := range want {
		der, err := derOf(t, db, 0, n)
		if err != nil || !bytes.Equal(der, w) {
			t.Fatalf("CRL %d: %d bytes, %v", n, len(der), err)
		}
	}
	if err := db.View(func(tx *bbolt.Tx) error {
		// Around finds by time what the state no longer holds.
		cur, next, hasCur, hasNext, err := Read(tx).Around("ca1", 0, archiveT0.Add(150*time.Minute))
		if err != nil || !hasCur || !hasNext || cur.Number != 2 || next.Number != 3 {
			return fmt.Errorf("around: %d %d %v %v %v", cur.Number, next.Number, hasCur, hasNext, err)
		}
		if der, err := Read(tx).DER(cur); err != nil || !bytes.Equal(der, want[2]) {
			return fmt.Errorf("DER of the CRL current at T: %v", err)
		}
		n, tip, err := verifyIndex(tx, "ca1", 0)
		if err != nil || n != 6 || len(tip) != sha256.Size {
			return fmt.Errorf("verifyIndex: %d entries, %v", n, err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestArchiveTamperedNotServed: an archived file changed or removed is never
// served: DER reports ErrNotArchived and removes the changed file (Repair
// fetches it again); the newest, in the state, is unaffected.
func TestArchiveTamperedNotServed(t *testing.T) {
	db := bareState(t)
	var crls [][]byte
	for n := uint64(1); n <= 3; n++ {
		crls = append(crls, fakeCRL(5, n, 3000))
		applyAll(t, db, publishCommands(t, 5, n, crls[n-1], publishVersion), archiveT0)
	}
	dir := filepath.Join(filepath.Dir(db.Path()), cluster.SharedDir, archiveName)
	sum1, sum2 := sha256.Sum256(crls[0]), sha256.Sum256(crls[1])
	for _, c := range []struct {
		name   string
		number uint64
		damage func(path string) error
	}{
		{"a byte flipped", 1, func(p string) error {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			b[100] ^= 1
			return os.WriteFile(p, b, 0o600)
		}},
		{"removed", 2, os.Remove},
	} {
		t.Run(c.name, func(t *testing.T) {
			sum := sum1
			if c.number == 2 {
				sum = sum2
			}
			if err := c.damage(archivePath(dir, sum[:])); err != nil {
				t.Fatal(err)
			}
			if der, err := derOf(t, db, 5, c.number); !errors.Is(err, ErrNotArchived) || der != nil {
				t.Fatalf("damaged CRL %d: %d bytes, %v; want ErrNotArchived", c.number, len(der), err)
			}
			if _, err := os.Stat(archivePath(dir, sum[:])); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("the damaged file is still there: %v", err)
			}
		})
	}
	if der, err := derOf(t, db, 5, 3); err != nil || !bytes.Equal(der, crls[2]) {
		t.Fatalf("the newest CRL: %v", err)
	}
}

// TestVerifyIndexDetectsChange: an index entry changed, removed or put back
// out of order after it was chained breaks the chain (errIndexBroken).
func TestVerifyIndexDetectsChange(t *testing.T) {
	for _, c := range []struct {
		name   string
		change func(metas *bbolt.Bucket) error
	}{
		{"a hash changed", func(metas *bbolt.Bucket) error {
			var m Meta
			if err := cbor.Unmarshal(metas.Get(u64(2)), &m); err != nil {
				return err
			}
			m.SHA256[0] ^= 1
			b, err := cbor.Marshal(m)
			if err != nil {
				return err
			}
			return metas.Put(u64(2), b)
		}},
		{"a time changed", func(metas *bbolt.Bucket) error {
			var m Meta
			if err := cbor.Unmarshal(metas.Get(u64(3)), &m); err != nil {
				return err
			}
			m.ThisUpdate = m.ThisUpdate.Add(-time.Hour)
			b, err := cbor.Marshal(m)
			if err != nil {
				return err
			}
			return metas.Put(u64(3), b)
		}},
		{"an entry removed", func(metas *bbolt.Bucket) error { return metas.Delete(u64(2)) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			db := bareState(t)
			for n := uint64(1); n <= 4; n++ {
				applyAll(t, db, publishCommands(t, 1, n, fakeCRL(1, n, 500), publishVersion), archiveT0)
			}
			if err := db.Update(func(tx *bbolt.Tx) error {
				if _, _, err := verifyIndex(tx, "ca1", 1); err != nil {
					return fmt.Errorf("before the change: %w", err)
				}
				return c.change(readShard(tx, "ca1", 1).Bucket(keyMeta))
			}); err != nil {
				t.Fatal(err)
			}
			if err := db.View(func(tx *bbolt.Tx) error {
				_, _, err := verifyIndex(tx, "ca1", 1)
				return err
			}); !errors.Is(err, errIndexBroken) {
				t.Fatalf("verifyIndex: %v, want errIndexBroken", err)
			}
		})
	}
}

// TestArchiveUpgrade: CRLs published at versions 1 and 2 (before the
// archive) kept their bytes in the state; the first version 3 publish of the
// shard moves them to the archive and chains their index entries first.
func TestArchiveUpgrade(t *testing.T) {
	db := bareState(t)
	want := map[uint64][]byte{}
	for n := uint64(1); n <= 3; n++ {
		want[n] = fakeCRL(Full, n, 700)
		applyAll(t, db, publishCommands(t, Full, n, want[n], 1), archiveT0)
	}
	if got := stateNumbers(t, db, Full); len(got) != 3 {
		t.Fatalf("version 1 kept the bytes of %v", got)
	}
	want[4] = fakeCRL(Full, 4, 700)
	applyAll(t, db, publishCommands(t, Full, 4, want[4], publishVersion), archiveT0)
	if got := stateNumbers(t, db, Full); len(got) != 1 || got[0] != 4 {
		t.Fatalf("after the upgrade the state holds the bytes of %v", got)
	}
	for n, w := range want {
		if der, err := derOf(t, db, Full, n); err != nil || !bytes.Equal(der, w) {
			t.Fatalf("CRL %d: %v", n, err)
		}
	}
	if err := db.View(func(tx *bbolt.Tx) error {
		n, _, err := verifyIndex(tx, "ca1", Full)
		if n != 4 {
			return fmt.Errorf("chained %d entries, want 4 (%v)", n, err)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
}

// submitAll submits cmds in order on c.
func submitAll(t testing.TB, c *cluster.Cluster, cmds []cluster.Command) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, cmd := range cmds {
		if _, err := c.Submit(ctx, cmd); err != nil {
			t.Fatal(err)
		}
	}
}

func clusterDER(t testing.TB, c *cluster.Cluster, shard int, n uint64) ([]byte, error) {
	t.Helper()
	var der []byte
	err := c.View(func(tx *bbolt.Tx) error {
		m, ok, err := Read(tx).Get("ca1", shard, n)
		if err != nil || !ok {
			return fmt.Errorf("no meta %d: %v", n, err)
		}
		der, err = Read(tx).DER(m)
		return err
	})
	return der, err
}

// TestLateJoinerFetchesArchive: a voter that joins after the log was
// compacted installs a snapshot, which holds the index and the newest CRL
// only; Repair fetches the others from its peer over the cluster RPC, checks
// them against the index and serves them. A file damaged later is dropped
// when read and fetched again.
func TestLateJoinerFetchesArchive(t *testing.T) {
	g := clustertest.Voters(t, 1, clustertest.Options{Config: cluster.Config{
		Handlers:          Handlers(),
		SnapshotInterval:  50 * time.Millisecond,
		SnapshotThreshold: 8,
		TrailingLogs:      4, // 12 CRLs are 36 entries: the joiner installs a snapshot
	}})
	leader := g.Leader().Cluster
	want := map[uint64][]byte{}
	for n := uint64(1); n <= 12; n++ {
		want[n] = fakeCRL(2, n, partSize+5000)
		submitAll(t, leader, publishCommands(t, 2, n, want[n], publishVersion))
	}
	time.Sleep(500 * time.Millisecond) // a snapshot, and the log compacted behind it
	joiner := g.Add().Cluster
	// Generous: under make unit's load (-race, every package at once) a
	// snapshot install on two shared cores has taken over a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	if err := joiner.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	r, err := repairOnce(ctx, joiner, true)
	if err != nil {
		t.Fatalf("repair: %+v: %v", r, err)
	}
	if r.Indexed != 12 || r.Missing == 0 || r.Fetched != r.Missing {
		t.Fatalf("repair: %+v; want 12 indexed and some missing, all fetched", r)
	}
	for n, w := range want {
		if der, err := clusterDER(t, joiner, 2, n); err != nil || !bytes.Equal(der, w) {
			t.Fatalf("CRL %d on the joiner: %v", n, err)
		}
	}
	// Damage one on the joiner: not served, then fetched again.
	var dir string
	if err := joiner.View(func(tx *bbolt.Tx) error { dir = archiveDir(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(want[3])
	if err := os.WriteFile(archivePath(dir, sum[:]), want[4], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := clusterDER(t, joiner, 2, 3); !errors.Is(err, ErrNotArchived) {
		t.Fatalf("a damaged file: %v, want ErrNotArchived", err)
	}
	if r, err := repairOnce(ctx, joiner, true); err != nil || r.Fetched != 1 {
		t.Fatalf("repair after damage: %+v, %v", r, err)
	}
	if der, err := clusterDER(t, joiner, 2, 3); err != nil || !bytes.Equal(der, want[3]) {
		t.Fatalf("CRL 3 after repair: %v", err)
	}
}

// TestRestoreWithArchive: a cluster restored from a backup (a new cluster,
// with no peer of the old one to fetch from) serves the history when its
// data directory was seeded with a copy of an old node's archive; without it
// every old CRL is reported missing (ErrNotArchived), never served wrong.
func TestRestoreWithArchive(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	old := clustertest.Single(t, cluster.Config{Handlers: Handlers()})
	want := map[uint64][]byte{}
	for n := uint64(1); n <= 4; n++ {
		want[n] = fakeCRL(0, n, 2000)
		submitAll(t, old.Cluster, publishCommands(t, 0, n, want[n], publishVersion))
	}
	path := filepath.Join(t.TempDir(), "backup")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	info, err := old.Backup(ctx, f)
	if err := errors.Join(err, f.Close()); err != nil {
		t.Fatal(err)
	}
	for _, seeded := range []bool{true, false} {
		t.Run(fmt.Sprintf("seeded=%v", seeded), func(t *testing.T) {
			dir := t.TempDir()
			if seeded {
				if err := os.CopyFS(filepath.Join(dir, cluster.SharedDir), os.DirFS(filepath.Join(old.Dir, cluster.SharedDir))); err != nil {
					t.Fatal(err)
				}
			}
			n := clustertest.SingleOn(t, old.Token, cluster.Config{Handlers: Handlers(), DataDir: dir,
				Restore: &cluster.Restore{Path: path, SHA256: info.SHA256}})
			r, err := repairOnce(ctx, n.Cluster, true)
			switch {
			case seeded && (err != nil || r.Missing != 0):
				t.Fatalf("seeded restore: %+v, %v", r, err)
			case !seeded && (!errors.Is(err, ErrNotArchived) || r.Missing != 3):
				t.Fatalf("unseeded restore: %+v, %v; want 3 missing, ErrNotArchived", r, err)
			}
			for num, w := range want {
				der, err := clusterDER(t, n.Cluster, 0, num)
				switch {
				case seeded || num == 4:
					if err != nil || !bytes.Equal(der, w) {
						t.Fatalf("CRL %d: %v", num, err)
					}
				case !errors.Is(err, ErrNotArchived):
					t.Fatalf("CRL %d not archived: %v, want ErrNotArchived", num, err)
				}
			}
		})
	}
}
