package crl

import (
	"context"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
)

// Sizes of the CRLs of one CA at 1,000,000 revocations (BenchmarkSizesMillion,
// docs/BENCHMARKS.md): the full CRL, one of the default 16 shards, a delta.
const (
	millionFull  = 49_000_000
	millionShard = 3_060_000
	millionDelta = 49_000
	benchShards  = 16
)

// BenchmarkArchiveYear applies, through the real handlers on a real state
// file and archive, the CRLs one CA publishes at 1,000,000 revocations with
// revocations coming every hour: each hour a full CRL, its delta and all 16
// shard CRLs, for INKAN_BENCH_DAYS simulated days (30; 365 for a year). It
// does so twice: as today (crl.publish version 3: the state keeps the newest
// of each shard, the archive the rest) and as before (version 1 and 2: the
// state keeps every CRL), and reports the state file (what a snapshot and a
// backup copy), the archive and the time to copy the state as a snapshot and
// open the copy (what installing one costs a node, less the network).
//
// The CRLs' bytes are scaled down by INKAN_BENCH_SCALE (1000) so that a year
// fits the disk; the index entries are not. The *_full metrics scale the
// bytes back up: the state as before and the archive grow with the bytes,
// the state as today holds the index plus the newest CRLs at full size
// (twice: the pages of the CRLs before them, freed, stay in the file).
func BenchmarkArchiveYear(b *testing.B) {
	days := envInt("INKAN_BENCH_DAYS", 30)
	scale := envInt("INKAN_BENCH_SCALE", 1000)
	for range b.N {
		type result struct {
			state, archive int64
			snapshot       time.Duration
			current        int64 // bytes of the newest CRLs
		}
		run := func(archived bool) result {
			db := bareState(b)
			number := map[int]uint64{}
			var current int64
			for h := range days * 24 {
				at := archiveT0.Add(time.Duration(h) * time.Hour)
				var cmds []cluster.Command
				add := func(shard, size int) {
					scope := shard
					if shard == Delta {
						scope = Full
					}
					number[scope]++
					v := commandVersion(shard)
					if archived {
						v = publishVersion
					}
					cmds = append(cmds, publishCommands(b, shard, number[scope], fakeCRL(shard, number[scope], max(size/scale, 64)), v)...)
				}
				add(Full, millionFull)
				add(Delta, millionDelta)
				for s := range benchShards {
					add(s, millionShard)
				}
				applyAll(b, db, cmds, at)
			}
			current = int64((millionFull + millionDelta + benchShards*millionShard) / scale)
			var r result
			r.current = current
			st, err := os.Stat(db.Path())
			if err != nil {
				b.Fatal(err)
			}
			r.state = st.Size()
			_ = filepath.WalkDir(filepath.Join(filepath.Dir(db.Path()), cluster.SharedDir), func(_ string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					if fi, err := d.Info(); err == nil {
						r.archive += fi.Size()
					}
				}
				return nil
			})
			start := time.Now()
			snap := filepath.Join(b.TempDir(), "state.db")
			if err := db.View(func(tx *bbolt.Tx) error { return tx.CopyFile(snap, 0o600) }); err != nil {
				b.Fatal(err)
			}
			f, err := os.Open(snap)
			if err == nil {
				err = f.Sync()
				f.Close()
			}
			if err != nil {
				b.Fatal(err)
			}
			copied, err := bbolt.Open(snap, 0o600, nil)
			if err != nil {
				b.Fatal(err)
			}
			if err := copied.View(func(tx *bbolt.Tx) error { _, _, err := Read(tx).Latest("ca1", Full); return err }); err != nil {
				b.Fatal(err)
			}
			copied.Close()
			r.snapshot = time.Since(start)
			return r
		}
		now, before := run(true), run(false)
		const mb = 1e6
		b.ReportMetric(float64(days), "days")
		b.ReportMetric(float64(now.state)/mb, "state_MB")
		b.ReportMetric(float64(before.state)/mb, "state_before_MB")
		b.ReportMetric(float64(now.archive)/mb, "archive_MB")
		b.ReportMetric(float64(now.state)/float64(before.state), "state/before")
		b.ReportMetric(float64(now.snapshot.Milliseconds()), "snapshot_ms")
		b.ReportMetric(float64(before.snapshot.Milliseconds()), "snapshot_before_ms")
		// Back at full size: the index is what the state holds beyond the newest
		// CRLs; at full size the file also keeps the pages the CRLs before them
		// freed (bbolt reuses, never shrinks), so count the newest twice.
		index := now.state - now.current
		stateFull := float64(index + 2*now.current*int64(scale))
		beforeFull := float64(before.state) * float64(scale)
		b.ReportMetric(stateFull/mb, "state_full_MB")
		b.ReportMetric(beforeFull/mb, "state_before_full_MB")
		b.ReportMetric(float64(now.archive)*float64(scale)/mb, "archive_full_MB")
		b.ReportMetric(stateFull/beforeFull, "state/before_full")
	}
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}

// BenchmarkSnapshotInstall publishes, through Raft on one voter, what
// BenchmarkArchiveYear applies (each hour a full CRL, its delta and 16 shards
// at 1,000,000 revocations, bytes scaled down by INKAN_BENCH_SCALE) for
// INKAN_BENCH_INSTALL_DAYS simulated days (7), lets the log be compacted
// behind a snapshot, then adds a second voter and times its join until it has
// applied everything (it installs the snapshot): today and as before.
func BenchmarkSnapshotInstall(b *testing.B) {
	days := envInt("INKAN_BENCH_INSTALL_DAYS", 7)
	scale := envInt("INKAN_BENCH_SCALE", 1000)
	for range b.N {
		run := func(archived bool) (snapshot int64, install time.Duration) {
			g := clustertest.Voters(b, 1, clustertest.Options{Config: cluster.Config{
				Handlers: Handlers(), SnapshotInterval: 200 * time.Millisecond, SnapshotThreshold: 256, TrailingLogs: 64,
			}})
			leader := g.Leader()
			number := map[int]uint64{}
			for range days * 24 {
				var wg sync.WaitGroup
				publish := func(shard, size int) {
					scope := shard
					if shard == Delta {
						scope = Full
					}
					number[scope]++
					v := commandVersion(shard)
					if archived {
						v = publishVersion
					}
					cmds := publishCommands(b, shard, number[scope], fakeCRL(shard, number[scope], max(size/scale, 64)), v)
					wg.Go(func() { submitAll(b, leader.Cluster, cmds) })
				}
				publish(Full, millionFull)
				for s := range benchShards {
					publish(s, millionShard)
				}
				wg.Wait()
				publish(Delta, millionDelta) // after its full CRL, as the publisher sends it
				wg.Wait()
			}
			time.Sleep(time.Second) // a snapshot after the last entry
			dir := filepath.Join(leader.Config.DataDir, "snapshots")
			_ = filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					if fi, err := d.Info(); err == nil && fi.Size() > snapshot {
						snapshot = fi.Size() // the newest snapshot's state.bin is the largest file
					}
				}
				return nil
			})
			start := time.Now()
			m := g.Add()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			if err := m.Cluster.Barrier(ctx); err != nil {
				b.Fatal(err)
			}
			return snapshot, time.Since(start)
		}
		snap, install := run(true)
		snapBefore, installBefore := run(false)
		b.ReportMetric(float64(days), "days")
		b.ReportMetric(float64(snap)/1e6, "snapshot_MB")
		b.ReportMetric(float64(snapBefore)/1e6, "snapshot_before_MB")
		b.ReportMetric(float64(install.Milliseconds()), "install_ms")
		b.ReportMetric(float64(installBefore.Milliseconds()), "install_before_ms")
		b.ReportMetric(float64(snap)/float64(snapBefore), "snapshot/before")
		b.ReportMetric(float64(install)/float64(installBefore), "install/before")
	}
}

// BenchmarkSnapshotInstallYear measures what BenchmarkSnapshotInstall cannot
// reach: a new voter installing the snapshot of a state of the size it has
// at 1,000,000 revocations after a year (INKAN_BENCH_DAYS, 365) of hourly
// CRLs. The year's index (each hour a full CRL, its delta and 16 shards:
// 157,680 entries, each chained) is built through the real handlers on a
// bare state in INKAN_BENCH_SCRATCH (default a temporary directory; its
// archive is one synced file per CRL, so /dev/shm makes it quick) with CRLs
// of 64 bytes, and put into a backup of a real voter's state; a voter
// restored from it (cluster.Restore, as `inkan admin restore` does) then
// publishes one more hour through Raft at full size (a 49 MB full CRL, its
// delta, 16 shards of 3.06 MB), so the state holds the year's index and the
// newest CRLs as they are. Once the log is compacted behind a snapshot, a
// second voter joins; the time is from its join (HSM token and grant
// included) until it has applied everything. The baseline, in the same run:
// copying the leader's snapshot file on the same disk and syncing it (what
// the install cannot beat).
func BenchmarkSnapshotInstallYear(b *testing.B) {
	days := envInt("INKAN_BENCH_DAYS", 365)
	for range b.N {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
		defer cancel()
		// 1. The year's index, through the handlers.
		scratch := b.TempDir()
		if s := os.Getenv("INKAN_BENCH_SCRATCH"); s != "" {
			var err error
			if scratch, err = os.MkdirTemp(s, "inkan-bench-"); err != nil {
				b.Fatal(err)
			}
			defer os.RemoveAll(scratch)
		}
		year, err := bbolt.Open(filepath.Join(scratch, "state.db"), 0o600, &bbolt.Options{NoSync: true})
		if err != nil {
			b.Fatal(err)
		}
		defer year.Close()
		if err := year.Update(func(tx *bbolt.Tx) error {
			for _, name := range [][]byte{bucketCRL, bucketStaging} {
				if _, err := tx.CreateBucket(name); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			b.Fatal(err)
		}
		number := map[int]uint64{}
		hour := func(shard, size int) []cluster.Command {
			scope := shard
			if shard == Delta {
				scope = Full
			}
			number[scope]++
			return publishCommands(b, shard, number[scope], fakeCRL(shard, number[scope], size), publishVersion)
		}
		built := time.Now()
		for h := range days * 24 {
			cmds := append(hour(Full, 64), hour(Delta, 64)...)
			for s := range benchShards {
				cmds = append(cmds, hour(s, 64)...)
			}
			applyAll(b, year, cmds, archiveT0.Add(time.Duration(h)*time.Hour))
		}
		b.Logf("a year's index built in %s", time.Since(built).Round(time.Second))

		// 2. A real voter's state with the year's CRL buckets in it.
		seed := clustertest.Voters(b, 1, clustertest.Options{Config: cluster.Config{Handlers: Handlers()}})
		restoreFile := filepath.Join(b.TempDir(), "restore.db")
		f, err := os.Create(restoreFile)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := seed.Leader().Cluster.BackupLocal(ctx, f); err != nil {
			b.Fatal(err)
		}
		if err := f.Close(); err != nil {
			b.Fatal(err)
		}
		seed.Leader().Kill()
		if err := mergeBuckets(restoreFile, year, bucketCRL, bucketStaging); err != nil {
			b.Fatal(err)
		}

		// 3. Restored into a voter, which publishes an hour at full size.
		g := clustertest.Voters(b, 1, clustertest.Options{
			Config: cluster.Config{Handlers: Handlers(), SnapshotInterval: 200 * time.Millisecond, SnapshotThreshold: 16, TrailingLogs: 16},
			Tweak: func(i int, cfg *cluster.Config) {
				if i == 0 {
					cfg.Restore = &cluster.Restore{Path: restoreFile}
				}
			},
		})
		leader := g.Leader()
		submitAll(b, leader.Cluster, hour(Full, millionFull))
		submitAll(b, leader.Cluster, hour(Delta, millionDelta))
		for s := range benchShards {
			submitAll(b, leader.Cluster, hour(s, millionShard))
		}
		// The snapshot after the last entry: its state.bin the largest file
		// (looked for again once no newer one comes, older ones being reaped).
		var snapshot string
		var snapSize int64
		find := func() {
			snapshot, snapSize = "", 0
			_ = filepath.WalkDir(filepath.Join(leader.Config.DataDir, "snapshots"), func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() && !strings.HasSuffix(filepath.Dir(p), ".tmp") {
					if fi, err := d.Info(); err == nil && fi.Size() > snapSize {
						snapshot, snapSize = p, fi.Size()
					}
				}
				return nil
			})
		}
		for deadline := time.Now().Add(2 * time.Minute); snapSize < millionFull; time.Sleep(500 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("no snapshot of the full-size state (largest %d bytes)", snapSize)
			}
			find()
		}
		time.Sleep(2 * time.Second) // no snapshot being written while the join is timed
		find()

		// The baseline: the same bytes copied on the same disk, synced.
		start := time.Now()
		if err := copySynced(snapshot, filepath.Join(b.TempDir(), "copy.bin")); err != nil {
			b.Fatal(err)
		}
		copied := time.Since(start)

		// 4. A new voter joins and installs the snapshot.
		start = time.Now()
		m := g.Add()
		if err := m.Cluster.Barrier(ctx); err != nil {
			b.Fatal(err)
		}
		install := time.Since(start)
		var entries int
		if err := m.Cluster.View(func(tx *bbolt.Tx) error {
			return tx.Bucket(bucketCRL).Bucket([]byte("ca1")).ForEachBucket(func(shard []byte) error {
				entries += tx.Bucket(bucketCRL).Bucket([]byte("ca1")).Bucket(shard).Bucket(keyMeta).Stats().KeyN
				return nil
			})
		}); err != nil {
			b.Fatal(err)
		}
		if want := (days*24 + 1) * (benchShards + 2); entries != want {
			b.Fatalf("the new voter holds %d index entries, want %d", entries, want)
		}
		b.ReportMetric(float64(days), "days")
		b.ReportMetric(float64(entries), "index_entries")
		b.ReportMetric(float64(snapSize)/1e6, "snapshot_MB")
		b.ReportMetric(float64(install.Milliseconds()), "install_ms")
		b.ReportMetric(float64(copied.Milliseconds()), "copy_ms")
		b.ReportMetric(float64(install)/float64(copied), "install/copy")
	}
}

// mergeBuckets replaces the named top-level buckets of the bbolt file path
// with src's.
func mergeBuckets(path string, src *bbolt.DB, names ...[]byte) error {
	dst, err := bbolt.Open(path, 0o600, nil)
	if err != nil {
		return err
	}
	defer dst.Close()
	return src.View(func(stx *bbolt.Tx) error {
		return dst.Update(func(dtx *bbolt.Tx) error {
			for _, name := range names {
				if dtx.Bucket(name) != nil {
					if err := dtx.DeleteBucket(name); err != nil {
						return err
					}
				}
				db, err := dtx.CreateBucket(name)
				if err != nil {
					return err
				}
				if err := copyBucket(db, stx.Bucket(name)); err != nil {
					return err
				}
			}
			return nil
		})
	})
}

func copyBucket(dst, src *bbolt.Bucket) error {
	if err := dst.SetSequence(src.Sequence()); err != nil {
		return err
	}
	return src.ForEach(func(k, v []byte) error {
		if v != nil {
			return dst.Put(k, v)
		}
		sub, err := dst.CreateBucket(k)
		if err != nil {
			return err
		}
		return copyBucket(sub, src.Bucket(k))
	})
}

func copySynced(from, to string) error {
	in, err := os.Open(from)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(to)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
