package clustertest

import (
	"context"
	"testing"
	"time"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/hsm"
	"github.com/inkan-pki/inkan/hsm/softhsm"
)

// Member is one voter of a Group: its SoftHSM token, a second view of it with a
// pool for parallel signing (Keys), the configuration it reopens with, and,
// while it runs, its cluster.
type Member struct {
	Token   *softhsm.Token
	Keys    *hsm.Token
	Config  cluster.Config
	Cluster *cluster.Cluster // nil while the member is down
	Index   int
	g       *Group
}

// Group is a cluster of voters for the tests of cluster's users: each on its
// own token and data directory, joined with granted tokens as operators join
// them, with short Raft timeouts. Open and Close start and stop what a test
// runs on a member's cluster (an authority, a service), on every open and
// every kill.
type Group struct {
	t       testing.TB
	Members []*Member
	open    func(*Member)
	close   func(*Member)
	leads   func(*Member) bool
	opts    Options
}

// Options shape a Group. Config is the base of every member's configuration
// (handlers, hooks, replicated keys); Tweak changes member i's before it
// opens; Open runs after a member's cluster opens, Close after it is killed;
// Leads, if set, is what else a leader must show before Leader returns it
// (that the service the test runs on it has taken up leading).
type Options struct {
	Config cluster.Config
	Tweak  func(i int, cfg *cluster.Config)
	Open   func(*Member)
	Close  func(*Member)
	Leads  func(*Member) bool
}

// Voters starts n voters (Add, n times).
// It returns once the first leads; the members stop when the test ends.
func Voters(t testing.TB, n int, o Options) *Group {
	t.Helper()
	g := &Group{t: t, open: o.Open, close: o.Close, leads: o.Leads}
	t.Cleanup(func() {
		for _, m := range g.Members {
			m.Kill()
		}
	})
	g.opts = o
	for range n {
		g.Add()
	}
	return g
}

// Add starts one more voter: the first bootstraps, each later one joins
// through the leader with a granted token. It returns once the member runs
// (the first: once it leads).
func (g *Group) Add() *Member {
	t, o := g.t, g.opts
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	i := len(g.Members)
	tk := softhsm.NewToken(t)
	hcfg := tk.Config()
	hcfg.Sessions, hcfg.Logger = 8, discard()
	keys, err := hsm.Open(ctx, hcfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { keys.Close() })
	cfg := o.Config
	cfg.Handlers = append([]cluster.Handler(nil), o.Config.Handlers...)
	cfg.Hooks = append([]cluster.Hook(nil), o.Config.Hooks...)
	cfg.DataDir, cfg.BindAddr, cfg.KeyVault = t.TempDir(), "127.0.0.1:0", cluster.NewHSMVault(keys)
	if cfg.RequestTimeout == 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	fast(&cfg)
	if o.Tweak != nil {
		o.Tweak(i, &cfg)
	}
	if i == 0 {
		cfg.Bootstrap = true
	} else {
		via := g.Leader().Cluster
		cfg.Join = &cluster.Join{Addr: via.Addr(), Token: JoinToken(t, via, cfg, cluster.Voter)}
	}
	m := &Member{Token: tk, Keys: keys, Config: cfg, Index: i, g: g}
	g.Members = append(g.Members, m)
	m.Open(ctx)
	if i == 0 {
		if err := m.Cluster.Barrier(ctx); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// Open starts the member's cluster from its data directory (the first time,
// with its bootstrap or join) and runs the Group's Open.
func (m *Member) Open(ctx context.Context) {
	t := m.g.t
	t.Helper()
	c, err := cluster.Open(ctx, m.Config)
	if err != nil {
		t.Fatalf("open member %d: %v", m.Index, err)
	}
	m.Cluster = c
	m.Config.BindAddr, m.Config.AdvertiseAddr = c.Addr(), c.Addr()
	m.Config.Bootstrap, m.Config.Join = false, nil
	if m.g.open != nil {
		m.g.open(m)
	}
}

// Kill stops the member without leaving the cluster, as a crash would (its
// files closed): the cluster shuts down under the services running on it,
// then the Group's Close stops them.
func (m *Member) Kill() {
	if m.Cluster == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = m.Cluster.Shutdown(ctx)
	if m.g.close != nil {
		m.g.close(m)
	}
	m.Cluster = nil
}

// Running is the members whose cluster runs.
func (g *Group) Running() []*Member {
	var out []*Member
	for _, m := range g.Members {
		if m.Cluster != nil {
			out = append(out, m)
		}
	}
	return out
}

// Leader waits until every running member names the same leader, and that
// leader says it leads (and meets Options.Leads), and returns it.
func (g *Group) Leader() *Member {
	g.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if l := g.agreed(); l != nil {
			return l
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.t.Fatal("clustertest: the members agree on no leader")
	return nil
}

func (g *Group) agreed() *Member {
	var id string
	for _, m := range g.Running() {
		l, _ := m.Cluster.Leader()
		if l == "" || (id != "" && l != id) {
			return nil
		}
		id = l
	}
	for _, m := range g.Running() {
		if m.Cluster.ID() != id {
			continue
		}
		if st, err := m.Cluster.Status(); err == nil && st.State == "Leader" && (g.leads == nil || g.leads(m)) {
			return m
		}
	}
	return nil
}

// Follower is a running member other than the leader.
func (g *Group) Follower() *Member {
	g.t.Helper()
	l := g.Leader()
	for _, m := range g.Running() {
		if m != l {
			return m
		}
	}
	g.t.Fatal("clustertest: no follower runs")
	return nil
}
