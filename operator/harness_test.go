package operator

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"regexp"
	"sync"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/inkan-pki/inkan/cluster"
	"github.com/inkan-pki/inkan/cluster/clustertest"
	"github.com/inkan-pki/inkan/internal/testenv"
)

// harness is a one-node cluster (real Raft, real bbolt, its own SoftHSM token)
// with the package's handlers, a Service, and a record of every applied command
// of the package as the audit log would describe it.
type harness struct {
	t     *testing.T
	node  *clustertest.Node
	vault cluster.KeyVault
	svc   *Service

	mu     sync.Mutex
	events []cluster.Event
}

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	node := clustertest.Single(t, cluster.Config{Handlers: Handlers(), ReplicatedKeys: []string{keyName}})
	h := &harness{t: t, node: node, vault: cluster.NewHSMVault(node.Token.HSM)}
	sub := node.Subscribe(4096, commands()...)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range sub.C {
			h.mu.Lock()
			h.events = append(h.events, ev)
			h.mu.Unlock()
		}
	}()
	t.Cleanup(func() { sub.Close(); <-done })
	h.start(cfg)
	return h
}

// start starts a Service on the harness's node (replacing none: Close the last
// one first).
func (h *harness) start(cfg Config) {
	h.t.Helper()
	cfg.Cluster = h.node.Cluster
	cfg.Vault = h.vault
	if cfg.Sweep == 0 {
		cfg.Sweep = 50 * time.Millisecond
	}
	cfg.Logger = testenv.Logger()
	svc, err := New(cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.svc = svc
	h.t.Cleanup(svc.Close)
}

// person is an operator as the tests see them: the key they hold and the
// record the cluster keeps.
type person struct {
	key  crypto.Signer
	op   Operator
	cert *x509.Certificate
}

func newKey(t *testing.T) crypto.Signer {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func csrFor(t *testing.T, key crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (h *harness) person(op Operator, key crypto.Signer) *person {
	h.t.Helper()
	c, err := x509.ParseCertificate(op.Certificate)
	if err != nil {
		h.t.Fatal(err)
	}
	return &person{key: key, op: op, cert: c}
}

// chain is what the person's TLS client shows.
func (p *person) chain() []*x509.Certificate { return []*x509.Certificate{p.cert} }

type contextT = context.Context

func (h *harness) bootstrap(name string) *person {
	h.t.Helper()
	key := newKey(h.t)
	op, err := h.svc.Bootstrap(testenv.Context(h.t, 20*time.Second), name, csrFor(h.t, key), 0)
	if err != nil {
		h.t.Fatalf("bootstrap: %v", err)
	}
	return h.person(op, key)
}

// add adds an operator directly (the initial ceremony).
func (h *harness) add(by *person, name string, role Role, validity time.Duration) *person {
	h.t.Helper()
	key := newKey(h.t)
	op, err := h.svc.Add(testenv.Context(h.t, 20*time.Second), by.op, Change{Op: OpAdd, Name: name, Role: role, CSR: csrFor(h.t, key), Validity: validity})
	if err != nil {
		h.t.Fatalf("add %s: %v", name, err)
	}
	return h.person(op, key)
}

func (h *harness) verify(chain []*x509.Certificate, now time.Time) (Operator, error) {
	var op Operator
	err := h.node.View(func(tx *bbolt.Tx) error {
		var err error
		op, err = Verify(tx, chain, now)
		return err
	})
	return op, err
}

func (h *harness) request(id string) Request {
	h.t.Helper()
	var q Request
	if err := h.node.View(func(tx *bbolt.Tx) error { var err error; q, err = LookupRequest(tx, id); return err }); err != nil {
		h.t.Fatal(err)
	}
	return q
}

// waitState waits until request id is in state want.
func (h *harness) waitState(id string, want State) Request {
	h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		q := h.request(id)
		if q.State == want {
			return q
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("request %s is %s, want %s (error %q)", id, q.State, want, q.Error)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// decide signs and submits a decision by p.
func (h *harness) decide(p *person, q Request, d Decision) (Request, error) {
	h.t.Helper()
	sig, err := SignApproval(p.key, q.ID, q.Digest, d)
	if err != nil {
		h.t.Fatal(err)
	}
	return h.svc.Decide(testenv.Context(h.t, 20*time.Second), q.ID, p.op, d, sig)
}

// approved proposes an operator.manage request of body by proposer, and has
// each of by approve it.
func (h *harness) approved(proposer *person, body []byte, by ...*person) Request {
	h.t.Helper()
	q, err := h.svc.Propose(testenv.Context(h.t, 20*time.Second), proposer.op, actionOperatorManage, body)
	if err != nil {
		h.t.Fatal(err)
	}
	for _, p := range by {
		if _, err := h.decide(p, q, Approve); err != nil {
			h.t.Fatal(err)
		}
	}
	return q
}

// submit submits a command of the package straight to the cluster (a
// stand-in for a node that did so and then died).
func (h *harness) submit(typ string, body any) error {
	h.t.Helper()
	cmd, err := cluster.NewCommand(typ, commandVersion(typ), body)
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = h.node.Submit(testenv.Context(h.t, 20*time.Second), cmd)
	return err
}

var leafType = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)
var actorForm = regexp.MustCompile(`^(system|sha256:[0-9a-f]{64})$`)

// described returns what the audit log recorded so far of the commands about
// request id (by their Data's "request"), or of every command if id is empty,
// and checks each description's form.
func (h *harness) described(id string) []description {
	h.t.Helper()
	h.mu.Lock()
	evs := append([]cluster.Event(nil), h.events...)
	h.mu.Unlock()
	var out []description
	for _, ev := range evs {
		if ev.Resync {
			h.t.Fatal("subscriber missed events")
		}
		ds, err := describeCommand(ev.Entry, ev.Result)
		if err != nil {
			h.t.Fatalf("describe %s: %v", ev.Entry.Command.Type, err)
		}
		for _, d := range ds {
			if !leafType.MatchString(d.Type) || !actorForm.MatchString(d.Actor) {
				h.t.Fatalf("description %+v: bad type or actor", d)
			}
			for k, v := range d.Data {
				switch v.(type) {
				case string, []byte, int, int64:
				default:
					h.t.Fatalf("description %s: data %s is a %T", d.Type, k, v)
				}
			}
			if id == "" || d.Data["request"] == id {
				out = append(out, d)
			}
		}
	}
	return out
}

// waitDescribed waits until the descriptions of request id number at least n.
func (h *harness) waitDescribed(id string, n int) []description {
	h.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ds := h.described(id)
		if len(ds) >= n || time.Now().After(deadline) {
			return ds
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func types(ds []description) []string {
	out := make([]string, len(ds))
	for i, d := range ds {
		out[i] = d.Type
	}
	return out
}

func mustRefuse(t *testing.T, what string, err, want error) {
	t.Helper()
	if !errors.Is(err, want) {
		t.Fatalf("%s: got %v, want %v", what, err, want)
	}
}

// settled sweeps the requests twice, as the leading Service s does on its
// ticks and on each decision, and waits until whatever those sweeps started
// has ended: a run count read afterwards is final, without a sleep standing
// in for "nothing more happens". s must lead.
func settled(t *testing.T, s *Service) {
	t.Helper()
	ctx := testenv.Context(t, 20*time.Second)
	for range 2 {
		s.sweepOnce(ctx)
	}
	for {
		s.mu.Lock()
		idle := len(s.running) == 0
		s.mu.Unlock()
		if idle {
			return
		}
		if ctx.Err() != nil {
			t.Fatal("a run the sweeps started did not end within 20s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
