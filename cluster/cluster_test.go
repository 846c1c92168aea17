package cluster

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/internal/testenv"
)

func TestSingleNodeSubmitRefuseRestart(t *testing.T) {
	reg := prometheus.NewRegistry()
	nodes := newTestCluster(t, 1, func(c *Config) { c.Registerer = reg })
	n := nodes[0]
	ctx := testenv.Context(t, 20*time.Second)
	res, err := n.c.Submit(ctx, putCmd(t, "a", false, nil))
	if err != nil || !strings.HasPrefix(string(res), "ok:a@") {
		t.Fatalf("submit a = %q, %v", res, err)
	}
	_, err = n.c.Submit(ctx, putCmd(t, "r", true, nil))
	if !errors.Is(err, ErrRefused) || !errors.Is(err, errToldToRefuse) {
		t.Fatalf("refused submit: err = %v", err)
	}
	if got := counts(t, n.c); got["a"] != 1 || got["r"] != 0 {
		t.Fatalf("counts = %v, want a once and r never (refusal undoes its writes)", got)
	}
	metrics := map[string]float64{}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			switch {
			case m.GetGauge() != nil:
				metrics[mf.GetName()] += m.GetGauge().GetValue()
			case m.GetCounter() != nil:
				metrics[mf.GetName()] += m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				metrics[mf.GetName()] += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	for name, min := range map[string]float64{
		"inkan_cluster_raft_state":         2, // leader
		"inkan_cluster_applied_index":      3,
		"inkan_cluster_apply_errors_total": 1, // the refusal
		"inkan_cluster_commit_seconds":     2,
		"inkan_cluster_batch_commands":     2,
	} {
		if metrics[name] < min {
			t.Errorf("metric %s = %v, want at least %v", name, metrics[name], min)
		}
	}
	applied := n.c.fsm.applied.Load()
	n.cfg.Registerer = nil
	n.kill()
	n.open(ctx)
	if got := n.c.fsm.applied.Load(); got < applied {
		t.Fatalf("applied after restart %d < %d", got, applied)
	}
	waitLeader(t, nodes)
	if _, err := n.c.Submit(ctx, putCmd(t, "b", false, nil)); err != nil {
		t.Fatal(err)
	}
	if got := counts(t, n.c); got["a"] != 1 || got["b"] != 1 || len(got) != 2 {
		t.Fatalf("after restart counts = %v (replay must not apply twice)", got)
	}
	st, err := n.c.Status()
	if err != nil || len(st.Members) != 1 || st.Members[0].ID != n.c.ID() || st.Members[0].Role != Voter {
		t.Fatalf("status = %+v, %v", st, err)
	}
}

func TestThreeVotersSurviveLeaderLoss(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader := waitLeader(t, nodes)
	ctx := testenv.Context(t, 60*time.Second)

	const total, workers = 1000, 8
	var (
		mu    sync.Mutex
		acked []string
		next  atomic.Int64
		wg    sync.WaitGroup
	)
	killed := make(chan struct{})
	for w := 0; w < workers; w++ {
		// Each worker submits through a node that will survive.
		var via *testNode
		for _, n := range nodes {
			if n != leader && (via == nil || w%2 == 0) {
				via = n
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1)
				if i > total {
					return
				}
				if i == total/3 {
					close(killed)
				}
				id := fmt.Sprintf("c%04d", i)
				cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := via.c.Submit(cctx, putCmd(t, id, false, nil))
				cancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, id)
					mu.Unlock()
				}
			}
		}()
	}
	<-killed
	leader.kill()
	wg.Wait()

	alive := running(nodes)
	newLeader := waitLeader(t, alive)
	if newLeader == leader {
		t.Fatal("killed node still leads")
	}
	if len(acked) < total/2 {
		t.Fatalf("only %d of %d commands acknowledged", len(acked), total)
	}
	for _, n := range alive {
		if err := n.c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		got := counts(t, n.c)
		for _, id := range acked {
			if got[id] != 1 {
				t.Errorf("node %s: acknowledged %s applied %d times", n.c.ID(), id, got[id])
			}
		}
		for id, k := range got {
			if k != 1 {
				t.Errorf("node %s: %s applied %d times", n.c.ID(), id, k)
			}
		}
	}
	t.Logf("%d of %d acknowledged; leader %s killed, %s took over", len(acked), total, leader.cfg.DataDir, newLeader.c.ID())
}

func TestRestartCatchUpAndFullRestart(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	ctx := testenv.Context(t, 60*time.Second)
	leader := waitLeader(t, nodes)
	var follower *testNode
	for _, n := range nodes {
		if n != leader {
			follower = n
		}
	}
	for i := 0; i < 20; i++ {
		if _, err := leader.c.Submit(ctx, putCmd(t, fmt.Sprintf("a%d", i), false, nil)); err != nil {
			t.Fatal(err)
		}
	}
	follower.kill()
	for i := 0; i < 20; i++ {
		if _, err := leader.c.Submit(ctx, putCmd(t, fmt.Sprintf("b%d", i), false, nil)); err != nil {
			t.Fatal(err)
		}
	}
	follower.open(ctx)
	if err := follower.c.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if got := counts(t, follower.c); len(got) != 40 {
		t.Fatalf("restarted follower has %d of 40 records", len(got))
	}

	for _, n := range nodes {
		n.kill()
	}
	for _, n := range nodes {
		n.open(ctx)
	}
	waitLeader(t, nodes)
	for _, n := range nodes {
		if err := n.c.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
		got := counts(t, n.c)
		if len(got) != 40 {
			t.Fatalf("node %s after full restart has %d of 40 records", n.c.ID(), len(got))
		}
		for id, k := range got {
			if k != 1 {
				t.Fatalf("node %s: %s applied %d times", n.c.ID(), id, k)
			}
		}
	}
	if _, err := nodes[2].c.Submit(ctx, putCmd(t, "after", false, nil)); err != nil {
		t.Fatal(err)
	}
}

func TestCutOffNodeRefusesWritesAndCurrentReads(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	ctx := testenv.Context(t, 60*time.Second)
	leader := waitLeader(t, nodes)
	if _, err := leader.c.Submit(ctx, putCmd(t, "before", false, nil)); err != nil {
		t.Fatal(err)
	}
	for _, cut := range []string{"follower", "leader"} {
		t.Run(cut, func(t *testing.T) {
			leader := waitLeader(t, running(nodes))
			victim := leader
			if cut == "follower" {
				for _, n := range nodes {
					if n != leader {
						victim = n
					}
				}
			}
			victim.c.net.setCut(true)
			defer victim.c.net.setCut(false)
			short := func() context.Context { return testenv.Context(t, 1500*time.Millisecond) }
			if _, err := victim.c.Submit(short(), putCmd(t, "cut-"+cut, false, nil)); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("cut-off node's write: err = %v, want a deadline", err)
			}
			// The others go on and write something the victim cannot see.
			var other *testNode
			for _, n := range nodes {
				if n != victim {
					other = n
				}
			}
			if _, err := other.c.Submit(ctx, putCmd(t, "while-cut-"+cut, false, nil)); err != nil {
				t.Fatal(err)
			}
			saw := false
			err := victim.c.ViewCurrent(short(), func(tx *bbolt.Tx) error {
				saw = true
				return nil
			})
			if !errors.Is(err, context.DeadlineExceeded) || saw {
				t.Fatalf("cut-off node's current read: saw %v, err = %v, want a deadline", saw, err)
			}
			victim.c.net.setCut(false)
			if err := victim.c.ViewCurrent(ctx, func(tx *bbolt.Tx) error {
				if tx.Bucket(bucketTest).Get([]byte("while-cut-"+cut)) == nil {
					return errors.New("healed node's current read misses a committed write")
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// putV2 also applies test.put version 2, which older nodes do not know.
type putV2 struct{ putHandler }

func (putV2) Versions() []uint { return []uint{1, 2} }

func TestReplicaStopsOnUnknownVersion(t *testing.T) {
	nodes := newTestCluster(t, 2, func(c *Config) { c.Handlers = []Handler{putV2{}} })
	old := addNode(t, nodes[0].c, Voter, nil) // knows version 1 only
	nodes = append(nodes, old)
	ctx := testenv.Context(t, 30*time.Second)
	leader := waitLeader(t, nodes[:2])
	cmd := putCmd(t, "new", false, nil)
	if _, err := old.c.Submit(ctx, Command{Type: cmd.Type, Version: 2, Body: cmd.Body}); !errors.Is(err, errUnknownCommand) {
		t.Fatalf("old node submitting v2: err = %v", err)
	}
	cmd.Version = 2
	if _, err := leader.c.Submit(ctx, cmd); err != nil {
		t.Fatal(err)
	}
	select {
	case <-old.c.Done():
	case <-ctx.Done():
		t.Fatal("a replica that cannot apply a committed command kept running")
	}
	if err := old.c.Err(); !errors.Is(err, ErrNodeFailed) || !errors.Is(err, errUnknownCommand) {
		t.Fatalf("Err() = %v", err)
	}
	if got := counts(t, leader.c); got["new"] != 1 {
		t.Fatalf("leader state = %v", got)
	}
	old.c = nil // stopped already
}

// TestRefusalCodeSurvivesForward: a handler's refusal keeps its identity on the
// node that submitted the command, wherever it was applied: through a follower
// that forwards to the leader, and on a retry answered from the request record.
func TestRefusalCodeSurvivesForward(t *testing.T) {
	nodes := newTestCluster(t, 3, nil)
	leader := waitLeader(t, nodes)
	var follower *testNode
	for _, n := range nodes {
		if n != leader {
			follower = n
			break
		}
	}
	ctx := testenv.Context(t, 20*time.Second)
	for name, via := range map[string]*testNode{"leader": leader, "follower": follower} {
		_, err := via.c.Submit(ctx, putCmd(t, "refuse-"+name, true, nil))
		if !errors.Is(err, errToldToRefuse) || !errors.Is(err, ErrRefused) {
			t.Fatalf("refusal through the %s: %v (%T), want errToldToRefuse", name, err, err)
		}
		var other = NewRefusal("test.other", "another refusal")
		if errors.Is(err, other) {
			t.Fatalf("refusal through the %s matches another code", name)
		}
	}
	// The request record answers a retried submission with the same identity.
	cmd := putCmd(t, "refuse-again", true, nil)
	id, err := newRequestID(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		_, err := submitWithID(ctx, follower.c, cmd, id)
		if !errors.Is(err, errToldToRefuse) {
			t.Fatalf("attempt %d: %v, want errToldToRefuse", i, err)
		}
	}
	if got := counts(t, leader.c); got["refuse-again"] != 0 {
		t.Fatalf("a refused command wrote: %v", got)
	}
}

// submitWithID submits cmd under a request ID of the caller's, as a submission
// retried across a leader change does.
func submitWithID(ctx context.Context, c *Cluster, cmd Command, id []byte) ([]byte, error) {
	raw, err := encodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	wait := c.fsm.register(id)
	defer c.fsm.unregister(id)
	if _, err := c.leaderCall(ctx, rpcRequest{Op: opSubmit, ID: id, Cmd: raw}, ""); err != nil {
		return nil, err
	}
	select {
	case r := <-wait:
		return r.value, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
